"""Recompute the self-check of trained benchmark models (e.g. after the self-check's defects changed).

    python benchmarks/self_check_rerun.py [--results benchmarks/results/quality.jsonl]
        [--out benchmarks/results/self_check_rerun.jsonl] [--since ISO_DATE]

For the latest run of every (data set, config) in the results, the saved model (``runs/bench-<config
stem>-<data set>``) is loaded, its held-out good images are split off again exactly as ``fit`` did
(same seed and fraction), and the self-check of each line's scoring (the run's own and every
``--variants`` line) is computed with today's code. One line per (data set, config, variant) is
appended to ``--out``; ``rank_check.py --recheck`` reads them. No test label is read.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "quality.jsonl")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "self_check_rerun.jsonl")
    ap.add_argument("--since", default="")
    ap.add_argument("--data", type=Path, nargs="+", default=[Path("../shared/data/bsdata_pitting"),
                                                              Path("sample_data/metal_plate")])
    a = ap.parse_args()

    import numpy as np

    from anomaly_ae.config import ScoringConfig
    from anomaly_ae.data.images import Preprocessing, split_holdout
    from anomaly_ae.data.loading import load_training_set
    from anomaly_ae.detector import Detector

    runs: dict[tuple[str, str], list[dict]] = {}
    for text in a.results.read_text(encoding="utf-8").splitlines():
        line = json.loads(text)
        if not line.get("self_check") or line.get("date", "") < a.since:
            continue
        key = (line["dataset"], line["config"])
        if line.get("variant") is None:
            runs[key] = []
        runs.setdefault(key, []).append(line)
    folders = {p.name: p for p in a.data}
    for (dataset, config), lines in runs.items():
        run_dir = Path("runs") / f"bench-{Path(config).stem}-{dataset}"
        if not run_dir.is_dir() or dataset not in folders:
            print(f"skipped {dataset} {config}: no {run_dir} or data folder")
            continue
        det = Detector.load(run_dir)
        cfg = det.config_
        pre = Preprocessing(det.preprocessing_.image_size, det.preprocessing_.channels)
        data = load_training_set(folders[dataset] / "train" / "good", pre, cfg.data.cache_mb)
        _, val_idx = split_holdout(len(data.images), cfg.data.holdout_fraction, cfg.train.seed)
        good = np.stack([data.at_model_size(i, pre) for i in val_idx])
        with open(a.out, "a", encoding="utf-8") as f:
            for line in lines:
                scoring = ScoringConfig.model_validate(line["resolved_config"]["scoring"])
                det.config_ = cfg.model_copy(update={"scoring": scoring.model_copy(update={"select": "fixed"})})
                check = det.self_check(good)
                out = {"dataset": dataset, "config": config, "variant": line.get("variant"),
                       "run_date": lines[0]["date"], "self_check": check}
                f.write(json.dumps(out) + "\n")
                print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
