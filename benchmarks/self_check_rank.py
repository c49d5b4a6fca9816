"""Does the self-check rank scorings as real labels do? Self-check version 2 and 3 against real image AUROC.

    python benchmarks/self_check_rank.py runs/bench27-default-bsdata_pitting ../shared/data/bsdata_pitting \
        [--results benchmarks/results/self_check_rank.jsonl]

For one trained model, every combination of map metric (the learned map if the model has one, 1-SSIM,
squared error), smoothing (1 and 4 model pixels), image reduction (max, top-k mean) and per-position
normalization (off, on) is scored three ways on the same images:

- *self-check v3*: the held-out good images (``fit``'s split) against copies with the version-3
  defects of the *report* seed (shapes and content that training never draws);
- *self-check v2*: the same good images against the previous version's defects (the training
  families, small Perlin windows, image and noise content), rebuilt here for the comparison;
- *real*: the labelled test split (image AUROC from model-size maps, as ``Detector.score`` computes it).

One JSON line per combination is appended; the Spearman correlations of each version with the real
figure, over the combinations of this model, are printed. ``--table`` instead prints the markdown table
of ``benchmarks/README.md`` from the results file: per data set, pooled over every model measured, the
Spearman correlation of each version with the real image AUROC and its mean absolute gap.

    python benchmarks/self_check_rank.py --table [--results benchmarks/results/self_check_rank.jsonl]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SIGMAS_MODEL = (1.0, 4.0)
REDUCTIONS = ("max", "topk_mean")


def v2_defects(good):  # noqa: ANN001, ANN201 - benchmark helper
    """The version-2 self-check's defects (training shapes in small windows, image and noise content)."""
    import numpy as np

    from anomaly_ae.data.anomalies import AnomalySynthesizer, synthesize_batch
    from anomaly_ae.evaluation.self_check import COPIES, SELF_CHECK_SEED

    synth = AnomalySynthesizer(shapes={"perlin": 1.0, "scratch": 1.0, "pit": 1.0, "chip": 1.0},
                               sources={"image": 0.7, "noise": 0.3}, seed=SELF_CHECK_SEED, perlin_window=(0.1, 0.3))
    return synthesize_batch(np.concatenate([good] * COPIES), synth, np.random.default_rng(SELF_CHECK_SEED), 1.0)


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, nargs="?")
    ap.add_argument("dataset", type=Path, nargs="?")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "self_check_rank.jsonl")
    ap.add_argument("--table", action="store_true", help="print the pooled table of the results file and stop")
    a = ap.parse_args()
    if a.table:
        table(a.results)
        return
    if a.model is None or a.dataset is None:
        ap.error("MODEL and DATASET are needed (or --table)")

    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from anomaly_ae.data.images import read_image
    from anomaly_ae.data.mvtec import mvtec_items
    from anomaly_ae.detector import Detector
    from anomaly_ae.evaluation.self_check import MAX_GOOD, REPORT_SEED, SELF_CHECK_SEED, synthetic_defects
    from anomaly_ae.scoring.maps import image_score, smooth
    from anomaly_ae.scoring.position import PositionReference

    sys.path.insert(0, str(Path(__file__).parent))
    from rescore import fit_sets  # the held-out and reference images as fit drew them

    det = Detector.load(a.model)
    pre = det.preprocessing_
    val, ref = fit_sets(det, a.dataset / "train" / "good")
    if len(val) > MAX_GOOD:
        val = val[np.sort(np.random.default_rng(SELF_CHECK_SEED).choice(len(val), MAX_GOOD, replace=False))]
    v3, _ = synthetic_defects(val, REPORT_SEED)
    v2, _ = v2_defects(val)
    items = mvtec_items(a.dataset)
    test = np.stack([pre.resize(pre.convert_channels(read_image(it.path, pre.channels))) for it in items])
    labels = np.array([it.label for it in items])
    metrics = (["learned"] if getattr(det.model_, "has_learned_map", False) else []) + ["ssim", "l2"]
    sets = {"good": val, "v3": v3, "v2": v2, "test": test, "ref": ref}
    raw: dict[str, dict[str, np.ndarray]] = {m: {} for m in metrics}
    for name, images in sets.items():
        x = pre(images)
        xh = det.scorer_.reconstruct(x)
        for m in metrics:
            raw[m][name] = det.scorer_.raw_maps(x, xh, m)

    def auc(neg: np.ndarray, pos: np.ndarray) -> float:
        return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))

    lines = []
    for m, sigma, red, norm in itertools.product(metrics, SIGMAS_MODEL, REDUCTIONS, (False, True)):
        maps = {k: smooth(v, sigma) for k, v in raw[m].items()}
        if norm:
            pos = PositionReference.fit(maps["ref"])
            maps = {k: pos.normalize(v) for k, v in maps.items()}
        s = {k: image_score(v, red, det.config_.scoring.topk_fraction) for k, v in maps.items()}
        lines.append({
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "dataset": a.dataset.name,
            "model": a.model.name, "metric": m, "sigma_model_px": sigma, "reduction": red, "position_norm": norm,
            "self_check_v3": auc(s["good"], s["v3"]), "self_check_v2": auc(s["good"], s["v2"]),
            "real_image_auroc": auc(s["test"][~labels], s["test"][labels]),
        })
    real = [ln["real_image_auroc"] for ln in lines]
    for v in ("v2", "v3"):
        est = [ln[f"self_check_{v}"] for ln in lines]
        rho = spearmanr(est, real).statistic
        print(f"{a.model.name}: self-check {v} vs real image AUROC over {len(lines)} scorings: Spearman {rho:.2f}")
    a.results.parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a", encoding="utf-8") as f:
        for ln in lines:
            f.write(json.dumps(ln) + "\n")


def table(results: Path) -> None:
    """Markdown table: per data set, pooled over models, Spearman and mean |self-check - real| of v2 and v3."""
    from collections import defaultdict

    import numpy as np
    from scipy.stats import spearmanr

    rows: dict[str, list[dict]] = defaultdict(list)
    for text in results.read_text(encoding="utf-8").splitlines():
        line = json.loads(text)
        rows[line["dataset"]].append(line)
    print("| data set | models x scorings | Spearman v2 | Spearman v3 | mean abs gap v2 | mean abs gap v3 |")
    print("|---|---|---|---|---|---|")
    for dataset, lines in sorted(rows.items()):
        real = np.array([ln["real_image_auroc"] for ln in lines])
        cells = []
        for stat in ("rho", "gap"):
            for v in ("v2", "v3"):
                est = np.array([ln[f"self_check_{v}"] for ln in lines])
                value = spearmanr(est, real).statistic if stat == "rho" else np.abs(est - real).mean()
                cells.append(f"{value:.2f}" if stat == "rho" else f"{value:.3f}")
        models = len({ln["model"] for ln in lines})
        print(f"| {dataset} | {models} x {len(lines) // models} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
