"""Importing TensorFlow (the default Keras backend) without its start-up lines on stderr.

TensorFlow >= 2.17 prints INFO lines (oneDNN, CUDA probing, "All log messages before
absl::InitializeLog()") from C++ while it is imported, before it reads ``TF_CPP_MIN_LOG_LEVEL``
(tensorflow/tensorflow#100442), and an error line when it looks for a GPU that is not there. The
public names of :mod:`anomaly_ae` import it through :func:`import_tensorflow_quietly`, which sends file
descriptor 2 to ``/dev/null`` for the import and that first device probe only:
errors after it show as usual. When ``TF_CPP_MIN_LOG_LEVEL`` is unset it becomes 2 (C++ errors only,
as the command line's 3 is fatal only); set it to 0 or 1 to keep every line, the import's included.

It also drops TensorFlow's Python warning that "N out of the last M calls ... triggered tf.function
retracing": every model a process loads (``Detector.load``, ``score_folder``, ``evaluate`` on a run
folder) traces its own predict function once, which that heuristic counts as retracing of one
function; the command line never showed it (it runs one model per process).
"""

from __future__ import annotations

import logging
import os
import sys


class _ExpectedRetracing(logging.Filter):
    """Drops TensorFlow's frequent-retracing warning (one trace per loaded model is expected); nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines silenced (a no-op once imported or on another backend)."""
    if "tensorflow" in sys.modules or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if int(os.environ["TF_CPP_MIN_LOG_LEVEL"]) < 2:
            return
    except ValueError:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: import as is
        saved = None
    try:
        if saved is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        import tensorflow

        tensorflow.config.list_physical_devices()  # probes CUDA now, while its "failed call to cuInit" is muted
        logging.getLogger("tensorflow").addFilter(_ExpectedRetracing())
    except ImportError:
        pass  # Keras reports a missing backend itself, with its own message
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
