"""Atomic file writes: a crash never leaves a half-written output behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_path(out_dir: Path, relative: str | Path, suffix: str) -> Path:
    """``out_dir / relative`` with ``suffix``, refusing anything that would land outside ``out_dir``.

    Relative paths come from input files (``path.relative_to(input_dir)``); an absolute path, a
    ``..`` component or a link out of ``out_dir`` raises ``ValueError`` instead of writing there.
    """
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"output path {rel} would escape {out_dir}")
    target = (out_dir / rel).with_suffix(suffix)
    root = Path(os.path.realpath(out_dir))
    if not Path(os.path.realpath(target)).is_relative_to(root):
        raise ValueError(f"output path {rel} would escape {out_dir} (through a link)")
    return target
