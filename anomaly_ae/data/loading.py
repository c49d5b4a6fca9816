"""From what a user passes (a folder, an array, a list of images) to decoded images.

* :func:`load_training_set`: the good images of ``fit``, decoded once at model size when they fit in
  ``cache_mb`` (else checked once and streamed from disk by the dataset).
* :func:`decode_batch`: the next batch of a streamed folder (local, or a URI's), bounded by image count and pixels.
* :func:`decode_images`: a path, folder, array or list -> a list of decoded images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly_ae.data.images import (
    ImageReadError,
    Preprocessing,
    decode_image,
    image_header_size,
    list_images,
    load_folder,
    read_file_bytes,
    read_image,
)
from anomaly_ae.data.mvtec import mask_name, read_mask
from anomaly_ae.data.uris import UriFile, read_uri_bytes

ImagesLike = np.ndarray | Sequence[np.ndarray] | str | Path


@dataclass
class TrainingSet:
    """Good images for training: uint8 ``(N, h, w, C)`` at model size, or a list whose items are such images
    (the part that fits ``data.cache_mb``) or paths decoded on the fly by the dataset's workers."""

    images: np.ndarray | list[np.ndarray | Path]
    skipped: list[tuple[Path, str]]  # unreadable files and why
    sizes: list[tuple[int, int]]  # original (height, width) of each image

    def take(self, idx: np.ndarray) -> np.ndarray | list[np.ndarray | Path]:
        """The images (or paths) at ``idx``."""
        if isinstance(self.images, np.ndarray):
            return self.images[idx]
        return [self.images[i] for i in idx]

    def at_model_size(self, i: int, pre: Preprocessing) -> np.ndarray:
        """Image ``i`` as uint8 ``(h, w, C)``."""
        item = self.images[i]
        if isinstance(item, np.ndarray):
            return item
        return pre.resize(read_image(item, pre.channels))


def load_training_set(good: ImagesLike, pre: Preprocessing, cache_mb: int) -> TrainingSet:
    """Decode a folder (recursively) or take an array/list of images; unreadable files are skipped.

    Raises:
        ValueError: the folder holds no images.
    """
    if not isinstance(good, str | Path):
        arr = decode_images(good, pre.channels)
        if not arr:
            raise ValueError("no images given")
        stacked = np.stack([pre.resize(pre.convert_channels(im)) for im in arr])
        return TrainingSet(stacked, [], [im.shape[:2] for im in arr])
    paths = list_images(good)
    if not paths:
        raise ValueError(f"no images found in {good}")
    h, w = pre.image_size
    if len(paths) * h * w * pre.channels <= cache_mb * 2**20:
        loaded = load_folder(paths, pre)
        return TrainingSet(loaded.images, loaded.failures, loaded.sizes)
    # too big for data.cache_mb: every file is checked once; the images that fit the budget stay decoded,
    # the others are decoded again when a batch needs them, so memory stays flat however many there are
    budget, per_image = cache_mb * 2**20, h * w * pre.channels
    items: list[np.ndarray | Path] = []
    skipped, sizes = [], []
    for p in paths:
        try:
            image = read_image(p, pre.channels)
        except ImageReadError as err:
            skipped.append((p, str(err)))
            continue
        sizes.append(image.shape[:2])
        if budget >= per_image:
            items.append(pre.resize(image))
            budget -= per_image
        else:
            items.append(p)
    return TrainingSet(items, skipped, sizes)


ACCEPTED = ("a folder or file path, a list of file paths, an array (H, W[, C]) or (N, H, W[, C]), "
            "or a list of arrays")


def decode_images(images: ImagesLike, channels: int) -> list[np.ndarray]:
    """A file, a folder (recursively), an array ``(H, W[, C])`` / ``(N, H, W[, C])``, or a list of paths
    and/or arrays -> images.

    Raises:
        TypeError: anything else (the message names what is accepted).
    """
    if isinstance(images, str | Path):
        p = Path(images)
        paths = list_images(p) if p.is_dir() else [p]
        return [_read_named(q, channels) for q in paths]
    if isinstance(images, np.ndarray) and images.dtype.kind in "uifb":
        return list(as_batch(checked_pixels(images)))
    if isinstance(images, list | tuple):
        out: list[np.ndarray] = []
        for item in images:
            if isinstance(item, str | Path):
                out += decode_images(item, channels)
            elif isinstance(item, np.ndarray) and item.ndim in (2, 3) and item.dtype.kind in "uifb":
                out.append(checked_pixels(item))
            else:
                raise TypeError(f"images: a list item is {type(item).__name__} {getattr(item, 'shape', '')}; "
                                f"accepted: {ACCEPTED}")
        return out
    raise TypeError(f"images: got {type(images).__name__}; accepted: {ACCEPTED}")


