"""Synthetic defects pasted onto good images: the training signal of repair training and the learned map,
and the test set of the label-free self-check.

After DRAEM (Zavrtanik et al., ICCV 2021): a mask from thresholded Perlin noise, filled with other
content and blended in. Perlin blobs miss shapes real defects have, so the mask can also be a thin
scratch or crack (a random polyline 1-4 px wide), small pits (down to ~0.1% of the image) or a chip
broken out of an image edge. The content is (a) another good image or a shifted copy of the same one,
photometrically changed with albumentations, (b) structured noise, or (c) a texture: an image of
``data.anomaly_source_dir`` (e.g. DTD) or, without one, a procedural texture
(:mod:`anomaly_ae.data.textures`). It is blended in with a factor drawn from ``blend``.

Two shapes (spot clusters, wavy stains), two texture families and one content source (the surface
shaded in place) are kept for the self-check (``CHECK_SHAPES``, ``CHECK_SOURCES``,
``textures.CHECK_FAMILIES``): training never draws them (``tests/test_textures.py``).

Guarantees (``tests/test_anomalies.py``): pixels outside the returned mask are untouched; the mask is
exactly the set of changed pixels (a change smaller than ``min_change`` grey levels is undone, so
the network is never asked to find an invisible defect); the same seed gives the same output.

Images are uint8 ``(H, W, C)``; masks bool ``(H, W)``. NumPy/OpenCV/albumentations only (no Keras):
it runs in the ``PyDataset`` workers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from anomaly_ae.data.images import ImageReadError, Preprocessing, list_images, read_image
from anomaly_ae.data.noise import perlin_noise
from anomaly_ae.data.textures import FAMILIES, TRAIN_FAMILIES, texture

#: what repair training draws (``train.synthetic_anomalies``)
SHAPES = ("perlin", "scratch", "pit", "chip")
SOURCES = ("image", "noise", "texture")
#: held out of training, for the self-check only: defects unlike the ones the model learned from
CHECK_SHAPES = ("spots", "stain")
CHECK_SOURCES = ("shade",)


# ----------------------------------------------------------------------------------------- masks
def perlin_mask(h: int, w: int, rng: np.random.Generator, threshold: float = 0.5) -> np.ndarray:
    """Thresholded Perlin noise at a random scale (2**0..2**6 cells per axis) and rotation (+-90 degrees)."""
    side = int(np.ceil(np.hypot(h, w)))  # a rotated square that still covers the image
    res = tuple(int(min(2 ** rng.integers(0, 7), side // 2 or 1)) for _ in range(2))
    noise = perlin_noise((side, side), res, rng)  # type: ignore[arg-type]
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-90, 90)), 1.0)
    noise = cv2.warpAffine(noise, rot, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    top, left = (side - h) // 2, (side - w) // 2
    return noise[top : top + h, left : left + w] > threshold


def scratch_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A thin scratch or crack: a random polyline of 2-6 segments, 1-4 px wide, 10-60% of the image long."""
    canvas = np.zeros((h, w), np.uint8)
    n = int(rng.integers(2, 7))
    length = rng.uniform(0.1, 0.6) * max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    pts = [rng.uniform((0, 0), (w, h))]
    for _ in range(n):
        angle += float(np.clip(rng.normal(0, 0.4), -0.8, 0.8))  # cracks wander, but never fold back
        pts.append(pts[-1] + length / n * np.array([np.cos(angle), np.sin(angle)]))
    poly = np.round(np.array(pts)).astype(np.int32)[None]
    # OpenCV thickness 1 / 2 / 3 draws lines about 1 / 2.5 / 4 px wide
    cv2.polylines(canvas, poly, False, 1, thickness=int(rng.integers(1, 4)), lineType=cv2.LINE_8)
    return canvas.astype(bool)


def pit_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """1-4 small pits: ellipses of 0.1-1% of the image area each (at least 1 px radius)."""
    canvas = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        area = rng.uniform(0.001, 0.01) * h * w
        ratio = rng.uniform(0.5, 1.0)
        a = max(1.0, np.sqrt(area / (np.pi * ratio)))
        axes = (int(round(a)), int(round(max(1.0, a * ratio))))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return canvas.astype(bool)


