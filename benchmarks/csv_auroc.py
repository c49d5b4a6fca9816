"""Image AUROC of a ``scores.csv`` whose paths start with the MVTec folder (``good/...`` = normal).

Usage: ``python benchmarks/csv_auroc.py runs/demo-scores/scores.csv``
"""

from __future__ import annotations

import csv
import sys

from sklearn.metrics import roc_auc_score


def main(path: str) -> None:
    """Print overall and per-defect AUROC."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["score"]]
    kinds = sorted({r["path"].split("/")[0] for r in rows} - {"good"})
    y = [r["path"].split("/")[0] != "good" for r in rows]
    s = [float(r["score"]) for r in rows]
    print(f"image AUROC on {len(rows)} test images: {roc_auc_score(y, s):.3f}")
    for k in kinds:
        sel = [i for i, r in enumerate(rows) if r["path"].split("/")[0] in ("good", k)]
        print(f"  {k:10s} {roc_auc_score([y[i] for i in sel], [s[i] for i in sel]):.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
