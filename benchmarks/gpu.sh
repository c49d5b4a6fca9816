#!/usr/bin/env bash
# The GPU figures of issue 17 in one command: benchmarks/speed.py --device under KERAS_BACKEND=jax with
# configs/vgg.yaml (VGG autoencoder, 256 px RGB, batch 64): training img/s in float32 and bf16 (plain
# Keras fit vs ours) and scoring img/s (plain predict vs `anomaly-ae score` end to end, uint8 input
# scaled on the device), and the training patches/s of the repair preset (issue 26's default); then the DRAEM recipe
# (configs/draem_gpu.yaml, issue 27) trained on sample_data for DRAEM_EPOCHS epochs (default 60, its
# milestones scaled to them) and evaluated: one line in FILE.draem.jsonl; then the default (the pretrained-feature
# model, issue 36) trained and evaluated on sample_data: one line in FILE.default.jsonl. No network; about 10
# minutes on one H100.
#
#   benchmarks/gpu.sh --out benchmarks/results/gpu.json           # on the GPU machine
#   benchmarks/gpu.sh --out /tmp/gpu.json --tiny                   # anywhere: the same steps at toy sizes
#
# Python packages the GPU machine lacks travel as wheels in .whl/ (benchmarks/README.md, "GPU run");
# they are installed into /tmp/site when this Python lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
out="" tiny=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --tiny) tiny=1; shift ;;
    *) echo "usage: benchmarks/gpu.sh --out FILE.json [--tiny]" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "usage: benchmarks/gpu.sh --out FILE.json [--tiny]" >&2; exit 2; }
PY="${PYTHON:-python3}"
if ! "$PY" -c "import keras, pydantic, albumentations" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="/tmp/site/bin:$PATH"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export KERAS_BACKEND=jax NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
# JAX takes the GPU's memory as it needs it, so that the scoring processes started by speed.py fit beside it
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ "$tiny" = 1 ]; then
  sizes=(--image-size 32 --n-train 32 --epochs 2 --n-small 8 --n-large 1600 --batch-size 8 --repair-patches 1
         --override "model.widths=[8, 16]" --override model.convs_per_block=1 --override model.latent_channels=4)
else
  sizes=(--n-train 4096 --epochs 4 --n-small 1024 --n-large 8192)
fi
"$PY" benchmarks/speed.py --device --config configs/vgg.yaml "${sizes[@]}" --out "$out"
if [ "$tiny" = 1 ]; then
  draem=(--epochs 1 --override "data.image_size=[32, 32]" --override "model.widths=[8, 16]"
         --override "model.discriminator=[8, 16]" --override model.latent_channels=4 --override train.batch_size=8)
  data="$(mktemp -d)"
  "$PY" -m anomaly_ae.data.synthetic "$data" --n-train 16 --n-test-good 4 --n-test-defect 2 --size 32 >/dev/null
  data="$data/metal_plate"
else
  draem=(--epochs "${DRAEM_EPOCHS:-60}")
  data=sample_data/metal_plate
fi
"$PY" benchmarks/quality.py "$data" --config configs/draem_gpu.yaml "${draem[@]}" --out "$(mktemp -d)/draem_gpu" \
  --results "${out%.json}.draem.jsonl"
if [ "$tiny" = 1 ]; then
  default=(--epochs 1 --override "data.image_size=[32, 32]" --override "model.widths=[16]" --override train.batch_size=8)
else
  default=()
fi
"$PY" benchmarks/quality.py "$data" --config configs/default.yaml "${default[@]}" --out "$(mktemp -d)/default" \
  --results "${out%.json}.default.jsonl"