def chip_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A chip broken out of one image edge: a polygon on the edge reaching 5-25% into the image."""
    canvas = np.zeros((h, w), np.uint8)
    edge = int(rng.integers(0, 4))  # top, bottom, left, right
    along, across = (w, h) if edge < 2 else (h, w)
    start = rng.uniform(0, along * 0.8)
    width = rng.uniform(0.1, 0.4) * along
    depth = rng.uniform(0.05, 0.25) * across
    inner = np.sort(rng.uniform(start, start + width, int(rng.integers(1, 4))))
    pts = [(start, 0.0), *[(a, rng.uniform(0.3, 1.0) * depth) for a in inner], (start + width, 0.0)]
    arr = np.array(pts)
    if edge == 1 or edge == 3:  # measured from the far edge
        arr[:, 1] = across - 1 - arr[:, 1]
    xy = arr if edge < 2 else arr[:, ::-1]
    cv2.fillPoly(canvas, [np.round(xy).astype(np.int32)], 1)
    return canvas.astype(bool)


def windowed(make: Any, h: int, w: int, rng: np.random.Generator, side: tuple[float, float]) -> np.ndarray:
    """A mask drawn by ``make`` in a random window (sides: fractions ``side`` of the image's) of an empty mask."""
    f = rng.uniform(*side)
    wh, ww = max(2, int(round(h * f))), max(2, int(round(w * f)))
    top, left = int(rng.integers(0, h - wh + 1)), int(rng.integers(0, w - ww + 1))
    out = np.zeros((h, w), bool)
    out[top : top + wh, left : left + ww] = make(wh, ww, rng)
    return out


def spots_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A cluster of 3-15 tiny spots (0.02-0.2% of the image each) within a region of 10-30% of the image side,
    as pitting or spatter comes."""
    canvas = np.zeros((h, w), np.uint8)
    side = rng.uniform(0.1, 0.3)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    for _ in range(int(rng.integers(3, 16))):
        r = max(1.0, np.sqrt(rng.uniform(0.0002, 0.002) * h * w / np.pi))
        y = int(np.clip(cy + rng.normal(0, side * h / 3), 0, h - 1))
        x = int(np.clip(cx + rng.normal(0, side * w / 3), 0, w - 1))
        axes = (int(round(r)), int(round(max(1.0, r * rng.uniform(0.5, 1.0)))))
        cv2.ellipse(canvas, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return canvas.astype(bool)


def stain_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """One irregular stain: an ellipse (0.2-3% of the image) whose radius is modulated by noise along its
    outline, so its edge is wavy rather than a Perlin blob's."""
    area = rng.uniform(0.002, 0.03) * h * w
    ratio = rng.uniform(0.4, 1.0)
    a = max(2.0, np.sqrt(area / (np.pi * ratio)))
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    wobble = 1 + sum(rng.uniform(0, 0.25) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    rot = rng.uniform(0, np.pi)
    x, y = a * wobble * np.cos(t), a * ratio * wobble * np.sin(t)
    pts = np.c_[cx + x * np.cos(rot) - y * np.sin(rot), cy + x * np.sin(rot) + y * np.cos(rot)]
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


MASKS = {"perlin": perlin_mask, "scratch": scratch_mask, "pit": pit_mask, "chip": chip_mask,
         "spots": spots_mask, "stain": stain_mask}


# --------------------------------------------------------------------------------------- content
def photometric(seed: int, channels: int = 3) -> Any:
    """albumentations pipeline of 3 of: brightness/contrast, hue (colour only), solarize, posterize, blur,
    noise, invert."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else it looks for updates over the network
    import albumentations as A

    hue = [A.HueSaturationValue(hue_shift_limit=40, sat_shift_limit=40, val_shift_limit=30, p=1.0)]
    return A.Compose([A.SomeOf([
        A.RandomBrightnessContrast(brightness_limit=0.4, contrast_limit=0.5, p=1.0),
        *(hue if channels == 3 else []),
        A.Solarize(threshold_range=(0.2, 0.8), p=1.0),
        A.Posterize(num_bits=(2, 5), p=1.0),
        A.GaussianBlur(blur_limit=(3, 7), p=1.0),
        A.GaussNoise(std_range=(0.05, 0.25), p=1.0),
        A.InvertImg(p=1.0),
    ], n=3, replace=False)], seed=seed)


def structured_noise(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 ``(H, W, C)``: Perlin noise at a random scale with random levels per channel."""
    h, w, c = shape
    res = (int(2 ** rng.integers(1, 6)), int(2 ** rng.integers(1, 6)))
    noise = perlin_noise((h, w), res, rng)[..., None]
    lo = rng.uniform(0, 200, c)
    span = rng.uniform(30, 255, c)
    return np.clip(lo + (noise * 0.5 + 0.5) * span, 0, 255).astype(np.uint8)


def random_crop_like(source: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A random ``(H, W, C)`` region of ``source`` (resized up first when it is smaller), channels matched."""
    h, w, c = shape
    src = source if source.ndim == 3 else source[..., None]
    if src.shape[0] < h or src.shape[1] < w:
        f = max(h / src.shape[0], w / src.shape[1])
        src = cv2.resize(src, (int(np.ceil(src.shape[1] * f)), int(np.ceil(src.shape[0] * f))))
        src = src if src.ndim == 3 else src[..., None]
    top = int(rng.integers(0, src.shape[0] - h + 1))
    left = int(rng.integers(0, src.shape[1] - w + 1))
    crop = src[top : top + h, left : left + w]
    return np.ascontiguousarray(Preprocessing((h, w), c).convert_channels(crop))


def shaded(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image itself darker or brighter (gain 0.4-0.8 or 1.25-1.8) and maybe a little blurred: the
    same surface, changed in place, as a pit, a burn or a stain changes it."""
    gain = rng.uniform(0.4, 0.8) if rng.random() < 0.6 else rng.uniform(1.25, 1.8)
    out = image.astype(np.float32) * gain
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5)).reshape(image.shape)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def blend(image: np.ndarray, content: np.ndarray, mask: np.ndarray, beta: float,
          min_change: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with ``beta * content + (1 - beta) * image`` inside ``mask``; returns (image, changed mask).

    A pixel whose change is below ``min_change`` grey levels in every channel keeps its original
    value, so the returned mask is exactly the set of changed pixels.
    """
    m = mask[..., None]
    mixed = np.round(beta * content.astype(np.float32) + (1.0 - beta) * image.astype(np.float32))
    out = np.where(m, np.clip(mixed, 0, 255).astype(np.uint8), image)
    diff = np.abs(out.astype(np.int16) - image.astype(np.int16)).max(axis=-1)
    changed = diff >= max(1, min_change)
    return np.where(changed[..., None], out, image), changed


# ------------------------------------------------------------------------------------ the generator
@dataclass
class AnomalySynthesizer:
    """Pastes one synthetic defect into a uint8 ``(H, W, C)`` image; see the module docstring.

    Args:
        shapes: relative frequency of each mask shape (``SHAPES``).
        sources: relative frequency of each content source (``SOURCES``); ``texture`` needs ``textures``.
        blend: range of the blend factor (1: the content replaces the pixels).
        min_change: smallest change in grey levels that counts as a defect pixel.
        textures: uint8 images to cut texture content from (``data.anomaly_source_dir``); without them the
            ``texture`` source draws procedural textures of ``texture_families``
            (:mod:`anomaly_ae.data.textures`).
        texture_families: procedural texture families of the ``texture`` source.
        seed: seeds the photometric augmentation's own generator (per call it is reseeded from ``rng``).
        perlin_window: if set, a Perlin blob is drawn in a window whose sides are this range of fractions
            of the image's, at a random place (small blobs, as most real defects are small).
    """

    shapes: Mapping[str, float] = field(default_factory=lambda: {"perlin": 0.5, "scratch": 0.2, "pit": 0.2,
                                                                  "chip": 0.1})
    sources: Mapping[str, float] = field(default_factory=lambda: {"image": 0.6, "noise": 0.2, "texture": 0.2})
    blend: tuple[float, float] = (0.2, 1.0)
    min_change: int = 3
    textures: Sequence[np.ndarray] = ()
    seed: int = 0
    perlin_window: tuple[float, float] | None = None
    texture_families: Sequence[str] = TRAIN_FAMILIES

    def __post_init__(self) -> None:
        shapes, sources = (*SHAPES, *CHECK_SHAPES), (*SOURCES, *CHECK_SOURCES)
        unknown = ((set(self.shapes) - set(shapes)) | (set(self.sources) - set(sources))
                   | (set(self.texture_families) - set(FAMILIES)))
        if unknown:
            raise ValueError(f"unknown shape, source or texture family {sorted(unknown)}; shapes: {shapes}, "
                             f"sources: {sources}, families: {FAMILIES}")
        has_texture = len(self.textures) > 0 or len(self.texture_families) > 0
        sources = {k: v for k, v in self.sources.items() if v > 0 and (k != "texture" or has_texture)}
        if not any(v > 0 for v in self.shapes.values()) or not sources:
            raise ValueError("synthetic anomalies need at least one shape and one content source")
        self._shape_names, self._shape_p = _weights(self.shapes)
        self._source_names, self._source_p = _weights(sources)
        self._photometric: dict[int, Any] = {}  # channels -> pipeline, built on first use
        self._lock = threading.Lock()  # PyDataset workers are threads; the pipeline's seed is shared state

    def mask(self, h: int, w: int, rng: np.random.Generator, tries: int = 8) -> np.ndarray:
        """A non-empty bool mask ``(h, w)`` of a random shape (Perlin noise can come out empty: drawn again)."""
        for _ in range(tries):
            kind = self._shape_names[rng.choice(len(self._shape_names), p=self._shape_p)]
            m = (windowed(perlin_mask, h, w, rng, self.perlin_window) if kind == "perlin" and self.perlin_window
                 else MASKS[kind](h, w, rng))
            if m.any():
                return m
        return pit_mask(h, w, rng)  # never empty

    def content(self, image: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None) -> np.ndarray:
        """What is pasted in: uint8 like ``image``."""
        source = self._source_names[rng.choice(len(self._source_names), p=self._source_p)]
        if source == "noise":
            return structured_noise(image.shape, rng)
        if source == "shade":  # the same surface in place, darker or brighter: no photometric mix on top
            return shaded(image, rng)
        if source == "texture" and len(self.textures):
            tex = self.textures[int(rng.integers(len(self.textures)))]
            base = random_crop_like(tex, image.shape, rng)
        elif source == "texture":
            family = self.texture_families[int(rng.integers(len(self.texture_families)))]
            base = texture(family, image.shape, rng)  # type: ignore[arg-type]
        else:  # another good image, or the same one shifted and flipped
            base = donor if donor is not None and donor.shape == image.shape else _shifted(image, rng)
        channels = image.shape[2]
        with self._lock:
            if channels not in self._photometric:
                self._photometric[channels] = photometric(self.seed, channels)
            self._photometric[channels].set_random_seed(int(rng.integers(2**31)))
            out = self._photometric[channels](image=np.ascontiguousarray(base))["image"]
        return out.reshape(image.shape)

    def __call__(self, image: np.ndarray, rng: np.random.Generator,
                 donor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``image`` uint8 ``(H, W, C)`` -> (image with one defect, bool mask ``(H, W)`` of the changed pixels)."""
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"expected a uint8 (H, W, C) image, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        for _ in range(4):  # content too close to the image changes nothing: draw again (rarely needed)
            mask = self.mask(h, w, rng)
            beta = float(rng.uniform(*self.blend))
            out, changed = blend(image, self.content(image, rng, donor), mask, beta, self.min_change)
            if changed.any():
                break
        return out, changed


def _weights(d: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    names = [k for k, v in d.items() if v > 0]
    p = np.array([d[k] for k in names], np.float64)
    return names, p / p.sum()


def _shifted(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same image rolled by a random offset and maybe flipped: texture of the part, out of place."""
    h, w = image.shape[:2]
    out = np.roll(image, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def synthesize_batch(images: np.ndarray, synth: AnomalySynthesizer, rng: np.random.Generator,
                     probability: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A defect in each of ``images`` (uint8 ``(N, H, W, C)``) with ``probability``; returns (images, masks).

    Donors are other images of the batch (or the image itself when the batch has one).
    """
    out = images.copy()
    masks = np.zeros(images.shape[:3], bool)
    n = len(images)
    for i in range(n):
        if rng.random() >= probability:
            continue
        donor = images[(i + 1 + int(rng.integers(n - 1))) % n] if n > 1 else None
        out[i], masks[i] = synth(images[i], rng, donor)
    return out, masks


def load_textures(folder: str | os.PathLike[str], channels: int, limit: int = 200,
                  max_side: int = 512) -> list[np.ndarray]:
    """Up to ``limit`` readable images of ``folder`` (sorted, recursively), shrunk to ``max_side``."""
    out: list[np.ndarray] = []
    for p in list_images(folder)[:limit]:
        try:
            im = read_image(p, channels)
        except ImageReadError:
            continue
        f = max_side / max(im.shape[:2])
        if f < 1:
            size = (max(1, round(im.shape[1] * f)), max(1, round(im.shape[0] * f)))
            im = cv2.resize(im, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], channels)
        out.append(im)
    return out
