"""How well does the label-free self-check rank configurations? Spearman correlation against real labels.

    python benchmarks/rank_check.py [--results benchmarks/results/quality.jsonl] [--since 2026-11-27]

Reads the lines ``benchmarks/quality.py ... --variants`` appended (one per trained config and scoring
variant, each with its self-check) and prints, per data set, the Spearman rank correlation between each
self-check figure and the same figure measured on the labelled test split, plus the correlation of
the self-check objective (mean of the three) with the mean of the three real figures. A markdown table
is printed for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

PAIRS = [("image_auroc", "image_auroc"), ("pixel_auroc", "pixel_auroc"), ("aupro", "pixel_aupro")]


def main() -> None:
    """Command line."""
    from scipy.stats import spearmanr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "quality.jsonl")
    ap.add_argument("--since", default="", help="only lines dated from this ISO date on")
    a = ap.parse_args()
    rows: dict[str, list[dict]] = defaultdict(list)
    for text in a.results.read_text(encoding="utf-8").splitlines():
        line = json.loads(text)
        if line.get("self_check") and line.get("date", "") >= a.since and line.get("pixel_aupro") is not None:
            rows[line["dataset"]].append(line)
    print("| data set | configurations | image AUROC | pixel AUROC | AUPRO | objective (mean of 3) |")
    print("|---|---|---|---|---|---|")
    for dataset, lines in sorted(rows.items()):
        cells = []
        for est, real in PAIRS:
            rho = spearmanr([ln["self_check"][est] for ln in lines], [ln[real] for ln in lines]).statistic
            cells.append(f"{rho:.2f}")
        est = [sum(ln["self_check"][e] for e, _ in PAIRS) / 3 for ln in lines]
        real = [sum(ln[r] for _, r in PAIRS) / 3 for ln in lines]
        cells.append(f"{spearmanr(est, real).statistic:.2f}")
        print(f"| {dataset} | {len(lines)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
