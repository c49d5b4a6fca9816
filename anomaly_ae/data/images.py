"""Image files -> float32 NHWC arrays in [0, 1].

Only numpy and OpenCV: the same code feeds every Keras backend. Reading is separate from preprocessing
so that a file that cannot be read costs one :class:`ImageReadError` (with a one-line reason), never a
batch.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anomaly_ae.io.names import MANIFEST

# errors only: OpenCV's TIFF reader warns on stderr about float TIFFs, which _float_tiff then reads
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_MEGAPIXELS = 100
MIN_SIDE = 4  # pixels; smaller images carry no texture to reconstruct


class ImageReadError(Exception):
    """A file could not be turned into an image; ``str(err)`` is a one-line reason."""


def list_images(
    folder: str | Path, exclude: Sequence[Path] = (), problems: list[str] | None = None
) -> list[Path]:
    """Every image entry under ``folder`` (recursive, sorted by relative path, hidden names skipped).

    An entry counts by its extension, whatever it is: a broken link or a FIFO named ``x.png`` is
    listed, so that reading it gives its one-line reason instead of silence. Symbolic links to
    folders are followed once: a link back up the tree (a loop) is not entered again, so the walk
    always ends.

    Sub-folders that hold an anomaly-ae manifest (``.anomaly-ae-manifest.json``: scores, heatmaps, a
    model) are anomaly-ae's own outputs and are not entered, so heatmaps never become inputs.

    Args:
        exclude: folders not to enter (an output folder placed inside the input folder).
        problems: when given, one line is appended for each folder that could not be read
            (permission denied, vanished), which is otherwise skipped.

    Raises:
        NotADirectoryError: ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    skip = {os.path.realpath(p) for p in exclude}
    found = []
    seen: set[tuple[int, int]] = set()

    def on_error(err: OSError) -> None:
        if problems is not None:
            where = err.filename if err.filename is not None else root
            problems.append(f"cannot read folder {os.fsdecode(where)}: {err.strerror or err}")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=on_error):
        try:
            st = os.stat(dirpath)
        except OSError as err:
            on_error(err)
            dirnames[:] = []
            continue
        ours = dirpath != str(root) and os.path.lexists(os.path.join(dirpath, MANIFEST))
        if (st.st_dev, st.st_ino) in seen or os.path.realpath(dirpath) in skip or ours:  # loop, excluded, our output
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:  # broken links are among them (os.walk puts what is not a folder here)
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())



