"""Files the tool writes: atomic writes with normal permissions, and the names of derived outputs.

* :func:`write_bytes_atomic` writes through a temporary file and ``os.replace``: a crash never leaves
  half a file. ``tempfile.mkstemp`` creates files with mode 0600, so the mode is set to what an
  ordinary ``open()`` would give (``0666 & ~umask``: 0644 under umask 022) before the rename.
* :func:`output_name` is the one rule from an input's path (relative to the input folder) to the
  name of a file derived from it (heatmap, mask, raw map): the input's full name, extension
  included, plus the output suffix, so ``a.png`` and ``a.jpg`` give ``a.png.png`` and ``a.jpg.png``.
  Bytes that are not valid UTF-8 are written as ``\\xNN``; names too long for the file system are
  shortened with a hash (see there).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: longest file name (bytes) most file systems take (ext4, xfs, btrfs, APFS, NTFS in UTF-16 units)
NAME_MAX = 255


@cache
def umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # elsewhere: the classic read-by-setting (done once, cached)
    os.umask(old)
    return old


def file_mode() -> int:
    """Mode of a new regular file: ``0666 & ~umask``."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Mode of a new folder: ``0777 & ~umask``."""
    return 0o777 & ~umask()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then ``os.replace`` it into place.

    The file gets the mode an ordinary ``open()`` would give (``0666 & ~umask``).
    """
    path = Path(path)
    prefix = f".{_short(path.name, 200)}."
    try:  # the folder usually exists: no mkdir syscalls then (they cost ~35 us each on a VM's file system)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """JSON (indented, UTF-8) through :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, json.dumps(obj, indent=2).encode("utf-8"))


def write_png_atomic(path: Path, image: np.ndarray, bilevel: bool = False) -> None:
    """Encode and write a PNG (uint8 ``(H, W)`` or ``(H, W, 3)`` BGR) atomically.

    ``bilevel``: a 0/255 mask stored as a 1-bit PNG (read back as the same 0/255 pixels, 8x fewer
    bytes to compress).
    """
    import cv2  # lazy: fileio stays light for the CLI

    write_bytes_atomic(path, _encode(".png", image, [cv2.IMWRITE_PNG_BILEVEL, 1] if bilevel else []))


#: JPEG quality of heatmaps. With full-resolution colour (4:4:4: a heatmap's meaning is its colour)
#: a 256 px heatmap of a noise texture, the worst case, encodes in 0.3 ms (PNG: 3.7-5.4 ms) and
#: decodes within 4.7 grey levels of the exact overlay on average (4:2:0 sampling: 8.1)
JPEG_QUALITY = 90


def write_jpeg_atomic(path: Path, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Encode and write a JPEG (uint8 ``(H, W)`` or ``(H, W, 3)`` BGR, colour not subsampled) atomically."""
    import cv2

    write_bytes_atomic(path, _encode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality,
                                                      cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                      cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]))


def _encode(ext: str, image: np.ndarray, params: list[int]) -> bytes:
    """``cv2.imencode``'s bytes; a picture the encoder refuses (e.g. a side past JPEG's 65,535 px) is an
    ``OSError`` with ``errno.EINVAL``, which fails that one file's outputs, never a batch."""
    import cv2

    try:
        ok, buf = cv2.imencode(ext, image, params)
    except cv2.error:
        ok, buf = False, None
    if not ok or buf is None:
        h, w = image.shape[:2]
        raise OSError(errno.EINVAL, f"cannot encode a {w}x{h} px {ext[1:].upper()} picture")
    return buf.tobytes()


def write_npy_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` (float32, no pickle) through a temporary file."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array, np.float32), allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB pieces (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder in ``parent`` (created if needed) with the normal folder mode (not 0700)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(tmp, dir_mode())
    return tmp


def display_name(name: str | Path) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogate escapes,
    ``os.fsdecode``) are shown as ``\\xNN``. Used in ``scores.csv``, messages and derived names."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _short(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` UTF-8 bytes (whole characters)."""
    raw = name.encode("utf-8")
    if len(raw) <= limit:
        return name
    return raw[:limit].decode("utf-8", "ignore")


def _safe_component(name: str, suffix: str = "") -> str:
    """One path component, made valid UTF-8 (:func:`display_name`), plus ``suffix``: at most :data:`NAME_MAX` bytes.

    A longer name keeps its start and its last 24 characters around ``~`` + 10 hex digits of the
    SHA-256 of the whole name: stable, and distinct for distinct names.
    """
    name = display_name(name)
    if len((name + suffix).encode("utf-8")) <= NAME_MAX:
        return name + suffix
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    tail = name[-24:]  # keeps the extension and the end of the stem, which often hold a serial number
    room = NAME_MAX - len(f"~{digest}~{tail}{suffix}".encode())
    return f"{_short(name, room)}~{digest}~{tail}{suffix}"


def output_name(relative: str | Path, suffix: str) -> Path:
    """The derived-file name of an input at ``relative`` (to the input folder): ``relative + suffix``.

    ``sub/a.jpg`` -> ``sub/a.jpg.png``. Each component is made valid UTF-8 (:func:`display_name`:
    bytes that are not UTF-8 become the text ``\\xNN``) and, when longer than 255 bytes with the
    suffix, shortened with a stable hash (see :func:`_safe_component`). Distinct inputs give distinct
    names, except a name with an undecodable byte and one that spells the same ``\\xNN`` literally.
    """
    parts = Path(relative).parts
    return Path(*(_safe_component(p) for p in parts[:-1]), _safe_component(parts[-1], suffix))


def output_path(out_dir: Path, relative: str | Path, suffix: str) -> Path:
    """``out_dir / output_name(relative, suffix)``, refusing anything that would land outside ``out_dir``.

    Relative paths come from input files (``path.relative_to(input_dir)``); an absolute path, a
    ``..`` component or a link out of ``out_dir`` raises ``ValueError`` instead of writing there.
    """
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"output path {display_name(rel)} would escape {out_dir}")
    name = output_name(rel, suffix)
    here = out_dir
    for part in name.parts:  # only the components below out_dir can hold a planted link: one lstat each
        here = here / part
        try:
            st = os.lstat(here)
        except OSError:
            break  # not there yet: nothing below it exists either
        if stat.S_ISLNK(st.st_mode) and not Path(os.path.realpath(here)).is_relative_to(os.path.realpath(out_dir)):
            raise ValueError(f"output path {display_name(rel)} would escape {out_dir} (through a link)")
    return out_dir / name


def versions() -> dict[str, str]:
    """Versions of what produced a file (anomaly-ae, Keras and its backend, NumPy, Python, TF/JAX/torch)."""
    import platform
    from importlib import metadata

    import keras
    import numpy as np

    from anomaly_ae.version import __version__

    out = {
        "anomaly_ae": __version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    for dist in ("tensorflow", "jax", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
