"""The state of a scoring output folder, so that an interrupted ``anomaly-ae score`` resumes safely.

``OUT_DIR/score_run.json`` names the model (a SHA-256 of its ``model.keras`` and ``detector.json``),
the input folder and the outputs asked for. Rerunning the same command keeps a row of ``scores.csv``
(or of ``scores.csv.partial`` after a crash) only when it can be trusted:

* it is well formed (all columns, a finite score, no error) and its path is not repeated;
* its input still exists (rows of deleted files are dropped) with the same size and modification
  time as when it was scored (a replaced file is scored again);
* every output file asked for in this run exists for it (a run that adds ``--masks`` makes them;
  with ``--heatmaps anomalous`` only anomalous rows need a heatmap).

Everything else is scored (again); the reasons are returned as one-line notes. Files that failed are
tried again. Another model or another input folder in the same ``OUT_DIR`` is refused, so one CSV
never mixes two models' scores. ``--overwrite`` removes only what earlier runs wrote: the CSV, the
state file, ``scores.parquet`` and the heatmap/mask/map files named by the CSV's rows; anything else
in ``OUT_DIR`` (even inside ``heatmaps/``) stays.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from anomaly_ae.data.loading import input_stat
from anomaly_ae.data.uris import UriFile, UriInput
from anomaly_ae.io.files import display_name, output_name, write_json_atomic
from anomaly_ae.io.folders import OutputConflict, check_out_dir, forget, read_manifest, record_outputs
from anomaly_ae.io.names import (
    META_FILE,
    MODEL_FILE,
    SCORE_OUTPUTS,
    SCORE_RUN,
    SCORE_RUN_ENTRIES,
    SCORES_CSV,
    SCORES_PARQUET,
    SCORES_PARTIAL,
)
from anomaly_ae.outputs.scores_csv import CSV_COLUMNS, read_scores

#: suffixes earlier versions wrote (anomaly-ae <= 0.1 heatmaps were PNG): --overwrite removes them too
LEGACY_SUFFIXES: dict[str, tuple[str, ...]] = {"heatmaps": (".png",)}


def model_fingerprint(run_dir: Path) -> str:
    """SHA-256 over the model's weights file and its metadata (thresholds included)."""
    h = hashlib.sha256()
    for name in (MODEL_FILE, META_FILE):
        with open(run_dir / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def relative_key(path: Path | UriFile, input_dir: Path | UriInput) -> str:
    """An input's key in ``scores.csv``: its path relative to ``input_dir``, ``/``-separated, valid UTF-8."""
    if isinstance(path, UriFile):
        return display_name(path.rel)
    return display_name(path.relative_to(input_dir).as_posix())


def input_id(input_dir: Path | UriInput) -> str:
    """How ``score_run.json`` names the input folder: its resolved path, or the URI as given."""
    return input_dir.uri if isinstance(input_dir, UriInput) else str(input_dir.resolve())


def derived_files(out: Path, key: str, kinds: Sequence[str]) -> list[Path]:
    """The output files of the input ``key`` for each kind (``heatmaps``/``masks``/``maps``)."""
    return [out / kind / output_name(key, SCORE_OUTPUTS[kind]) for kind in kinds]


def kinds_for(kinds: Sequence[str], anomalous: bool, heatmaps: str) -> list[str]:
    """The outputs one input gets: ``kinds`` less its heatmap when ``heatmaps`` is ``"anomalous"`` and it is not."""
    return [k for k in kinds if k != "heatmaps" or heatmaps == "all" or (heatmaps == "anomalous" and anomalous)]


def valid_row(row: list[str]) -> bool:
    """A scored row that a resumed run may keep: all columns, a path, a finite score, no error."""
    if len(row) != len(CSV_COLUMNS) or not row[0] or row[4] != "" or row[2] not in ("true", "false"):
        return False
    try:
        int(row[6])  # mtime_ns: any integer
        return (math.isfinite(float(row[1])) and math.isfinite(float(row[3])) and int(row[5]) >= 0
                and 0.0 <= float(row[7]) <= 1.0)
    except ValueError:
        return False


@dataclass
class ScoreRun:
    """What an ``OUT_DIR`` already holds: the rows to keep, the inputs left to score, and why."""

    keep: list[list[str]] = field(default_factory=list)
    todo: list[Path | UriFile] = field(default_factory=list)
    resumed: bool = False
    notes: list[str] = field(default_factory=list)


def _clear(out: Path) -> None:
    """Remove what earlier runs wrote in ``out``: CSVs, state, and the derived files their rows name."""
    emptied: set[tuple[Path, Path]] = set()  # (OUT/<kind>, a folder a derived file was removed from)
    # every suffix we wrote
    suffixes = {kind: (sfx, *LEGACY_SUFFIXES.get(kind, ())) for kind, sfx in SCORE_OUTPUTS.items()}
    roots = {kind: os.path.realpath(out / kind) for kind in SCORE_OUTPUTS}  # resolved once, not per file
    for csv_path in (out / SCORES_PARTIAL, out / SCORES_CSV):
        if not csv_path.is_file():
            continue
        for row in read_scores(csv_path):
            rel = Path(row[0]) if row and row[0] else None
            if rel is None or rel.is_absolute() or ".." in rel.parts:  # a hand-edited row names nothing of ours
                continue
            targets = [(kind, out / kind / output_name(row[0], sfx)) for kind, sfxs in suffixes.items() for sfx in sfxs]
            if len(row) == 5:  # rows of anomaly-ae <= 0.1 named derived files without the input's extension
                targets += [(kind, out / kind / rel.with_suffix(sfx)) for kind, sfxs in suffixes.items()
                            for sfx in sfxs]
            for kind, t in targets:
                inside = Path(os.path.realpath(t)).is_relative_to(roots[kind])
                if inside and t.suffix in suffixes[kind] and (t.is_file() or t.is_symlink()):
                    t.unlink()
                    emptied.add((out / kind, t.parent))
        csv_path.unlink()
    (out / SCORE_RUN).unlink(missing_ok=True)
    if SCORES_PARQUET in read_manifest(out).get("scores", []):  # only the parquet file a run of ours wrote
        (out / SCORES_PARQUET).unlink(missing_ok=True)
        forget(out, "scores", [SCORES_PARQUET])
    for top, d in sorted(emptied, key=lambda td: len(td[1].parts), reverse=True):
        # only the folders our files were in, up to OUT/<kind>: a user's own (even empty) folder stays
        while d.is_relative_to(top) and d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
            d.rmdir()
            if d == top:
                break
            d = d.parent


def _check_owner(out: Path) -> bool:
    """True when ``out`` holds earlier scores; raises if an entry of ours is in the way but not ours."""
    if not out.is_dir():
        return False
    if "scores" in read_manifest(out) or (out / SCORE_RUN).is_file():
        return True
    clash = [n for n in SCORE_RUN_ENTRIES if os.path.lexists(out / n)]
    if clash:
        raise OutputConflict(f"{out / clash[0]} already exists and was not written by 'anomaly-ae score'; it is "
                             "never replaced: move it away or choose another out_dir")
    return False


def start(
    out: Path,
    run_dir: Path,
    input_dir: Path | UriInput,
    paths: Sequence[Path | UriFile],
    kinds: Sequence[str] = (),
    resume: bool = True,
    overwrite: bool = False,
    heatmaps: str = "all",
) -> ScoreRun:
    """Prepare ``out`` for scoring ``paths`` (under ``input_dir``) with ``run_dir``; returns what is left.

    Call it holding :class:`~anomaly_ae.io.folders.OutDirLock` on ``out``. ``kinds``: the derived outputs
    asked for (``heatmaps``, ``masks``, ``maps``); ``heatmaps``: which inputs get one (``all`` or
    ``anomalous``: :attr:`ScoreOptions.heatmaps <anomaly_ae.pipelines.options.ScoreOptions>`).

    Raises:
        OutputConflict: ``out`` is unusable (a file, the input folder, the model directory), holds
            results of another model or input folder, or results exist and neither ``resume`` nor
            ``overwrite`` is set.
    """
    local_input = input_dir.local_path if isinstance(input_dir, UriInput) else input_dir
    check_out_dir(out, {"model directory": run_dir, "input folder": local_input})
    fingerprint = model_fingerprint(run_dir)
    state = ScoreRun(todo=list(paths))
    has_results = _check_owner(out)
    if has_results and overwrite:
        _clear(out)
    elif has_results:
        _check_same_run(out, fingerprint, input_dir, resume)
        csvs = [p for p in (out / SCORES_PARTIAL, out / SCORES_CSV) if p.is_file()]
        if csvs:
            _resume(state, out, csvs[0], input_dir, kinds, heatmaps)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / SCORE_RUN, {
        "schema_version": 3,  # 3: heatmaps are JPEG and may be written for anomalous inputs only
        "model_dir": str(run_dir.resolve()),
        "model_sha256": fingerprint,
        "input_dir": input_id(input_dir),
        "outputs": sorted(kinds),
        "heatmaps": heatmaps if "heatmaps" in kinds else "none",
        "derived_names": "<kind>/<input path relative to INPUT_DIR><suffix> (anomaly_ae.io.files.output_name)",
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    record_outputs(out, "scores", [SCORES_CSV, SCORE_RUN, *kinds])
    return state


def _check_same_run(out: Path, fingerprint: str, input_dir: Path | UriInput, resume: bool) -> None:
    """Refuse to add to the scores in ``out`` unless resuming the same model on the same input folder."""
    hint = "use overwrite=True to replace them, or another out_dir"
    if not resume:
        raise OutputConflict(f"{out} already holds scores; {hint} (or resume=True to continue)")
    try:
        manifest = json.loads((out / SCORE_RUN).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError):
        raise OutputConflict(f"{out} holds scores.csv without a readable {SCORE_RUN}; {hint}") from None
    if manifest.get("model_sha256") != fingerprint:
        raise OutputConflict(
            f"{out} holds scores of another model, or of this one before it was retrained or recalibrated "
            f"({manifest.get('model_dir')}); one scores.csv never mixes two models: {hint}"
        )
    if manifest.get("input_dir") != input_id(input_dir):
        raise OutputConflict(f"{out} holds scores of another input folder ({manifest.get('input_dir')}); {hint}")


def _resume(state: ScoreRun, out: Path, csv_path: Path, input_dir: Path | UriInput, kinds: Sequence[str],
            heatmaps: str) -> None:
    """Fill ``state.keep`` / ``state.todo`` from an earlier CSV, keeping only rows that can be trusted."""
    current: Mapping[str, Path | UriFile] = {relative_key(p, input_dir): p for p in state.todo}
    kept: dict[str, list[str]] = {}
    counts = {"malformed": 0, "gone": 0, "changed": 0, "incomplete": 0, "failed": 0}
    for row in read_scores(csv_path):
        if len(row) == len(CSV_COLUMNS) and row[0] and row[4] != "":
            counts["failed"] += 1  # retried
            continue
        if not valid_row(row) or row[0] in kept:
            counts["malformed"] += 1
            continue
        if row[0] not in current:
            counts["gone"] += 1
            continue
        if input_stat(current[row[0]]) != (int(row[5]), int(row[6])):
            counts["changed"] += 1
            continue
        if not all(p.is_file() for p in derived_files(out, row[0], kinds_for(kinds, row[2] == "true", heatmaps))):
            counts["incomplete"] += 1
            continue
        kept[row[0]] = row
    state.keep = list(kept.values())
    state.todo = [p for key, p in current.items() if key not in kept]
    state.resumed = True
    why = {
        "malformed": "malformed or repeated rows in {csv} dropped (those inputs are scored again)",
        "gone": "rows of files no longer in the input folder dropped",
        "changed": "inputs changed since they were scored (size or modification time): scored again",
        "incomplete": "rows lack output files asked for now (heatmaps/masks/maps): scored again",
    }
    state.notes = [f"{n} {why[k].format(csv=csv_path.name)}" for k, n in counts.items() if n and k in why]
