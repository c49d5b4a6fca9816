"""Stage 4, scoring: reconstruction -> residual map -> smoothed anomaly map -> image score.

``reconstruction`` runs the autoencoder on model-size images (batches, border margin, padding, tiles, the
learned map's discriminator); ``maps`` is the NumPy/OpenCV form of the maps used when streaming folders
(and the smoothing and sigma rules); ``ops`` is its ``keras.ops`` twin traced into exported graphs
(parity-tested against ``maps``); ``tiling`` pads and tiles large images; ``position`` is the
per-position normalization of ``scoring.position_norm``.
"""
