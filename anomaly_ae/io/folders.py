"""Output folders: anomaly-ae never deletes or replaces what it did not write.

Every folder a command writes holds ``.anomaly-ae-manifest.json``, which names, per kind of output
(``model``, ``scores``, ``export``, ...), the top-level entries anomaly-ae wrote there. The rules:

* ``--out`` may not be a file, nor equal to or contain the model directory or an input folder, nor
  contain the current folder when that holds anything anomaly-ae did not write
  (:func:`check_out_dir`).
* A folder that already holds the same kind of output is replaced only with ``--overwrite``, and
  even then only the entries the manifest names are removed; everything else in the folder stays
  byte-identical (:func:`plan`, :func:`publish`).
* An entry the command would write that exists and is not its own earlier output is never
  replaced, with or without ``--overwrite``: the command stops before any work with the path named.
* Results are built in a temporary sibling folder and moved into place at the end
  (:func:`staging`), so an interrupted command leaves the old output as it was.
* One process at a time writes a folder (:class:`OutDirLock`, an ``flock`` on
  ``.anomaly-ae.lock``; the kernel drops it when the process dies, so a stale lock never blocks).

Model directories, exports and evaluations written before manifests existed are recognised by
their own metadata files (:data:`LEGACY`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anomaly_ae.io.files import make_temp_dir, write_json_atomic
from anomaly_ae.io.names import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DEPLOY_JSON,
    ENCODER_ENTRIES,
    ENCODER_JSON,
    EVALUATION_FILES,
    EXPORT_ENTRIES,
    LOCK,
    MANIFEST,
    META_FILE,
    MODEL_DIR_ENTRIES,
    SCORE_RUN,
    SCORE_RUN_ENTRIES,
    SCORES_PARQUET,
    SEGMENTER_FILES,
    SEGMENTER_JSON,
)

TOOL_FILES = frozenset({MANIFEST, LOCK})

#: output kinds written before manifests existed: kind -> (marker file, keys it must hold, entries)
LEGACY: dict[str, tuple[str, tuple[str, ...], frozenset[str]]] = {
    "model": (META_FILE, ("schema_version", "threshold"), frozenset(MODEL_DIR_ENTRIES[:3])),
    "export": (DEPLOY_JSON, ("format", "file", "threshold"), frozenset(EXPORT_ENTRIES)),
    "encoder": (ENCODER_JSON, ("outputs", "files"), frozenset(ENCODER_ENTRIES)),
    "evaluation": (EVALUATION_FILES[0], ("at_threshold", "counts"), frozenset(EVALUATION_FILES)),
    "segmenter": (SEGMENTER_JSON, ("threshold", "encoder_dir"), frozenset(SEGMENTER_FILES)),
    # scores.parquet came with the manifests: no earlier folder holds one
    "scores": (SCORE_RUN, ("model_sha256", "input_dir"), frozenset(SCORE_RUN_ENTRIES) - {SCORES_PARQUET}),
}

#: what each kind is called in messages
WHAT = {"model": "a trained model", "scores": "scores", "export": "an exported detector",
        "encoder": "an exported encoder", "evaluation": "an evaluation", "segmenter": "a segmenter",
        "segmentation": "segmentation masks"}


class OutputConflict(ValueError):
    """Writing the output would touch something anomaly-ae must not; the message says what to do."""


def _resolved(p: Path) -> Path:
    return Path(os.path.realpath(p))


def _within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or inside it (after resolving links)."""
    return _resolved(path).is_relative_to(_resolved(folder))