def folder_fingerprint(folder: str | Path) -> str:
    """SHA-256 of the relative paths and sizes of the images under ``folder`` (:func:`list_images`).

    The same list of files gives the same hash wherever the folder lies; a file added, removed, renamed
    or replaced by one of another size changes it. Cheap: no image is read.
    """
    import hashlib

    root = Path(folder)
    h = hashlib.sha256()
    for p in list_images(root):
        try:
            size = p.stat().st_size
        except OSError:
            size = -1
        h.update(f"{p.relative_to(root).as_posix()}\t{size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def max_pixels_default() -> int:
    """The largest image (in pixels) decoded: ``ANOMALY_AE_MAX_MEGAPIXELS`` (default 100) megapixels."""
    try:
        value = float(os.environ.get("ANOMALY_AE_MAX_MEGAPIXELS", DEFAULT_MAX_MEGAPIXELS))
    except ValueError:
        value = DEFAULT_MAX_MEGAPIXELS
    if not 0 < value < float("inf"):  # a typo must not refuse every image or lift the limit
        value = DEFAULT_MAX_MEGAPIXELS
    return int(value * 1_000_000)


def image_header_size(data: np.ndarray) -> tuple[int | None, int | None, int] | None:
    """``(width, height, pixels)`` from the file header alone (Pillow, nothing decoded), or ``None``.

    Beyond Pillow's own decompression-bomb limit only the pixel count is known: ``(None, None, n)``.
    """
    import io
    import re
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: we apply our own limit
            with Image.open(io.BytesIO(data.tobytes())) as im:
                w, h = im.size
                return w, h, w * h
    except Image.DecompressionBombError as err:
        m = re.search(r"\((\d+) pixels\)", str(err))
        return None, None, int(m.group(1)) if m else 2**62
    except Exception:  # noqa: BLE001 - unknown or broken header: leave the verdict to the decoder
        return None


def _truncation(data: np.ndarray) -> str | None:
    """A reason if a PNG or JPEG file ends before its end marker, else ``None``."""
    head = data[:8].tobytes()
    tail = data[-4096:].tobytes()
    if head.startswith(b"\xff\xd8") and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if head.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def read_image(path: str | Path, channels: int, max_pixels: int | None = None) -> np.ndarray:
    """Decode a file to uint8 ``(H, W, channels)``, RGB order when ``channels == 3``.

    16-bit images are scaled to 8 bit (``v * 257`` -> ``v``), float TIFFs as :func:`_float_tiff` says,
    alpha is dropped, palette images are expanded and the EXIF
    orientation of JPEGs is applied (OpenCV's ``IMREAD_COLOR``/``IMREAD_GRAYSCALE`` do all of that).
    Images above ``max_pixels`` (default :func:`max_pixels_default`) are refused from their header,
    before any decoding; truncated PNG/JPEG files and images under ``MIN_SIDE`` pixels are refused.

    Raises:
        ImageReadError: with a one-line reason; never another exception for any file content.
    """
    return decode_image(read_file_bytes(path), channels, max_pixels)


def read_file_bytes(path: str | Path) -> np.ndarray:
    """The bytes of an image file, uint8 ``(n,)``, for :func:`decode_image`.

    Raises:
        ImageReadError: the file is gone, a broken link, not a regular file (a FIFO would block) or
            unreadable; one line.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        why = "broken symbolic link (its target does not exist)" if os.path.islink(path) else "no such file"
        raise ImageReadError(why) from None
    except OSError as err:
        raise ImageReadError(f"cannot read file: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                 (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device"))
        kind = next((name for test, name in kinds if test(st.st_mode)), "special file")
        raise ImageReadError(f"not a regular file ({kind})")
    try:
        return np.fromfile(path, dtype=np.uint8)  # np.fromfile copes with non-ASCII paths
    except OSError as err:
        raise ImageReadError(f"cannot read file: {err.strerror or err}") from None


def decode_image(data: np.ndarray | bytes, channels: int, max_pixels: int | None = None,
                 header: tuple[int | None, int | None, int] | None = None) -> np.ndarray:
    """The bytes of an image file (uint8 ``(n,)`` or ``bytes``) as :func:`read_image` decodes a file.

    ``header``: :func:`image_header_size` of ``data`` when the caller already read it (else read here).

    Raises:
        ImageReadError: with a one-line reason; never another exception for any content.
    """
    data = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    if data.size == 0:
        raise ImageReadError("empty file (0 bytes)")
    limit = max_pixels_default() if max_pixels is None else max_pixels
    header = image_header_size(data) if header is None else header
    if header is not None and header[2] > limit:
        w, h, n = header
        dims = f"{w}x{h} = " if w is not None else ""
        raise ImageReadError(
            f"image too large: {dims}{n / 1e6:.0f} megapixels "
            f"(limit {limit / 1e6:g}; set ANOMALY_AE_MAX_MEGAPIXELS or max_megapixels, --max-megapixels)"
        )
    if (why := _truncation(data)) is not None:
        raise ImageReadError(why)
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    try:
        image = cv2.imdecode(data, flag)
    except cv2.error as err:  # OpenCV raises on some malformed headers instead of returning None
        raise ImageReadError(f"cannot decode image: {str(err).strip().splitlines()[-1][:200]}") from None
    if image is None and data[:4].tobytes() in (b"II*\x00", b"MM\x00*"):  # float TIFFs: OpenCV reads only as-is
        image = _float_tiff(data, channels)
    if image is None or image.size == 0:
        raise ImageReadError("cannot decode image (corrupt or not an image file)")
    h, w = image.shape[:2]
    if h * w > limit:  # a format whose header Pillow could not read
        raise ImageReadError(f"image too large: {w}x{h} (limit {limit / 1e6:g} megapixels)")
    if min(h, w) < MIN_SIDE:
        raise ImageReadError(f"image too small: {w}x{h} pixels (minimum {MIN_SIDE}x{MIN_SIDE})")
    if channels == 1:
        return image[..., None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place: no second copy of a huge image


def _float_tiff(data: np.ndarray, channels: int) -> np.ndarray | None:
    """A 32/64-bit float TIFF as uint8 gray or BGR (what ``imdecode`` gives for other files), or ``None``.

    Values are taken as 0-1 when they all lie in [0, 1], else stretched min-max to 0-255; NaN/inf are 0.
    """
    try:
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if raw is None or raw.dtype.kind != "f" or raw.size == 0:
        return None
    raw = np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(raw.min()), float(raw.max())
    if lo < 0.0 or hi > 1.0:
        raw = (raw - lo) / (hi - lo) if hi > lo else np.zeros_like(raw)
    image = np.round(raw * 255.0).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if channels == 1 and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if channels == 3 and image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def fit_box(original_hw: tuple[int, int], model_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, left, height, width)``: the largest box of ``original_hw``'s aspect ratio that fits in ``model_hw``,
    centred (a side is at least 1 px)."""
    (oh, ow), (h, w) = original_hw, model_hw
    scale = min(h / oh, w / ow)
    bh, bw = min(h, max(1, round(oh * scale))), min(w, max(1, round(ow * scale)))
    return (h - bh) // 2, (w - bw) // 2, bh, bw


def mirror_pad(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """``(h, w, C)`` with mirrored margins (``BORDER_REFLECT_101``, repeated while a margin is wider than the
    image: a thin strip in a square box)."""
    c = image.shape[2]
    while top or bottom or left or right:
        h, w = image.shape[:2]
        t, b = min(top, h - 1), min(bottom, h - 1)
        lf, r = min(left, w - 1), min(right, w - 1)
        if not (t or b or lf or r):  # a 1-px side cannot be mirrored: repeat it
            image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REPLICATE)
            break
        image = cv2.copyMakeBorder(image, t, b, lf, r, cv2.BORDER_REFLECT_101)
        top, bottom, left, right = top - t, bottom - b, left - lf, right - r
    return image.reshape(*image.shape[:2], c)


@dataclass(frozen=True)
class Preprocessing:
    """Resize + channel conversion + scaling to [0, 1]; serialisable fitted state of a detector."""

    image_size: tuple[int, int]  # (height, width) the model sees
    channels: int
    source_size: tuple[int, int] | None = None  # typical (height, width) of the training images
    aspect: str = "stretch"  # "pad": aspect kept, mirrored to fill (fit_box); "stretch": resized to fill

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["source_size"] = list(self.source_size) if self.source_size else None
        d["scale"] = "uint8 / 255"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`."""
        src = d.get("source_size")
        return cls(
            image_size=tuple(d["image_size"]),  # type: ignore[arg-type]
            channels=int(d["channels"]),
            source_size=tuple(src) if src else None,  # type: ignore[arg-type]
            aspect=str(d.get("aspect", "stretch")),  # saved before it existed: stretched
        )

    @property
    def original_hw(self) -> tuple[int, int]:
        """``(height, width)`` of the original images: ``source_size``, or the model size when it is unknown."""
        return tuple(self.source_size or self.image_size)  # type: ignore[return-value]

    def with_source_size(self, sizes: Sequence[tuple[int, int]]) -> Preprocessing:
        """Copy recording the median (height, width) of the original images."""
        if not sizes:
            return self
        arr = np.asarray(sizes)
        return replace(self, source_size=(int(np.median(arr[:, 0])), int(np.median(arr[:, 1]))))

    def box(self, original_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of an ``original_hw`` image's pixels inside the model-size input: the
        whole input when stretching, else :func:`fit_box`."""
        if self.aspect == "pad":
            return fit_box(original_hw, self.image_size)
        return (0, 0, *self.image_size)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """uint8/float ``(H, W, C)`` -> same dtype ``(h, w, C)`` at the model size: resized to fill it
        (``stretch``), or to fit it with the aspect ratio kept and the rest mirrored from the image (``pad``;
        :meth:`box` says where the image lies, for cropping its map back)."""
        h, w = self.image_size
        if image.shape[:2] == (h, w):
            return image
        top, left, bh, bw = self.box(image.shape[:2])
        shrinking = image.shape[0] > bh or image.shape[1] > bw
        out = cv2.resize(image, (bw, bh), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        out = out.reshape(bh, bw, image.shape[2])
        if (bh, bw) != (h, w):
            out = mirror_pad(out, top, h - bh - top, left, w - bw - left)
        return out

    def convert_channels(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` or ``(H, W, 1|3|4)`` -> ``(H, W, channels)``; RGB in, RGB out."""
        if image.ndim == 2:
            image = image[..., None]
        c = image.shape[2]
        if c == 4:
            image, c = image[..., :3], 3
        if c == self.channels:
            return image
        if self.channels == 1 and c == 3:
            return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[..., None]
        if self.channels == 3 and c == 1:
            return np.repeat(image, 3, axis=2)
        raise ValueError(f"cannot convert an image with {c} channels to {self.channels}")

    def __call__(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Images (uint8 0-255 or float 0-1; any size) -> float32 ``(N, h, w, channels)`` in [0, 1]."""
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) and not _is_batch(images):
            images = [images]
        out = np.empty((len(images), *self.image_size, self.channels), dtype=np.float32)
        for i, image in enumerate(images):
            image = np.asarray(image)
            scale = _scale_of(image)
            out[i] = self.resize(self.convert_channels(image)).astype(np.float32) * scale
        return out


