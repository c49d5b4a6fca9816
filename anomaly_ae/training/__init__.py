"""Stage 3, training: the fit loop (``loop``), a tracked training run with resume (``run``), per-epoch
checkpoints (``checkpoint``), callbacks and seeding."""
