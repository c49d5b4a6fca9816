"""A self-contained HTML evaluation report (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anomaly_ae.data.images import read_image
from anomaly_ae.data.mvtec import mask_name, read_mask
from anomaly_ae.detector import Detector
from anomaly_ae.evaluation.evaluate import Evaluation
from anomaly_ae.fileio import write_bytes_atomic
from anomaly_ae.outputs.overlays import heatmap_overlay


def _png_b64(image_bgr: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:  # pragma: no cover
        raise OSError("PNG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _fig_b64(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _curves(records: list[dict[str, Any]], threshold: float) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.array([r["label"] for r in records], bool)
    s = np.array([r["score"] for r in records])
    figs = []
    if y.any() and (~y).any():
        fpr, tpr, _ = roc_curve(y, s)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="image ROC")
        figs.append(("Image ROC", _fig_b64(fig)))
        p, r, _ = precision_recall_curve(y, s)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(r, p)
        ax.set(xlabel="recall", ylabel="precision", title="image precision-recall", ylim=(0, 1.02))
        figs.append(("Image precision-recall", _fig_b64(fig)))
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(s, bins=40)
    ax.hist(s[~y], bins=bins, alpha=0.6, label="good")
    if y.any():
        ax.hist(s[y], bins=bins, alpha=0.6, label="defect")
    ax.axvline(threshold, color="red", ls="--", label="threshold")
    ax.set(xlabel="image score", ylabel="images", title="scores")
    ax.legend()
    figs.append(("Score histogram", _fig_b64(fig)))
    return figs


def _examples(
    det: Detector, dataset_dir: Path, records: list[dict[str, Any]], n: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    t = det.threshold_
    fn = sorted((r for r in records if r["label"] and r["score"] <= t), key=lambda r: r["score"])[:n]
    fp = sorted((r for r in records if not r["label"] and r["score"] > t), key=lambda r: -r["score"])[:n]
    out = []
    for group in (fn, fp):
        rows = []
        for r in group:
            path = dataset_dir / "test" / r["path"]
            image = read_image(path, det.preprocessing_.channels)
            amap = det.score_images([image])[1][0]
            overlay = heatmap_overlay(image, amap, det.heatmap_range_)
            stem = Path(r["path"])
            mask_path = dataset_dir / "ground_truth" / r["defect"] / mask_name(stem)
            if r["label"] and mask_path.is_file():
                mask = read_mask(mask_path, amap.shape).astype(np.uint8)
                contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(overlay, contours, -1, (255, 255, 255), 1)
            rows.append({**r, "png": _png_b64(overlay)})
        out.append(rows)
    return out[0], out[1]


def _table(metrics: dict[str, Any]) -> str:
    keys = ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro", "pixel_f1_max"]
    head = "".join(f"<th>{k}</th>" for k in keys)
    rows = [("all", metrics)] + list(metrics.get("per_defect", {}).items())
    body = ""
    for name, m in rows:
        cells = "".join(f"<td>{m[k]:.4f}</td>" if isinstance(m.get(k), float) else "<td>–</td>" for k in keys)
        body += f"<tr><th>{html.escape(name)}</th>{cells}</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def write_report(
    path: Path, det: Detector, dataset_dir: Path, ev: Evaluation, n_examples: int = 6, title: str = ""
) -> Path:
    """Write ``report.html`` (one file, images embedded) and return its path."""
    m = ev.metrics
    at = m["at_threshold"]
    figs = _curves(ev.records, det.threshold_)
    fn, fp = _examples(det, dataset_dir, ev.records, n_examples)

    def gallery(rows: list[dict[str, Any]], what: str) -> str:
        if not rows:
            return f"<p>No {what} at the calibrated threshold.</p>"
        return "".join(
            f'<figure><img src="data:image/png;base64,{r["png"]}" alt="{html.escape(r["path"])}">'
            f"<figcaption>{html.escape(r['path'])}<br>score {r['score']:.4g}</figcaption></figure>"
            for r in rows
        )

    confusion = (
        "<table><tr><th></th><th>predicted good</th><th>predicted anomalous</th></tr>"
        f"<tr><th>good</th><td>{at['tn']}</td><td>{at['fp']}</td></tr>"
        f"<tr><th>anomalous</th><td>{at['fn']}</td><td>{at['tp']}</td></tr></table>"
    )
    failures = "".join(f"<li>{html.escape(f['path'])}: {html.escape(f['error'])}</li>" for f in ev.failures)
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>anomaly-ae evaluation {html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} figure{{display:inline-block;margin:4px}}
figure img{{width:280px;image-rendering:pixelated}} .figs img{{max-width:420px}}</style></head><body>
<h1>anomaly-ae evaluation {html.escape(title)}</h1>
<p>Dataset <code>{html.escape(str(dataset_dir))}</code>: {m['counts']['good']} good and
{m['counts']['anomalous']} anomalous test images ({m['counts']['with_masks']} with masks,
{m['counts']['regions']} defect regions); {m['counts']['failed']} unreadable.</p>
<h2>Metrics</h2>{_table(m)}
<p>AUPRO is integrated to FPR {m.get('pixel_aupro_max_fpr', 0.3)} and normalised.
Pixel AUROC binning error ≤ {m.get('pixel_auroc_bin_error', 0):.2g}.</p>
<h2>At the calibrated threshold ({det.threshold_:.6g}, method {det.config.threshold.method})</h2>
{confusion}
<p>False-positive rate here {at['fpr'] if at['fpr'] is None else f"{at['fpr']:.3f}"};
expected on new good images (calibration) {at['expected_fpr']:.3f};
true-positive rate {at['tpr'] if at['tpr'] is None else f"{at['tpr']:.3f}"}.</p>
<h2>Curves</h2><div class="figs">{"".join(f'<img src="data:image/png;base64,{b}" alt="{t}">' for t, b in figs)}</div>
<h2>Worst false negatives (defects scored lowest)</h2>{gallery(fn, "false negatives")}
<h2>Worst false positives (good images scored highest)</h2>{gallery(fp, "false positives")}
{"<h2>Unreadable files</h2><ul>" + failures + "</ul>" if failures else ""}
</body></html>
"""
    write_bytes_atomic(path, doc.encode("utf-8"))
    return path
