"""How well does the label-free self-check rank configurations? Spearman correlation against real labels.

    python benchmarks/rank_check.py [--results benchmarks/results/quality.jsonl] [--since 2026-11-27]

Reads the lines ``benchmarks/quality.py ... --variants`` appended (one per trained config and scoring
variant, each with its self-check; of a config trained more than once, the latest run) and prints a
table of the runs (real figures beside the self-check) and, per data set, the Spearman rank correlation between each
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
    ap.add_argument("--until", default="9999", help="only lines dated before this ISO date")
    ap.add_argument("--recheck", type=Path, default=None,
                    help="self-check figures recomputed by self_check_rerun.py replace the recorded ones")
    a = ap.parse_args()
    recheck: dict[tuple, dict] = {}
    if a.recheck is not None:
        for text in a.recheck.read_text(encoding="utf-8").splitlines():
            r = json.loads(text)
            recheck[(r["dataset"], r["config"], r["variant"], r["run_date"])] = r["self_check"]
    runs: dict[tuple[str, str], list[dict]] = {}  # (data set, config) -> the lines of its latest run
    for text in a.results.read_text(encoding="utf-8").splitlines():
        line = json.loads(text)
        date = line.get("date", "")
        if not line.get("self_check") or not a.since <= date < a.until or line.get("pixel_aupro") is None:
            continue
        key = (line["dataset"], line["config"])
        if line.get("variant") is None:  # a training run starts with its own line; a rerun replaces it
            runs[key] = []
        runs.setdefault(key, []).append(line)
    rows: dict[str, list[dict]] = defaultdict(list)
    for (dataset, _), lines in runs.items():
        for ln in lines:
            key = (ln["dataset"], ln["config"], ln.get("variant"), lines[0]["date"])
            if a.recheck is not None and key not in recheck:
                continue
            rows[dataset].append({**ln, "self_check": recheck.get(key, ln["self_check"])})
    print("| data set | config (scoring as selected) | real image / pixel AUROC / AUPRO | self-check image / pixel"
          " AUROC / AUPRO | train s |")
    print("|---|---|---|---|---|")
    for dataset, lines in sorted(rows.items()):
        for ln in lines:
            if ln.get("variant") is None:
                c, sc = ln["self_check"], ln["resolved_config"]["scoring"]
                print(f"| {dataset} | {ln['config']} ({sc['metric']}, sigma {sc['smoothing_sigma']:g}, "
                      f"{sc['reduction']}) | {ln['image_auroc']:.3f} / {ln['pixel_auroc']:.3f} / "
                      f"{ln['pixel_aupro']:.3f} | {c['image_auroc']:.3f} / {c['pixel_auroc']:.3f} / "
                      f"{c['aupro']:.3f} | {ln['train_seconds']:.0f} |")
    print()
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
