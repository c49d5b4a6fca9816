"""Stage 3, training: the fit loop (``loop``), per-epoch checkpoints (``checkpoint``), callbacks and seeding."""
