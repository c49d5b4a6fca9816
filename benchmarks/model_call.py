"""How to call the model on CPU: ``predict`` vs ``predict_on_batch`` vs ``tf.function`` (with and without XLA),
and the same model exported to ONNX under onnxruntime (when the ``onnx`` extra is installed).

    python benchmarks/model_call.py RUN_DIR [--n 320] [--batch-size 32] [--intra N --inter N]

Loads the model directory ``RUN_DIR`` (e.g. the ``run`` folder ``speed.py --keep DIR`` leaves), feeds
``--n`` random images at its input size and prints ms per image for each way of calling it (best
of 3 passes, after a warm-up). ``--intra`` / ``--inter`` set TensorFlow's thread pools first. Run it
under the TensorFlow backend (XLA rows need TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def best_ms_per_image(call, x, batch_size: int) -> float:  # noqa: ANN001
    """Best of 3 passes over ``x`` in batches, after one warm-up batch."""
    call(x[:batch_size])
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(0, len(x), batch_size):
            call(x[i : i + batch_size])
        best = min(best, time.perf_counter() - t0)
    return round(1000 * best / len(x), 3)


def onnx_call(model, folder: str):  # noqa: ANN001, ANN201
    """``model`` exported with Keras's ``model.export(format="onnx")`` into ``folder``, as a function of a batch
    run by onnxruntime's CPU provider; ``None`` without onnxruntime / tf2onnx."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import warnings

    path = os.path.join(folder, "model.onnx")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # tf2onnx's np.object probe
        model.export(path, format="onnx", verbose=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda b: session.run(None, {name: b})[0]


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--intra", type=int, default=None)
    ap.add_argument("--inter", type=int, default=None)
    a = ap.parse_args()
    import tensorflow as tf

    if a.intra is not None:
        tf.config.threading.set_intra_op_parallelism_threads(a.intra)
    if a.inter is not None:
        tf.config.threading.set_inter_op_parallelism_threads(a.inter)
    import numpy as np

    from anomaly_ae.detector import Detector

    det = Detector.load(a.run_dir)
    model, bs = det.model_, a.batch_size
    h, w = det.preprocessing_.image_size
    x = np.random.default_rng(0).random((a.n, h, w, det.preprocessing_.channels), dtype=np.float32)
    graph = tf.function(lambda b: model(b, training=False))
    xla = tf.function(lambda b: model(b, training=False), jit_compile=True)
    rows = {
        "predict": best_ms_per_image(lambda b: model.predict(b, batch_size=bs, verbose=0), x, len(x)),
        "predict_on_batch": best_ms_per_image(model.predict_on_batch, x, bs),
        "tf.function": best_ms_per_image(lambda b: graph(b).numpy(), x, bs),
        "tf.function jit_compile": best_ms_per_image(lambda b: xla(b).numpy(), x, bs),
    }
    with tempfile.TemporaryDirectory(prefix="model-call-") as tmp:  # onnxruntime holds the graph in memory
        onnx = onnx_call(model, tmp)
    if onnx is not None:
        rows["onnxruntime"] = best_ms_per_image(onnx, x, bs)
    print(json.dumps({"ms_per_image": rows, "intra": a.intra, "inter": a.inter, "batch_size": bs,
                      "oneDNN": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")}))


if __name__ == "__main__":
    main()
