"""Choose ``scoring.border_margin`` without test labels (issue 28: border artefacts of the heatmaps).

The margin is mirrored around the image before a fully convolutional autoencoder (``Detector.border_margin``);
``--map-margin`` also mirrors it around the learned map's U-Net input (measured worse; not shipped).

    python benchmarks/border_margin.py RUN_DIR [RUN_DIR ...] [--margins 0 4 8 16]

For each trained model directory and each margin, on the held-out good images the model was validated
on (the seeded split of its training folder, ``training.good_dir``, recomputed; never a test image):

- the self-check at the model's scoring (synthetic defects, no labels): image AUROC, pixel AUROC, AUPRO;
- how flat the anomaly map of good images is: the mean map in a 4-pixel band along each side over
  its mean in the centre (1.0 = no border effect), and the share of good images whose map peaks in
  that band (its area share is the figure to compare with);
- a uniform mid-grey image: the highest map value in the border band over the highest in the centre.

With ``--evaluate DATASET`` each line also holds the labelled figures of ``evaluate`` on ``DATASET/test``
at that margin (image AUROC, pixel AUROC, AUPRO, and the confusion counts at a threshold recalibrated on
the held-out images): reported once the margin was chosen by the figures above, never used to choose it.

One JSON line per model and margin goes to ``benchmarks/results/border_margin.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.speed import append_result, commit  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "border_margin.jsonl"
BAND = 4  # pixels of the border band


def held_out_good(det, good_dir: Path):  # noqa: ANN001, ANN201
    """The model-size uint8 images of the training split's held-out part (as ``Detector.fit`` drew it)."""
    import numpy as np

    from anomaly_ae.data.images import list_images, read_image, split_holdout

    cfg, pre = det.config_, det.preprocessing_
    paths = list_images(good_dir)
    _, val_idx = split_holdout(len(paths), cfg.data.holdout_fraction, cfg.train.seed)
    return np.stack([pre.resize(pre.convert_channels(read_image(paths[i], pre.channels))) for i in val_idx])


def border_figures(maps) -> dict[str, float]:  # noqa: ANN001
    """Mean map per side band over the centre, and the share of maps peaking in the band."""
    import numpy as np

    n, h, w = maps.shape
    mean = maps.mean(0)
    centre = mean[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean()
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps]
    in_band = np.mean([min(r, c, h - 1 - r, w - 1 - c) < BAND for r, c in peaks])
    return {
        "top": float(mean[:BAND].mean() / centre), "bottom": float(mean[-BAND:].mean() / centre),
        "left": float(mean[:, :BAND].mean() / centre), "right": float(mean[:, -BAND:].mean() / centre),
        "peak_in_band": float(in_band), "band_area": float(1 - (h - 2 * BAND) * (w - 2 * BAND) / (h * w)),
    }


def uniform_ratio(det) -> float:  # noqa: ANN001
    """Highest map value of a uniform grey image in the border band over the highest in the centre."""
    import numpy as np

    h, w = det.preprocessing_.image_size
    m = det.anomaly_maps(np.full((h, w, det.preprocessing_.channels), 128, np.uint8))[0]
    band = np.r_[m[:BAND].ravel(), m[-BAND:].ravel(), m[:, :BAND].ravel(), m[:, -BAND:].ravel()]
    return float(band.max() / m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].max())


def _learned_maps_with_margin(det, margin: int):  # noqa: ANN001, ANN202
    """``det.learned_maps`` with ``margin`` mirrored pixels around the U-Net's input (the variant not shipped)."""
    import numpy as np

    from anomaly_ae.scoring.tiling import pad_margin

    def learned_maps(x, x_hat):  # noqa: ANN001, ANN202
        h, w = x.shape[1:3]
        joined = pad_margin(np.concatenate([x, x_hat], axis=-1), margin, det.scorer_.pad_factor())
        logits = det.scorer_.predict_batched(joined, det.model_.discriminator_net)[:, margin : margin + h,
                                                                             margin : margin + w, 0]
        return 1 / (1 + np.exp(-logits))

    return learned_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--margins", nargs="+", type=int, default=[0, 4, 8, 16])
    parser.add_argument("--good-dir", type=Path, help="training folder (default: training.good_dir of the model)")
    parser.add_argument("--map-margin", action="store_true", help="mirror the margin around the U-Net's input too")
    parser.add_argument("--evaluate", type=Path, help="also report the labelled figures on DATASET/test")
    args = parser.parse_args()
    from anomaly_ae import Detector

    for run in args.runs:
        det = Detector.load(run)
        good_dir = args.good_dir or Path(det.train_info_.get("good_dir") or "")
        if not good_dir.is_dir():
            sys.exit(f"{run}: its training folder is not recorded; pass --good-dir")
        good = held_out_good(det, good_dir)
        for margin in args.margins:
            scoring = det.config_.scoring.model_copy(update={"border_margin": margin})
            det.config_ = det.config_.model_copy(update={"scoring": scoring})
            det.border_margin = lambda margin=margin: margin  # also for a learned-map model, which ships with none
            if args.map_margin:
                det.learned_maps = _learned_maps_with_margin(det, margin)
            check = det.self_check(good)
            maps = det.anomaly_maps(good)
            labelled = None
            if args.evaluate is not None:
                from anomaly_ae import evaluate

                det.calibrate(good)
                m = evaluate(det, args.evaluate).metrics
                labelled = {k: round(m[k], 4) for k in ("image_auroc", "pixel_auroc", "pixel_aupro") if k in m}
                labelled.update({k: m["at_threshold"][k] for k in ("tp", "fp", "tn", "fn")})
            append_result(RESULTS, {
                "run": str(run), "good_dir": str(good_dir), "n_good": len(good), "margin": margin,
                "map_margin": margin if args.map_margin else 0,
                "metric": scoring.metric, "reduction": scoring.reduction,
                "self_check": {k: round(check[k], 4) for k in ("image_auroc", "pixel_auroc", "aupro")},
                "good_border": {k: round(v, 3) for k, v in border_figures(maps).items()},
                "uniform_border_over_centre": round(uniform_ratio(det), 3), "labelled": labelled,
                "commit": commit(),
            }, echo=True)


if __name__ == "__main__":
    main()
