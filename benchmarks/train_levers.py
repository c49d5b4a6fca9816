"""What each speed lever does to the default preset's train step on this machine (issue 26).

    python benchmarks/train_levers.py [--json] [--variants base bs64 jit ...] [--repeat 3]

Each variant trains the default preset's model (64 px RGB patches, the conv autoencoder and its
learned-map U-Net, MSE + SSIM and focal losses, Adam with clipping) with plain ``model.fit`` on
preloaded random patches and masks, in its own process (the Keras backend and the thread pools are
fixed at start-up): one warm-up epoch, then ``--repeat`` timed epochs of ``--n`` patches; the best
epoch gives ``patches_s``. No data pipeline, no validation: the train step alone.

It also counts the arithmetic: the forward FLOPs per patch of every Conv2D of the autoencoder and of
the U-Net (``2 x kernel x output pixels``), and ``achieved_gflops`` = patches/s x 3 x forward FLOPs
(a training step costs about three forward passes: forward, input gradients, weight gradients). With
``conv_gflops``, the forward rate of one large 3x3 convolution on this machine, it tells whether the
step is bound by arithmetic or by overhead. One JSON line per run is appended to
``benchmarks/results/train_levers.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parent.parent

#: name -> (environment, options): the levers of the issue, each alone
VARIANTS: dict[str, tuple[dict[str, str], dict]] = {
    "base": ({}, {"bs": 16}),
    "bs32": ({}, {"bs": 32}),
    "bs64": ({}, {"bs": 64}),
    "bs128": ({}, {"bs": 128}),
    "jit": ({}, {"bs": 16, "jit": True}),
    "jit_bs64": ({}, {"bs": 64, "jit": True}),
    "bf16": ({}, {"bs": 32, "policy": "mixed_bfloat16"}),
    "threads_1": ({"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}, {"bs": 16}),
    "jax": ({"KERAS_BACKEND": "jax"}, {"bs": 16}),
    "jax_bs64": ({"KERAS_BACKEND": "jax"}, {"bs": 64}),
    "no_learned_map": ({}, {"bs": 16, "no_map": True}),  # the autoencoder alone: what the map's U-Net costs
}


def conv_flops(model, x) -> float:  # noqa: ANN001
    """Forward FLOPs of every Conv2D that ``model(x)`` runs (also inside sub-models), per item of ``x``."""
    import keras

    seen: list[float] = []
    original = keras.layers.Conv2D.call

    def counting(self, inputs, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        y = original(self, inputs, *args, **kwargs)
        k = self.kernel.shape
        seen.append(2.0 * k[0] * k[1] * k[2] * k[3] * y.shape[1] * y.shape[2])
        return y

    keras.layers.Conv2D.call = counting
    try:
        model(x)
    finally:
        keras.layers.Conv2D.call = original
    return sum(seen)


def child(opts: dict) -> dict:
    """The timed variant, in this process."""
    import keras
    import numpy as np

    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.models import build_model

    if opts.get("policy"):
        keras.mixed_precision.set_global_policy(opts["policy"])
    cfg = DetectorConfig.from_preset("default").with_overrides({"data.image_size": [64, 64]})
    if opts.get("no_map"):  # with_overrides skips None values: rebuild the model section without the map
        raw = cfg.with_overrides({"scoring.metric": "l2"}).to_dict()
        cfg = DetectorConfig.model_validate({**raw, "model": {**raw["model"], "discriminator": None}})
    model = build_model(cfg)
    model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate, global_clipnorm=cfg.train.clip_grad_norm),
                  jit_compile=opts.get("jit", False))
    rng = np.random.default_rng(0)
    n, bs = opts["n"], opts["bs"]
    x = rng.random((n, 64, 64, 3), dtype=np.float32)
    y = {"image": x, "mask": (rng.random((n, 64, 64)) > 0.9).astype("float32")} if model.has_learned_map else x
    flops = {"autoencoder": conv_flops(model, x[:1])}
    if model.has_learned_map:
        flops["learned_map"] = conv_flops(model.discriminator_net, np.concatenate([x[:1], x[:1]], axis=-1))
    model.fit(x, y, batch_size=bs, epochs=1, verbose=0)  # builds and compiles
    seconds = []
    for _ in range(opts["repeat"]):
        t = time.perf_counter()
        model.fit(x, y, batch_size=bs, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - t)
    rate = n / min(seconds)
    forward = sum(flops.values())
    return {"patches_s": round(rate, 1), "epoch_seconds": [round(s, 2) for s in seconds],
            "forward_mflops_per_patch": {k: round(v / 1e6, 1) for k, v in flops.items()},
            "achieved_gflops": round(rate * 3 * forward / 1e9, 1), "backend": keras.backend.backend()}


def conv_gflops() -> float:
    """Forward GFLOPS of a 3x3 convolution 64 -> 64 channels on 32 patches of 16x16 (TensorFlow, best of 3)."""
    code = ("import os,time; os.environ['TF_CPP_MIN_LOG_LEVEL']='3'; import tensorflow as tf\n"
            "x=tf.random.normal((32,16,16,64)); w=tf.random.normal((3,3,64,64))\n"
            "f=tf.function(lambda x,w: tf.nn.conv2d(x,w,1,'SAME')); f(x,w).numpy(); best=1e9\n"
            "for _ in range(3):\n t=time.perf_counter(); [f(x,w) for _ in range(50)][-1].numpy()\n"
            " best=min(best,(time.perf_counter()-t)/50)\n"
            "print(2*32*16*16*9*64*64/best/1e9)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--n", type=int, default=1024, help="patches per timed epoch")
    ap.add_argument("--repeat", type=int, default=3, help="timed epochs per variant (the best counts)")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "train_levers.jsonl")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    rows = {}
    for name in a.variants:
        env, opts = VARIANTS[name]
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({**opts, "n": a.n, "repeat": a.repeat})],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            rows[name] = {"error": proc.stderr.strip().splitlines()[-1][-300:]}
        else:
            rows[name] = {**opts, **json.loads(proc.stdout.strip().splitlines()[-1])}
        print(f"{name}: {rows[name].get('patches_s', rows[name].get('error'))}", file=sys.stderr)
    sys.path.insert(0, str(Path(__file__).parent))
    from speed import append_result

    append_result(a.results, {"n": a.n, "repeat": a.repeat, "conv_gflops": conv_gflops(), "variants": rows}, a.json)


if __name__ == "__main__":
    main()
