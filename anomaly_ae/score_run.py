"""The state of a scoring output folder, so that an interrupted ``anomaly-ae score`` resumes.

``OUT_DIR/score_run.json`` names the model (a SHA-256 of its ``model.keras`` and ``detector.json``)
and the input folder. Rerunning the same command keeps every row already in ``scores.csv`` (or in
``scores.csv.partial`` after a crash) that has a score, and scores only the rest; files that failed
are tried again. Another model or another input folder in the same ``OUT_DIR`` is refused, so one
CSV never mixes two models' scores.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from anomaly_ae.artifact import META_FILE, MODEL_FILE, write_json_atomic
from anomaly_ae.report import read_scores

MANIFEST = "score_run.json"
OUTPUT_FOLDERS = ("heatmaps", "masks", "maps")


class OutDirConflict(ValueError):
    """``OUT_DIR`` holds results that this run must not mix with; the message says what to do."""


def model_fingerprint(run_dir: Path) -> str:
    """SHA-256 over the model's weights file and its metadata (thresholds included)."""
    h = hashlib.sha256()
    for name in (MODEL_FILE, META_FILE):
        with open(run_dir / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass
class ScoreRun:
    """What an ``OUT_DIR`` already holds: the rows to keep (scored inputs) and their paths."""

    keep: list[list[str]] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    resumed: bool = False


def start(out: Path, run_dir: Path, input_dir: Path, resume: bool = True, overwrite: bool = False) -> ScoreRun:
    """Prepare ``out`` for scoring ``input_dir`` with ``run_dir``; returns what is already done.

    Raises:
        OutDirConflict: ``out`` holds results of another model or input folder, or results exist
            and neither ``resume`` nor ``overwrite`` is set.
    """
    csvs = [p for p in (out / "scores.csv.partial", out / "scores.csv") if p.is_file()]
    manifest_path = out / MANIFEST
    fingerprint = model_fingerprint(run_dir)
    state = ScoreRun()
    if overwrite:
        for p in [*csvs, manifest_path]:
            p.unlink(missing_ok=True)
        for name in OUTPUT_FOLDERS:
            shutil.rmtree(out / name, ignore_errors=True)
    elif csvs or manifest_path.is_file():
        hint = "use --overwrite to replace them, or another --out"
        if not resume:
            raise OutDirConflict(f"{out} already holds scores; {hint} (or --resume to continue)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise OutDirConflict(f"{out} holds scores.csv without a readable {MANIFEST}; {hint}") from None
        if manifest.get("model_sha256") != fingerprint:
            raise OutDirConflict(
                f"{out} holds scores of another model ({manifest.get('model_dir')}); one scores.csv never "
                f"mixes two models: {hint}"
            )
        if manifest.get("input_dir") != str(input_dir.resolve()):
            raise OutDirConflict(f"{out} holds scores of another input folder ({manifest.get('input_dir')}); {hint}")
        if csvs:
            state.keep = [r for r in read_scores(csvs[0]) if r[1] != "" and r[4] == ""]
            state.done = {r[0] for r in state.keep}
            state.resumed = True
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(manifest_path, {
        "schema_version": 1,
        "model_dir": str(run_dir.resolve()),
        "model_sha256": fingerprint,
        "input_dir": str(input_dir.resolve()),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    return state
