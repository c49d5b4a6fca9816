"""A self-contained HTML evaluation report (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anomaly_ae.config import scoring_text
from anomaly_ae.evaluation.result import EvaluationResult, Example
from anomaly_ae.io.files import write_bytes_atomic

#: metric key -> (plain name, what it means in one line); ``{max_fpr}`` is filled in
METRICS = {
    "image_auroc": ("Image AUROC", "the chance that a defective image scores higher than a good one (1: every "
                    "defect ranked above every good image; 0.5: chance)"),
    "image_ap": ("Image average precision", "precision averaged over all recall levels when the images are ranked "
                 "by score (1: perfect)"),
    "image_f1_max": ("Best image F1", "F1 of the image verdicts at the best threshold for this data, found with "
                     "its labels: what the calibrated threshold could reach at most"),
    "pixel_auroc": ("Pixel AUROC", "the chance that a defect pixel has a higher map value than a good pixel"),
    "pixel_aupro": ("AUPRO", "the share of each defect region the map marks, averaged over pixel false-alarm rates "
                    "up to {max_fpr} and normalized (1: perfect); a small defect counts as much as a large one"),
    "pixel_f1_max": ("Best pixel F1", "F1 of the defect pixels at the best map threshold for this data, found with "
                     "its labels"),
}


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


HISTOGRAM_NOTE = (
    "Score histogram: the bars are see-through, so where good and defect images share a score range their "
    "colours mix (brown). The dashed red line is the calibrated threshold: good images to its right are false "
    "alarms, defect images on or left of it are missed."
)


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


def _gallery(examples: list[Example], ev: EvaluationResult, what: str) -> str:
    """One row per worst case: original | heatmap with its legend | predicted mask | true mask, with the
    file, its defect type, its score and the threshold."""
    if not examples:
        return f"<p>No {what} at the calibrated threshold.</p>"
    pixel = ev.metrics["at_threshold"].get("pixel_threshold")
    rows = []
    for e in examples:
        r = e.record
        verdict = "anomalous" if r["anomalous"] else "good"  # the post-processor's verdict, taken when scored
        captions = {"image": "image", "heatmap": "heatmap (legend below it)",
                    "predicted mask": "predicted defect mask" + (f" (map &gt; {pixel:.4g})" if pixel else ""),
                    "true mask": "true defect mask"}
        figures = "".join(
            f'<figure><img src="data:image/png;base64,{_png_b64(e.panels[k])}" alt="{k}">'
            f"<figcaption>{captions[k]}</figcaption></figure>" for k in captions if k in e.panels)
        if "true mask" not in e.panels:
            figures += ("<figure class=none><figcaption>no true mask ("
                        + ("a good image" if not r["label"] else "none given") + ")</figcaption></figure>")
        rows.append(
            f'<div class="case" data-path="{html.escape(r["path"])}"><p><code>{html.escape(r["path"])}</code>, '
            f"{html.escape(str(r['defect']))}: image score {r['score']:.4g} vs threshold {ev.threshold:.4g} "
            f"({verdict})</p>{figures}</div>")
    return "".join(rows)


def _table(metrics: dict[str, Any]) -> str:
    """The metrics with plain names (``title``: the key in metrics.json), overall and per defect type, and what
    each means."""
    keys = [k for k in METRICS if any(isinstance(m.get(k), float) for m in
                                      [metrics, *metrics.get("per_defect", {}).values()])]
    head = "".join(f'<th title="{k}">{METRICS[k][0]}</th>' for k in keys)
    rows = [("all defect types", metrics)] + list(metrics.get("per_defect", {}).items())
    body = ""
    for name, m in rows:
        cells = "".join(f"<td>{m[k]:.4f}</td>" if isinstance(m.get(k), float) else "<td>–</td>" for k in keys)
        body += f"<tr><th>{html.escape(name)}</th>{cells}</tr>"
    max_fpr = metrics.get("pixel_aupro_max_fpr", 0.3)
    meanings = "".join(f"<li><b>{METRICS[k][0]}</b> (<code>{k}</code>): {METRICS[k][1].format(max_fpr=max_fpr)}</li>"
                       for k in keys)
    return f'<table class="metrics"><tr><th></th>{head}</tr>{body}</table><ul class="meanings">{meanings}</ul>'


def _per_defect_counts(metrics: dict[str, Any]) -> str:
    """Images, flagged and missed per defect type at the calibrated threshold, and the good images' false
    alarms (the figures of ``metrics.json``: ``per_defect.NAME.at_threshold`` and ``counts``)."""
    rows = []
    for name, m in metrics.get("per_defect", {}).items():
        at, n = m["at_threshold"], m["counts"]["anomalous"]
        share = f"{at['fn'] / n:.0%}" if n else "–"
        rows.append(f'<tr data-defect="{html.escape(name)}"><th>{html.escape(name)}</th><td data-key="images">{n}</td>'
                    f'<td data-key="flagged">{at["tp"]}</td><td data-key="missed">{at["fn"]}</td><td>{share}</td></tr>')
    at, good = metrics["at_threshold"], metrics["counts"]["good"]
    alarms = f"{at['fp'] / good:.0%} false alarms" if good else "no good test images"
    rows.append(f'<tr data-defect="good"><th>good images</th><td data-key="images">{good}</td>'
                f'<td data-key="flagged">{at["fp"]}</td><td data-key="missed">–</td>'
                f"<td>{alarms}</td></tr>")
    return ('<table id="per-defect"><tr><th>defect type</th><th>images</th><th>flagged</th><th>missed</th>'
            f"<th>missed share</th></tr>{''.join(rows)}</table>")


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
        f"{html.escape(scoring_text(c))} ({how}){_interval(c)}. It is an estimate made without labels: real "
        "defects may be harder or easier to find than pasted ones, and new good images can differ from the "
        "held-out ones.</p>"
    )


def _interval(check: dict) -> str:
    """``"; 95% interval of the image AUROC 0.948-0.994"`` when the self-check has one (version 3)."""
    iv = check.get("image_auroc_interval")
    return f"; 95% interval of its image AUROC {iv[0]:.3f}-{iv[1]:.3f}" if iv else ""


def write_report(path: Path, ev: EvaluationResult, dataset_dir: Path, title: str = "") -> Path:
    """Write ``report.html`` (one file, images embedded) and return its path.

    Everything comes from ``ev``, the worst cases' overlays included: nothing is scored again.
    """
    m = ev.metrics
    at = m["at_threshold"]
    figs = _curves(ev)
    upper = at.get("fpr_upper")
    expected = (f"expected on new good images {at['expected_fpr']:.1%}"
                + (f", at most {upper:.1%} (95% bound)" if upper is not None else "")
                + (f", from {at['calibration_images']} calibration images" if "calibration_images" in at else ""))
    rule = f"<p>Threshold rule: {html.escape(at['threshold_rule'])}.</p>" if at.get("threshold_rule") else ""
    caveats = "".join(f'<p class="caveat">Caution: {html.escape(c)}.</p>' for c in ev.caveats)

    confusion = (
        "<table><tr><th></th><th>predicted good</th><th>predicted anomalous</th></tr>"
        f"<tr><th>good</th><td>{at['tn']}</td><td>{at['fp']}</td></tr>"
        f"<tr><th>anomalous</th><td>{at['fn']}</td><td>{at['tp']}</td></tr></table>"
    )
    failures = "".join(f"<li>{html.escape(f['path'])}: {html.escape(f['error'])}</li>" for f in ev.failures)
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>anomaly-ae evaluation {html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1480px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td.l{{text-align:left}}
.header th{{text-align:left;background:#f4f4f4}} figure{{display:inline-block;margin:4px;vertical-align:top}}
figure img{{max-width:280px;image-rendering:pixelated}} .case figure img{{width:340px;max-width:none}}
.figs img{{max-width:420px}} .case{{margin:1em 0}}
figure.none{{width:200px}} .caveat{{color:#a40}} .meanings{{font-size:90%}}</style></head><body>
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
{rule}{caveats}
{confusion}
<p>False-alarm rate on these good images: {"no good test images" if at['fpr'] is None else f"{at['fpr']:.1%}"}
({expected}); share of defective images flagged:
{"no defective test images" if at['tpr'] is None else f"{at['tpr']:.1%}"}.</p>
<h3>Per defect type</h3>{_per_defect_counts(m)}
<h2>Curves</h2><div class="figs">{"".join(f'<img src="data:image/png;base64,{b}" alt="{t}">' for t, b in figs)}</div>
<p>{HISTOGRAM_NOTE}</p>
<h2>Worst misses (defective images scored lowest)</h2>{_gallery(ev.false_negatives, ev, "misses")}
<h2>Worst false alarms (good images scored highest)</h2>{_gallery(ev.false_positives, ev, "false alarms")}
{"<h2>Unreadable files</h2><ul>" + failures + "</ul>" if failures else ""}
</body></html>
"""
    write_bytes_atomic(path, doc.encode("utf-8"))
    return path