def _entry_name(name: object) -> bool:
    """A manifest entry must be one plain name inside the folder: never ``.``, ``..`` or a path."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\x00" not in name and name not in TOOL_FILES)


def read_manifest(out: Path) -> dict[str, list[str]]:
    """``{kind: [entries]}`` that anomaly-ae wrote in ``out`` (manifest and legacy markers).

    Only plain top-level names count: a hand-made manifest naming ``..`` or ``a/b`` cannot make
    anomaly-ae remove anything outside its own entries.
    """
    owned: dict[str, list[str]] = {}
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        for kind, entry in data.get("written", {}).items():
            owned[str(kind)] = [n for n in entry.get("files", []) if _entry_name(n)]
    except (OSError, ValueError, AttributeError, TypeError):  # absent or damaged: fall back to markers
        pass
    for kind, (marker, keys, names) in LEGACY.items():
        if kind in owned:
            continue
        try:
            meta = json.loads((out / marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and all(k in meta for k in keys):
            owned[kind] = sorted(n for n in names if os.path.lexists(out / n))
    if CHECKPOINT_DIR not in owned.get("model", []) and _our_checkpoint(out / CHECKPOINT_DIR):  # interrupted training
        owned["model"] = sorted({*owned.get("model", []), CHECKPOINT_DIR})
    return owned


#: the sections of an anomaly-ae config: a checkpoint's config.yaml has them all (it is the resolved config)
_CONFIG_SECTIONS = frozenset({"data", "model", "train", "scoring", "threshold", "tracking"})


def _our_checkpoint(folder: Path) -> bool:
    """``folder`` is a training checkpoint anomaly-ae wrote before manifests existed: its
    ``config.yaml`` is a resolved anomaly-ae config (a folder of the user's named ``checkpoint`` is not)."""
    import yaml

    from anomaly_ae.io.yamlfile import load_yaml

    try:
        config = load_yaml((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and set(config) == _CONFIG_SECTIONS


def record_outputs(out: Path, kind: str, files: Iterable[str], replace: bool = False) -> None:
    """Add ``files`` (top-level entries of ``out``) to the manifest under ``kind`` (or replace the list)."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("written"), dict):
            raise ValueError
    except (OSError, ValueError):
        data = {"tool": "anomaly-ae", "written": {}}
    old = [] if replace else data["written"].get(kind, {}).get("files", [])
    data["written"][kind] = {"files": sorted({*old, *files}),
                             "updated": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json_atomic(out / MANIFEST, data)


def forget(out: Path, kind: str, files: Iterable[str]) -> None:
    """Drop ``files`` from ``kind`` in the manifest (after the command removed them itself)."""
    current = read_manifest(out).get(kind, [])
    record_outputs(out, kind, [n for n in current if n not in set(files)], replace=True)


def check_out_dir(out: Path, protect: Mapping[str, Path | None] | None = None) -> None:
    """Refuse an ``out`` that is a file, holds a protected folder, or holds the user's current folder.

    Args:
        protect: ``{"model directory": run_dir, "input folder": input_dir, ...}``: ``out`` may not
            be equal to one of them or contain it (it may lie inside one; commands that read an
            input folder skip their own output folder there).

    Raises:
        OutputConflict: with the reason.
    """
    if out.is_symlink() and not out.exists():
        raise OutputConflict(f"out_dir {out} is a broken symbolic link (to {os.readlink(out)}): remove it or choose "
                             "another folder")
    if out.exists() and not out.is_dir():
        raise OutputConflict(f"out_dir {out} is a file, not a folder: choose a folder path")
    for label, p in (protect or {}).items():
        if p is not None and p.exists() and _within(p, out):
            same = _resolved(p) == _resolved(out)
            where = "is" if same else "contains"
            raise OutputConflict(f"out_dir {out} {where} the {label} {p}: write the output to another folder")
    cwd = Path.cwd()
    if _within(cwd, out):
        owned = {n for names in read_manifest(cwd).values() for n in names} | TOOL_FILES
        foreign = [n for n in os.listdir(cwd) if n not in owned]
        if _resolved(cwd) != _resolved(out) or foreign:
            raise OutputConflict(f"out_dir {out} is or contains the current folder, which holds files anomaly-ae did "
                                 "not write: choose a new folder (for example runs/NAME)")


def check_writable(out: Path, kind: str, names: Iterable[str], overwrite: bool,
         protect: Mapping[str, Path | None] | None = None) -> None:
    """Check, before any work, that ``kind``'s entries ``names`` may be written into ``out``.

    Raises:
        OutputConflict: ``out`` already holds this kind of output and ``overwrite`` is not set, or
            an entry in the way was not written by this kind of output (then never replaced).
    """
    check_out_dir(out, protect)
    if not out.is_dir():
        return
    owned = read_manifest(out)
    mine = set(owned.get(kind, ()))
    if mine and not overwrite:
        raise OutputConflict(f"{out} already holds {WHAT.get(kind, kind)} written by anomaly-ae: add overwrite=True "
                             "to replace it (only the files anomaly-ae wrote there are removed), or choose another "
                             "out_dir")
    for n in names:
        if os.path.lexists(out / n) and n not in mine:
            by = next((k for k, v in owned.items() if n in v), None)
            whose = f"belongs to {WHAT.get(by, by)} written by anomaly-ae" if by else "was not written by anomaly-ae"
            raise OutputConflict(f"{out / n} already exists and {whose}; it is never replaced: move it away or "
                                 "choose another out_dir")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def publish(tmp: Path, out: Path, kind: str, overwrite: bool, order: Sequence[str] = (),
            replace_all: bool = True) -> Path:
    """Move the entries of the finished ``tmp`` folder into ``out`` and record them; removes ``tmp``.

    With ``replace_all`` the entries of ``kind``'s earlier output that this one does not write are
    removed too (an export that switches format); otherwise only the entries written are replaced.
    ``order``: entries moved last, in this order (metadata that names the rest).
    """
    names = sorted((n for n in os.listdir(tmp) if n != MANIFEST),
                   key=lambda n: (n in order, order.index(n) if n in order else 0, n))
    check_writable(out, kind, names, overwrite)
    if not out.exists():
        record_outputs(tmp, kind, names, replace=True)  # the manifest travels with the folder
        try:
            os.rename(tmp, out)
            return out
        except OSError as err:  # created meanwhile: merge below
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            (tmp / MANIFEST).unlink()
    out.mkdir(parents=True, exist_ok=True)
    old = set(read_manifest(out).get(kind, ()))
    # recorded before anything moves: after a crash half-way every entry is still known as ours
    record_outputs(out, kind, sorted(old | set(names)), replace=True)
    for n in (old - set(names)) if replace_all else ():
        _remove(out / n)
    for n in names:
        if n in old and (out / n).is_dir():  # os.replace moves a folder only onto an empty one
            _remove(out / n)
        os.replace(tmp / n, out / n)
    if replace_all:
        record_outputs(out, kind, names, replace=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


@contextmanager
def staging(out: Path, kind: str, names: Iterable[str], overwrite: bool,
            protect: Mapping[str, Path | None] | None = None, order: Sequence[str] = (),
            replace_all: bool = True) -> Iterator[Path]:
    """``with staging(out, "export", [...], overwrite) as tmp:`` write into ``tmp``; published on success.

    Checks first (:func:`check_writable`); on an error the temporary folder is removed and ``out`` is untouched.
    """
    check_writable(out, kind, names, overwrite, protect)
    tmp = make_temp_dir(out.parent, f".{out.name[:80]}.tmp-")
    try:
        yield tmp
        publish(tmp, out, kind, overwrite, order, replace_all)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class OutDirLock:
    """``with OutDirLock(out):`` one anomaly-ae process at a time writes ``out``.

    An ``flock`` on ``out/.anomaly-ae.lock`` holding the owner's PID; the kernel releases it when the
    process ends in any way, so a lock left by a killed run never blocks the next one.

    Raises:
        OutputConflict: another live process holds the lock.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputConflict(f"{self.path.parent} is being written by another anomaly-ae process (PID "
                                     f"{owner}): wait for it to finish, or choose another out_dir") from None
            try:  # the file may have been unlinked by the previous owner after we opened it: lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        held = os.read(fd, 64).strip()
        if held and not held.isdigit():  # a file of this name that is not one of our locks: never touched
            os.close(fd)
            raise OutputConflict(f"{self.path} exists and is not an anomaly-ae lock: move it away or choose another "
                                 "out_dir")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # our own lock file, unlinked while still locked (see acquire)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutDirLock:
        self.acquire()
        return self

    def __exit__(self, *_: Any) -> None:
        self.release()
