"""Pipelines: what a command does, as library functions the CLI calls (and users can call alike).

``train`` (a tracked, resumable training run: ``train_run``; ``train_finish`` saves and logs it;
``train_ray`` trains on Ray workers), ``score`` (``score_folder`` / ``score_files``, streamed through the
per-batch core ``score_batch``; ``score_ray`` runs that core in Ray actors; ``score_resume`` is a score
run's resumable state), ``evaluate`` (metrics and report on an MVTec-layout folder) and ``calibrate``
(new thresholds for a trained model).

The floor above the detector, deployment and tracking; only the CLI sits above it.
"""