def _read_named(path: Path, channels: int) -> np.ndarray:
    """:func:`read_image`, its one-line reason prefixed with the path (the API raises it as it is)."""
    try:
        return read_image(path, channels)
    except ImageReadError as err:
        raise ImageReadError(f"{path}: {err}") from None


def checked_pixels(images: np.ndarray) -> np.ndarray:
    """Array images in a range the model understands: uint8 or uint16 as they are, floats in [0, 1] as float32,
    other integers and bools in 0-255 as uint8.

    Float images in 0-255 would otherwise be read as 255 times too bright (scores in the tens of
    thousands), and OpenCV refuses float64 colour conversions with a raw depth error.

    Raises:
        ValueError: NaN/inf, floats outside [0, 1] or integers outside 0-255 (one line, with the remedy).
    """
    a = np.asarray(images)
    if a.dtype in (np.uint8, np.uint16) or a.size == 0:
        return a
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise ValueError("images: the array holds NaN or inf values")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            remedy = "; pass uint8 0-255, or divide by 255" if hi <= 255 else ""
            raise ValueError(f"images: float pixel values must lie in [0, 1], these span {lo:.4g} to {hi:.4g}"
                             + remedy)
        return np.clip(a, 0.0, 1.0).astype(np.float32, copy=False)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"images: {a.dtype} pixel values must lie in 0-255, these span {lo} to {hi}; pass uint8, "
                         "uint16, or floats in [0, 1]")
    return a.astype(np.uint8)


def as_batch(images: np.ndarray) -> np.ndarray:
    """``(H, W)``/``(H, W, C)`` single image or ``(N, H, W[, C])`` batch -> a batch."""
    if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4)):
        return images[None]
    return images


@dataclass
class DecodedBatch:
    """Consecutive files ``paths`` (ending before index ``end`` of the full list), decoded or not."""

    paths: Sequence[Path | UriFile]
    end: int
    images: dict[int, np.ndarray]  # position in the batch -> uint8 (H, W, C)
    errors: dict[int, str]  # position -> one-line reason
    stats: dict[int, tuple[int, int]]  # position -> (size_bytes, mtime_ns) as read


def decode_batch(
    paths: Sequence[Path | UriFile], start: int, channels: int, max_pixels: int | None, max_images: int,
    pixel_budget: int, pool: Executor | None = None,
) -> DecodedBatch:
    """Decode files from ``paths[start]`` on until ``max_images`` are taken or the images hold
    ``pixel_budget`` pixels (at least one file is always taken). ``paths``: local files, or files listed
    on a ``pyarrow.fs`` file system (:class:`~anomaly_ae.data.uris.UriFile`).

    The files are read here, and their pixels counted from their headers; the decoding itself runs
    on ``pool`` when given (OpenCV releases the GIL), one file per task, else here. Either way the
    batch is the same.
    """
    raw: dict[int, tuple[np.ndarray, tuple[int | None, int | None, int]]] = {}  # bytes and header, to decode
    images: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    stats: dict[int, tuple[int, int]] = {}
    pixels, end = 0, start
    while end < len(paths) and end - start < max_images and (end == start or pixels < pixel_budget):
        i, p = end - start, paths[end]
        end += 1
        if (stat := input_stat(p)) is not None:
            stats[i] = stat
        try:
            data = read_uri_bytes(p) if isinstance(p, UriFile) else read_file_bytes(p)
        except ImageReadError as err:
            errors[i] = str(err)
            continue
        data = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
        header = image_header_size(data)
        if header is None:  # no size in the header: decode now to know it (and whether it is an image)
            _decode_into(i, data, None, channels, max_pixels, images, errors)
            pixels += images[i].shape[0] * images[i].shape[1] if i in images else 0
        else:
            raw[i] = data, header
            pixels += header[2]
    jobs = [(i, data, header) for i, (data, header) in raw.items()]
    if pool is not None and len(jobs) > 1:
        list(pool.map(lambda job: _decode_into(*job, channels, max_pixels, images, errors), jobs))
    else:
        for job in jobs:
            _decode_into(*job, channels, max_pixels, images, errors)
    return DecodedBatch(paths[start:end], end, dict(sorted(images.items())), errors, stats)


