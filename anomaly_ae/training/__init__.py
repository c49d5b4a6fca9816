"""Stage 3, training: the autoencoder's training from good images (``fit``: size rule, hold-out split,
data sets, replicas), the loop (``loop``), per-epoch checkpoints (``checkpoint``), callbacks,
distribution strategies and seeding. It never imports the detector; a tracked run is
:mod:`anomaly_ae.pipelines.train`."""