def model_size_uint8(pre: Preprocessing, images: Sequence[np.ndarray]) -> np.ndarray | None:
    """uint8 images -> uint8 ``(N, h, w, channels)`` at model size (``None`` if any is not uint8).

    ``pre(images)`` equals this ``* (1 / 255)`` in float32 exactly: the resize works on the uint8
    pixels either way. Scoring sends these to the model and scales them there, so a batch crosses
    to an accelerator as 1 byte per pixel instead of 4.
    """
    if not images or any(np.asarray(im).dtype != np.uint8 for im in images):
        return None
    out = np.empty((len(images), *pre.image_size, pre.channels), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = pre.resize(pre.convert_channels(np.asarray(image))).reshape(out.shape[1:])
    return out


def _is_batch(images: np.ndarray) -> bool:
    """A 3-D array is a batch of gray images unless its last axis looks like channels."""
    return images.ndim == 3 and images.shape[-1] not in (1, 3, 4)


def _scale_of(image: np.ndarray) -> float:
    if image.dtype == np.uint8:
        return 1.0 / 255.0
    if image.dtype == np.uint16:
        return 1.0 / 65535.0
    return 1.0


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (train, holdout) index arrays; holdout has >= 1 item.

    Raises:
        ValueError: fewer than 2 items.
    """
    if n < 2:
        raise ValueError(f"need at least 2 good images to hold some out for validation, got {n}")
    n_hold = min(n - 1, max(1, int(round(n * fraction))))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


@dataclass
class LoadResult:
    """Decoded images at model size plus what could not be read."""

    images: np.ndarray  # uint8 (N, h, w, C)
    paths: list[Path]
    failures: list[tuple[Path, str]]
    sizes: list[tuple[int, int]]  # original (height, width) of each image


def load_folder(paths: Sequence[Path], preprocessing: Preprocessing) -> LoadResult:
    """Decode ``paths`` to a uint8 ``(N, h, w, C)`` array at model size, skipping unreadable files."""
    h, w = preprocessing.image_size
    images = np.empty((len(paths), h, w, preprocessing.channels), dtype=np.uint8)
    ok: list[Path] = []
    failures: list[tuple[Path, str]] = []
    sizes: list[tuple[int, int]] = []
    for p in paths:
        try:
            image = read_image(p, preprocessing.channels)
        except ImageReadError as err:
            failures.append((p, str(err)))
            continue
        images[len(ok)] = preprocessing.resize(image)
        ok.append(p)
        sizes.append(image.shape[:2])
    return LoadResult(images[: len(ok)], ok, failures, sizes)