def _decode_into(i: int, data: np.ndarray, header: tuple[int | None, int | None, int] | None, channels: int,
                 max_pixels: int | None, images: dict[int, np.ndarray], errors: dict[int, str]) -> None:
    """Decode one file's bytes into ``images[i]``, or its reason into ``errors[i]`` (threads write distinct keys)."""
    try:
        images[i] = decode_image(data, channels, max_pixels, header)
    except ImageReadError as err:
        errors[i] = str(err)


def decode_threads() -> int:
    """Threads that decode a scoring batch: half the cores, at most 8 (1 on a 2-core machine, where the
    model already keeps both cores busy; a GPU machine needs several to feed the device)."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def input_stat(path: Path | UriFile) -> tuple[int, int] | None:
    """``(size_bytes, mtime_ns)`` of an input (links followed; a URI file's as listed), ``None`` if unreadable."""
    if isinstance(path, UriFile):
        return path.stat
    try:
        st = os.stat(path)
    except OSError:
        return None  # reading it says why
    return st.st_size, st.st_mtime_ns


@dataclass
class ReadFolder:
    """The readable images of a folder (as read, any size) and what was skipped, with why."""

    images: list[np.ndarray]  # uint8 (H, W, C)
    paths: list[Path]
    skipped: list[tuple[Path, str]]  # unreadable files, and unreadable sub-folders (the folder, the line)


def read_folder(folder: Path, channels: int) -> ReadFolder:
    """Every image under ``folder`` (recursively), skipping what cannot be read."""
    out = ReadFolder([], [], [])
    problems: list[str] = []
    for p in list_images(folder, problems=problems):
        try:
            out.images.append(read_image(p, channels))
            out.paths.append(p)
        except ImageReadError as err:
            out.skipped.append((p, str(err)))
    out.skipped += [(folder, line) for line in problems]
    return out


def read_masks(
    read: ReadFolder, folder: Path, masks_dir: Path
) -> tuple[list[np.ndarray | None], list[tuple[Path, str]]]:
    """Bool masks ``masks_dir/<relative parent>/<stem>_mask.png`` of ``read``'s images (``None`` where none).

    Returns the masks (one per image, at its size) and the masks that could not be read, with why.
    """
    masks: list[np.ndarray | None] = []
    skipped: list[tuple[Path, str]] = []
    for p, im in zip(read.paths, read.images, strict=True):
        rel = p.relative_to(folder)
        mp = masks_dir / rel.parent / mask_name(rel)
        try:
            masks.append(read_mask(mp, im.shape[:2]) if mp.is_file() else None)
        except ImageReadError as err:
            skipped.append((mp, str(err)))
            masks.append(None)
    return masks, skipped


#: ``image_size: auto`` reads the sizes of at most this many training images, evenly spread
SIZE_SAMPLE = 64


def original_sizes(good: ImagesLike, channels: int, limit: int = SIZE_SAMPLE) -> list[tuple[int, int]]:
    """``(height, width)`` of up to ``limit`` training images, evenly spread over the sorted folder (or every
    image of an array or list): what ``image_size: auto`` is resolved from.

    A file that cannot be read is passed over (the training set reports it); none readable gives
    ``[(128, 128)]``.
    """
    if not isinstance(good, str | Path):
        return [im.shape[:2] for im in decode_images(good, channels)]
    paths = list_images(good)
    sizes = []
    for p in paths[:: max(1, len(paths) // limit)][:limit]:
        try:
            sizes.append(read_image(p, channels).shape[:2])
        except ImageReadError:
            continue
    return sizes or [(128, 128)]
