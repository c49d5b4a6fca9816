"""What scoring writes: ``scores.csv`` (``scores_csv``), overlays (``overlays``), ordered background writes
(``writers``), the resumable state of a scoring run (``score_run``) and the folder pipeline (``folder``)."""
