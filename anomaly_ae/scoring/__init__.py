"""Stage 4, scoring: reconstruction -> residual map -> smoothed anomaly map -> image score.

``maps`` is the NumPy/OpenCV form used when streaming folders; ``ops`` is its ``keras.ops`` twin
traced into exported graphs (parity-tested against ``maps``); ``tiling`` pads and tiles large images.
"""
