"""Input folders given as URIs (``s3://bucket/line3``, ``gs://...``, ``hdfs://...``, ``file:///...``).

::

    source = UriInput.open("s3://plant-images/line3/2026-11-27")
    files = source.list_images()          # [UriFile], sorted by relative path
    image = read_uri_image(files[0], 3)   # uint8 (H, W, 3), as read_image decodes a local file

Any URI that the installed ``pyarrow.fs`` file systems accept (``pyarrow.fs.FileSystem.from_uri``:
local, S3, GCS, HDFS, Azure with the matching pyarrow build and credentials in the environment). A
file is listed with its size and modification time, which the scoring resume rules use as they use
``os.stat`` of a local file (:mod:`anomaly_ae.pipelines.score_resume`); a file system that reports no
modification time is compared by size only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from anomaly_ae.io.names import MANIFEST

if TYPE_CHECKING:  # OpenCV loads on first read, so that the CLI can tell a URI from a path at once
    import numpy as np

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class UriError(ValueError):
    """A URI input that cannot be used (unknown scheme, unreachable, not a folder); one line."""


def is_uri(text: str | Any) -> bool:
    """True for ``scheme://...`` (a Windows drive ``C:\\`` or a plain path is not a URI)."""
    return isinstance(text, str) and bool(_SCHEME.match(text))


@dataclass(frozen=True)
class UriInput:
    """A folder on a ``pyarrow.fs`` file system: ``uri`` as given, ``filesystem`` and ``root`` (its path there)."""

    uri: str
    filesystem: Any
    root: str

    @classmethod
    def open(cls, uri: str) -> UriInput:
        """Resolve ``uri`` to its file system.

        Raises:
            UriError: no installed file system takes it, it cannot be reached, or it is not a folder.
        """
        try:
            import pyarrow.fs as pafs
        except ImportError:  # mlflow depends on pyarrow, so this is a broken install
            raise UriError(f"INPUT {uri}: reading URIs needs pyarrow (pip install pyarrow)") from None
        try:
            fs, root = pafs.FileSystem.from_uri(uri)
            info = fs.get_file_info(root)
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... with the scheme's own reason
            raise UriError(f"INPUT {uri}: {_one_line(err)}") from None
        if info.type != pafs.FileType.Directory:
            what = "does not exist" if info.type == pafs.FileType.NotFound else "is not a folder"
            raise UriError(f"INPUT {uri} {what}")
        return cls(uri, fs, root.rstrip("/") or "/")

    @property
    def local_path(self) -> Path | None:
        """The folder on this machine's file system for a ``file://`` URI (so that the rules of plain paths apply
        to it: an ``--out`` that is the input folder is refused the same way), else ``None``."""
        import pyarrow.fs as pafs

        return Path(self.root) if isinstance(self.filesystem, pafs.LocalFileSystem) else None

    def list_images(self, exclude_local: str | None = None) -> list[UriFile]:
        """Every image file under the folder (recursive, sorted by relative path), as :func:`list_images` lists
        a local folder: by extension, hidden names skipped, folders holding an anomaly-ae manifest skipped.

        ``exclude_local``: a local folder (resolved) not to enter, on the local file system only.
        """
        import pyarrow.fs as pafs

        from anomaly_ae.data.images import IMAGE_EXTENSIONS

        infos = self.filesystem.get_file_info(pafs.FileSelector(self.root, recursive=True))
        ours = {str(PurePosixPath(i.path).parent) for i in infos
                if i.type == pafs.FileType.File and PurePosixPath(i.path).name == MANIFEST}
        local = isinstance(self.filesystem, pafs.LocalFileSystem)
        found = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            rel = PurePosixPath(info.path).relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts) or rel.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            parents = [str(p) for p in PurePosixPath(info.path).parents]
            if ours.intersection(parents) or (local and exclude_local and exclude_local in parents):
                continue
            mtime = info.mtime_ns if info.mtime_ns is not None else 0
            found.append(UriFile(self, rel.as_posix(), info.size if info.size is not None else -1, mtime))
        return sorted(found, key=lambda f: f.rel)

    def file(self, rel: str, size: int, mtime_ns: int) -> UriFile:
        """The file ``rel`` (relative to the folder) with the size and time it was listed with."""
        return UriFile(self, rel, size, mtime_ns)


@dataclass(frozen=True)
class UriFile:
    """One listed file: ``rel`` under its :class:`UriInput`, with the ``size`` / ``mtime_ns`` it was listed with."""

    source: UriInput
    rel: str
    size: int
    mtime_ns: int

    def __str__(self) -> str:
        return f"{self.source.uri.rstrip('/')}/{self.rel}"

    @property
    def stat(self) -> tuple[int, int]:
        """``(size_bytes, mtime_ns)`` as listed (what ``os.stat`` gives for a local file)."""
        return self.size, self.mtime_ns

    def read_bytes(self) -> bytes:
        """The file's content.

        Raises:
            OSError: it cannot be read (gone, no permission, network).
        """
        with self.source.filesystem.open_input_stream(f"{self.source.root.rstrip('/')}/{self.rel}") as f:
            return f.read()


def read_uri_image(file: UriFile, channels: int, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``file`` to uint8 ``(H, W, channels)`` exactly as :func:`~anomaly_ae.data.images.read_image` does.

    Raises:
        ImageReadError: with a one-line reason.
    """
    from anomaly_ae.data.images import decode_image

    return decode_image(read_uri_bytes(file), channels, max_pixels)


def read_uri_bytes(file: UriFile) -> bytes:
    """The content of ``file``.

    Raises:
        ImageReadError: it cannot be read (gone, no permission, network); one line.
    """
    from anomaly_ae.data.images import ImageReadError

    try:
        return file.read_bytes()
    except Exception as err:  # OSError, or pyarrow's own errors for a remote store
        raise ImageReadError(f"cannot read file: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]
