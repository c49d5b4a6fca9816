"""A self-contained HTML evaluation report (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anomaly_ae.evaluation.result import EvaluationResult, Example
from anomaly_ae.fileio import write_bytes_atomic


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


def _curves(ev: EvaluationResult) -> list[tuple[str, str]]:
    """Image ROC and PR, pixel ROC and PRO (with AUROC / AP / AUPRO in their legends), and the score histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    m = ev.metrics
    y = np.array([r["label"] for r in ev.records], bool)
    s = np.array([r["score"] for r in ev.records])
    figs = []

    def plot(title: str, x: Any, yv: Any, label: str, xlabel: str, ylabel: str, diagonal: bool = False,
             limit: float | None = None) -> None:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(x, yv, label=label)
        if diagonal:
            ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
        if limit is not None:
            ax.axvline(limit, color="grey", ls="--", lw=1, label=f"AUPRO limit (FPR {limit:g})")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower right", fontsize=8)
        figs.append((title, _fig_b64(fig)))

    if y.any() and (~y).any():
        fpr, tpr, _ = roc_curve(y, s)
        plot("image ROC", fpr, tpr, f"AUROC {m['image_auroc']:.4f}", "false-positive rate", "true-positive rate",
             diagonal=True)
        p, r, _ = precision_recall_curve(y, s)
        plot("image precision-recall", r, p, f"AP {m['image_ap']:.4f}", "recall", "precision")
    if "pixel_roc" in ev.curves:
        c = ev.curves["pixel_roc"]
        plot("pixel ROC", c["fpr"], c["tpr"], f"pixel AUROC {m['pixel_auroc']:.4f}", "false-positive rate (pixels)",
             "true-positive rate (pixels)", diagonal=True)
    if "pro" in ev.curves:
        c = ev.curves["pro"]
        limit = m.get("pixel_aupro_max_fpr", 0.3)
        plot("per-region overlap (PRO)", c["fpr"], c["pro"], f"AUPRO {m['pixel_aupro']:.4f}",
             "false-positive rate (pixels)", "mean overlap of defect regions", limit=limit)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(s, bins=40)
    ax.hist(s[~y], bins=bins, alpha=0.6, label="good")
    if y.any():
        ax.hist(s[y], bins=bins, alpha=0.6, label="defect")
    ax.axvline(ev.threshold, color="red", ls="--", label="threshold")
    ax.set(xlabel="image score", ylabel="images", title="scores")
    ax.legend()
    figs.append(("Score histogram", _fig_b64(fig)))
    return figs


def _header(ev: EvaluationResult, dataset_dir: Path) -> str:
    """Which model, run, data, date and configuration this report is for."""
    rows = [("model", str(ev.model_dir) if ev.model_dir else "(not saved)"),
            ("MLflow run", ev.mlflow_run_id or "(not tracked)"),
            ("data set", str(dataset_dir)),
            ("evaluated", ev.evaluated_at.replace("T", " ").replace("+00:00", " UTC") or "–"),
            *ev.config_summary.items()]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class=l><code>{html.escape(v)}</code></td></tr>"
                   for k, v in rows)
    return f'<table class="header">{body}</table>'


def _gallery_rows(examples: list[Example]) -> list[dict[str, Any]]:
    return [{**e.record, "png": _png_b64(e.overlay)} for e in examples]


def _table(metrics: dict[str, Any]) -> str:
    keys = ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro", "pixel_f1_max"]
    head = "".join(f"<th>{k}</th>" for k in keys)
    rows = [("all", metrics)] + list(metrics.get("per_defect", {}).items())
    body = ""
    for name, m in rows:
        cells = "".join(f"<td>{m[k]:.4f}</td>" if isinstance(m.get(k), float) else "<td>–</td>" for k in keys)
        body += f"<tr><th>{html.escape(name)}</th>{cells}</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _self_check(ev: EvaluationResult) -> str:
    """The training-time estimate on synthetic defects beside the measured figures (or a line saying none)."""
    c, m = ev.self_check, ev.metrics
    if not c:
        return "<p>This model has no self-check (trained before anomaly-ae recorded one).</p>"

    def cell(v: Any) -> str:
        return f"<td>{v:.4f}</td>" if isinstance(v, float) else "<td>–</td>"

    rows = [("image AUROC", c.get("image_auroc"), m.get("image_auroc")),
            ("pixel AUROC", c.get("pixel_auroc"), m.get("pixel_auroc")),
            ("pixel AUPRO", c.get("aupro"), m.get("pixel_aupro"))]
    body = "".join(f"<tr><th>{name}</th>{cell(a)}{cell(b)}</tr>" for name, a, b in rows)
    how = "selected by the self-check" if c.get("selected") else "as configured"
    return (
        "<table><tr><th></th><th>self-check (synthetic defects)</th><th>this evaluation (real labels)</th></tr>"
        f"{body}</table><p>Self-check: {c.get('n_good')} held-out good training images and {c.get('n_defective')} "
        f"copies of them with seeded synthetic defects (seed {c.get('seed')}); scoring "
        f"{html.escape(str(c.get('metric')))} map, sigma {c.get('smoothing_sigma')}, "
        f"{html.escape(str(c.get('reduction')))} ({how}). It is an estimate "
        "made without labels: real defects may be harder or easier to find than pasted ones.</p>"
    )


def write_report(path: Path, ev: EvaluationResult, dataset_dir: Path, title: str = "") -> Path:
    """Write ``report.html`` (one file, images embedded) and return its path.

    Everything comes from ``ev``, the worst cases' overlays included: nothing is scored again.
    """
    m = ev.metrics
    at = m["at_threshold"]
    figs = _curves(ev)
    fn, fp = _gallery_rows(ev.false_negatives), _gallery_rows(ev.false_positives)

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
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td.l{{text-align:left}}
.header th{{text-align:left;background:#f4f4f4}} figure{{display:inline-block;margin:4px}}
figure img{{width:280px;image-rendering:pixelated}} .figs img{{max-width:420px}}</style></head><body>
<h1>anomaly-ae evaluation {html.escape(title)}</h1>
{_header(ev, dataset_dir)}
<p>Dataset <code>{html.escape(str(dataset_dir))}</code>: {m['counts']['good']} good and
{m['counts']['anomalous']} anomalous test images ({m['counts']['with_masks']} with masks,
{m['counts']['regions']} defect regions); {m['counts']['failed']} unreadable.</p>
<h2>Metrics</h2>{_table(m)}
<h2>Expected at training vs measured</h2>{_self_check(ev)}
<p>AUPRO is integrated to FPR {m.get('pixel_aupro_max_fpr', 0.3)} and normalized.
Pixel AUROC binning error ≤ {m.get('pixel_auroc_bin_error', 0):.2g}.</p>
<h2>At the calibrated threshold ({ev.threshold:.6g}, method {ev.threshold_method})</h2>
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
