"""``Detector``: preprocessing -> autoencoder -> anomaly map -> image score -> threshold.

pyod-like API where a score always means "higher = more anomalous"::

    det = Detector(DetectorConfig.from_yaml("configs/default.yaml")).fit("good_images/")
    det.score(images)          # (N,)
    det.anomaly_maps(images)   # (N, H, W) at the input size
    det.predict(images)        # (N,) bool, score > threshold_
    det.save("runs/a"); Detector.load("runs/a")

Fitted attributes end in ``_``: ``model_``, ``preprocessing_``, ``threshold_``, ``pixel_threshold_``,
``expected_fpr_``, ``norm_range_``, ``score_stats_``, ``val_scores_``, ``heatmap_range_``, ``history_``,
``train_info_`` (and, after ``fit`` only,
``val_sample_``: up to 8 held-out images at model size).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from anomaly_ae.config import DetectorConfig, ThresholdConfig
from anomaly_ae.data.dataset import ImageDataset
from anomaly_ae.data.images import (
    ImageReadError,
    Preprocessing,
    list_images,
    load_folder,
    read_image,
    split_holdout,
)
from anomaly_ae.evaluation.metrics import PixelAccumulator
from anomaly_ae.models import build_model
from anomaly_ae.postprocessing import ScoreStats, expected_fpr, fit_threshold, normalize
from anomaly_ae.scoring.maps import image_score, model_sigma, residual_map, resize_map, smooth
from anomaly_ae.scoring.tiling import pad_to_multiple, tiled_predict
from anomaly_ae.training.seeding import set_seed

ImagesLike = np.ndarray | Sequence[np.ndarray] | str | Path


@dataclass
class ScoredFile:
    """One file of a streamed batch: the decoded image with its score and map, or why it failed."""

    path: Path
    image: np.ndarray | None = None  # uint8 (H, W, C) as read
    score: float | None = None
    amap: np.ndarray | None = None  # (H, W) float32 at the image's size
    error: str | None = None
    stat: tuple[int, int] | None = None  # (size_bytes, mtime_ns) of the file as it was read


class NotFittedError(RuntimeError):
    """The detector was used before ``fit`` or ``load``."""


class Detector:
    """Autoencoder-based anomaly detector (see module docstring)."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        good: ImagesLike,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        checkpoint_state: dict | None = None,
    ) -> Detector:
        """Train on good images (a folder, or an array ``(N, H, W[, C])``) and calibrate the thresholds.

        A seeded ``holdout_fraction`` of the images is never trained on: it drives early stopping and
        the thresholds. Unreadable files in a folder are skipped and listed in
        ``train_info_["skipped"]``. With ``data.patch_size`` the model trains on random patches and
        reconstructs whole images (fully convolutional).

        Args:
            checkpoint_dir: write a checkpoint there after every epoch (:mod:`anomaly_ae.training.checkpoint`).
            resume: continue from the newest checkpoint in ``checkpoint_dir`` (same config and images).
            checkpoint_state: extra JSON-ready state stored in every checkpoint (e.g. the MLflow run id).

        Raises:
            TrainingDiverged: the loss became NaN/inf; the last good checkpoint is kept.
        """
        from anomaly_ae.training.checkpoint import (
            NanGuard,
            TrainingCheckpoint,
            TrainingDiverged,
            latest_checkpoint,
            restore,
        )

        cfg = self.config
        set_seed(cfg.train.seed)
        pre = Preprocessing(cfg.data.image_size, cfg.data.channels)
        images, skipped, sizes = self._load_training_images(good, pre)
        pre = pre.with_source_size(sizes)
        train_idx, val_idx = split_holdout(len(images), cfg.data.holdout_fraction, cfg.train.seed)
        train_src = _take(images, train_idx)
        val_images = np.stack([_at_model_size(images, i, pre) for i in val_idx])

        bs = cfg.train.batch_size
        patches = {"patch_size": cfg.data.patch_size, "patches_per_image": cfg.data.patches_per_image,
                   "workers": cfg.train.workers}
        train_ds = ImageDataset(
            train_src, pre, bs, augment=cfg.data.augment, shuffle=True, seed=cfg.train.seed, **patches
        )
        val_ds = ImageDataset(val_images, pre, bs, seed=cfg.train.seed + 1, **patches)
        model = build_model(cfg)
        if hasattr(model, "adapt"):  # models with fitted input normalisation (linear)
            model.adapt(pre(train_src) if isinstance(train_src, np.ndarray) else val_images.astype(np.float32) / 255)
        model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate))
        early = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.train.patience, restore_best_weights=True
        )
        ckpt = latest_checkpoint(Path(checkpoint_dir)) if resume and checkpoint_dir is not None else None
        if resume and ckpt is None:
            raise FileNotFoundError(f"no complete checkpoint to resume from in {checkpoint_dir}")
        initial_epoch = 0
        if ckpt is not None:
            restore(model, ckpt, val_ds[0][0])
            initial_epoch = ckpt.epoch
            train_ds.set_epoch(initial_epoch)
        extra: list[keras.callbacks.Callback] = []
        if getattr(model, "kl_warmup_epochs", 0):
            from anomaly_ae.training.callbacks import KLWarmup

            extra.append(KLWarmup(model.kl_warmup_epochs))
        guard = NanGuard()
        keeper: list[keras.callbacks.Callback] = []
        if checkpoint_dir is not None:
            keeper = [TrainingCheckpoint(Path(checkpoint_dir), early, ckpt, checkpoint_state)]
        start = time.perf_counter()
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=cfg.train.epochs, initial_epoch=initial_epoch,
            callbacks=[*extra, guard, early, *keeper, *callbacks], verbose=0,
        )
        fit_seconds = time.perf_counter() - start
        if guard.fault is not None:
            last = keeper[0].last_good if keeper else None  # type: ignore[attr-defined]
            where = (f"the last good checkpoint (epoch {last}) is kept in {checkpoint_dir}" if last
                     else "no checkpoint was written before it")
            raise TrainingDiverged(f"training diverged: {guard.fault}; {where}. Lower train.learning_rate "
                                   "or check the images, then train again (or --resume).")

        self.model_ = model
        self.preprocessing_ = pre
        merged = keeper[0].history if keeper else history.history  # type: ignore[attr-defined]
        self.history_ = {k: [float(v) for v in vals] for k, vals in merged.items()}
        self.calibrate(val_images)
        self.val_sample_ = val_images[:8]  # for reports; not saved
        val_loss = self.history_.get("val_loss", [float("nan")])
        self.train_info_ = {
            "n_train": int(len(train_idx)),
            "n_val": int(len(val_idx)),
            "epochs_run": len(val_loss),
            "best_epoch": int(np.nanargmin(val_loss)) + 1,
            "best_val_loss": float(np.nanmin(val_loss)),
            "fit_seconds": round(fit_seconds, 2),
            "resumed_at_epoch": initial_epoch or None,
            "skipped": [{"path": str(p), "error": e} for p, e in skipped],
        }
        return self

    def calibrate(
        self,
        good: ImagesLike,
        anomalous: ImagesLike | None = None,
        masks: Sequence[np.ndarray | None] | None = None,
        threshold: ThresholdConfig | None = None,
    ) -> Detector:
        """(Re)compute the image and pixel thresholds, score statistics and heatmap range. No retraining.

        Args:
            good: held-out good images (never the training images: an autoencoder reconstructs those
                too well). Their scores give the statistics and the ``quantile``/``mad``/``max``
                thresholds.
            anomalous: labelled anomalous images, needed by ``method: f1``.
            masks: bool ground-truth masks ``(H, W)`` at the size of each anomalous image (``None``
                for an image without one), needed by ``pixel_method: f1``.
            threshold: new threshold settings (replace ``config.threshold``).
        """
        self._check_fitted(need_threshold=False)
        if threshold is not None:
            self.config = self.config.model_copy(update={"threshold": threshold})
        t = self.config.threshold
        good_images = self._decode(good)
        scores, maps = self._score_model_size(self.preprocessing_(good_images))
        peaks = maps.reshape(len(maps), -1).max(axis=1)

        bad_images = self._decode(anomalous) if anomalous is not None else []
        if (t.method == "f1" or t.pixel_method == "f1") and not bad_images:
            raise ValueError("threshold method 'f1' needs anomalous images")
        bad_scores, bad_maps = self.score_images(bad_images) if bad_images else (np.empty(0), [])
        if t.method == "f1":
            labels = np.r_[np.zeros(len(scores), bool), np.ones(len(bad_scores), bool)]
            self.threshold_ = fit_threshold(np.r_[scores, bad_scores], "f1", labels=labels)
        else:
            self.threshold_ = fit_threshold(scores, t.method, t.quantile, t.mad_k)
        if t.pixel_method == "f1":
            if masks is None:
                raise ValueError("pixel_method 'f1' needs anomalous images with masks")
            acc = PixelAccumulator()
            for m, im in zip(maps, good_images, strict=True):
                acc.add(resize_map(m, im.shape[:2]))
            for amap, mask in zip(bad_maps, masks, strict=True):
                if mask is not None:
                    acc.add(amap, mask)
            self.pixel_threshold_ = acc.pixel_f1_max()[1]
        else:
            self.pixel_threshold_ = float(np.quantile(peaks, t.pixel_quantile))
        self.val_scores_ = scores
        self.score_stats_ = ScoreStats.of(scores)
        self.expected_fpr_ = expected_fpr(scores, self.threshold_)
        self.norm_range_ = (float(scores.min()), float(scores.max()))
        lo = float(np.median(maps))
        self.heatmap_range_ = (lo, max(self.pixel_threshold_, lo + 1e-12))
        return self

    def _load_training_images(
        self, good: ImagesLike, pre: Preprocessing
    ) -> tuple[np.ndarray | list[Path], list[tuple[Path, str]], list[tuple[int, int]]]:
        if not isinstance(good, str | Path):
            arr = [np.asarray(im) for im in (good if not isinstance(good, np.ndarray) else _as_batch(good))]
            stacked = np.stack([pre.resize(pre.convert_channels(im)) for im in arr])
            return stacked, [], [im.shape[:2] for im in arr]
        paths = list_images(good)
        if not paths:
            raise ValueError(f"no images found in {good}")
        h, w = pre.image_size
        budget = self.config.data.cache_mb * 2**20
        if len(paths) * h * w * pre.channels <= budget:
            loaded = load_folder(paths, pre)
            return loaded.images, loaded.failures, loaded.sizes
        readable, skipped, sizes = [], [], []  # too big for RAM: check every file once, then stream them
        for p in paths:
            try:
                sizes.append(read_image(p, pre.channels).shape[:2])
                readable.append(p)
            except ImageReadError as err:
                skipped.append((p, str(err)))
        return readable, skipped, sizes

    # ---------------------------------------------------------------- inference
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Model-size float32 ``(N, h, w, C)`` -> reconstructions, batched by ``scoring.batch_size``.

        Fully convolutional (patch) models get reflect-padded inputs (sides rounded up to a multiple of
        the down-sampling factor) and, with ``scoring.tile_size``, overlapping tiles.
        """
        self._check_fitted(need_threshold=False)
        s = self.config.scoring
        xp, (h, w) = pad_to_multiple(x, self.pad_factor())
        if s.tile_size is not None and max(xp.shape[1:3]) > s.tile_size:
            out = tiled_predict(self._predict_batched, xp, s.tile_size, s.tile_overlap)
        else:
            out = self._predict_batched(xp)
        return out[:, :h, :w]

    def pad_factor(self) -> int:
        """Image sides are padded to a multiple of this before reconstruction (1: no padding).

        Fully convolutional (patch) models take any size divisible by their down-sampling, 2 ** blocks.
        """
        fully_convolutional = None in tuple(getattr(self.model_, "image_shape", (0,)))
        return 2 ** len(self.config.model.widths) if fully_convolutional else 1

    def _predict_batched(self, x: np.ndarray) -> np.ndarray:
        bs = self.config.scoring.batch_size
        out = np.empty(x.shape, dtype=np.float32)
        for i in range(0, len(x), bs):
            batch = x[i : i + bs]
            n = len(batch)
            if n < bs:  # pad to a fixed batch shape: one compiled graph, no retracing
                batch = np.concatenate([batch, np.zeros((bs - n, *x.shape[1:]), x.dtype)])
            out[i : i + n] = keras.ops.convert_to_numpy(self.model_.predict_on_batch(batch))[:n]
        return out

    def _sigma(self) -> tuple[float, float]:
        pre = self.preprocessing_
        return model_sigma(self.config.scoring.smoothing_sigma, pre.image_size, pre.source_size or pre.image_size)

    def maps_from_reconstruction(self, x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
        """Model-size anomaly maps ``(N, h, w)`` of inputs ``x`` and their reconstructions ``x_hat``."""
        s = self.config.scoring
        res = residual_map(x, x_hat, s.metric, s.channel_reduction, s.ssim_weight)
        return smooth(res, self._sigma())

    def _score_model_size(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps = self.maps_from_reconstruction(x, self.reconstruct(x))
        s = self.config.scoring
        scores = image_score(maps, s.reduction, s.topk_fraction)
        if s.kl_weight > 0 and hasattr(self.model_, "kl_divergence"):  # VAE: distance of q(z|x) from the prior
            bs = s.batch_size
            kl = [keras.ops.convert_to_numpy(self.model_.kl_divergence(x[i : i + bs])) for i in range(0, len(x), bs)]
            scores = scores + s.kl_weight * np.concatenate(kl).astype(np.float64)
        return scores, maps

    def score_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Decoded images of any sizes -> (scores ``(N,)``, anomaly maps, each at its image's size).

        Scores are computed on the model-size maps, so they do not depend on the original size.
        """
        scores, maps = self._score_model_size(self.preprocessing_(list(images)))
        return scores, [resize_map(m, im.shape[:2]) for m, im in zip(maps, images, strict=True)]

    def iter_score(
        self, paths: Sequence[Path], batch_size: int | None = None, max_pixels: int | None = None,
        batch_megapixels: float | None = None,
    ) -> Iterator[ScoredFile]:
        """Stream ``paths`` in batches: one :class:`ScoredFile` per path, in order.

        A file that cannot be read yields ``error`` (its one-line reason) instead of a score. A batch
        ends at ``batch_size`` images or once its decoded images hold ``batch_megapixels``
        (default ``scoring.batch_megapixels``), so memory is bounded by pixels, not by image count.
        The next batch is decoded in a background thread while the model works on the current one
        (OpenCV releases the GIL): at most two batches of images are in memory at a time.
        ``max_pixels``: larger files are refused from their header (default:
        :func:`~anomaly_ae.data.images.max_pixels_default`). An anomaly map that is not finite (a numerical
        fault of the model) is reported as that file's error.
        """
        self._check_fitted(need_threshold=False)
        from concurrent.futures import ThreadPoolExecutor

        s = self.config.scoring
        limits = (self.preprocessing_.channels, max_pixels, batch_size or s.batch_size,
                  int((batch_megapixels or s.batch_megapixels) * 1e6))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
            pending = pool.submit(decode_batch, paths, 0, *limits) if paths else None
            while pending is not None:
                batch = pending.result()
                pending = pool.submit(decode_batch, paths, batch.end, *limits) if batch.end < len(paths) else None
                yield from self._score_decoded(batch)

    def _score_decoded(self, batch: DecodedBatch) -> Iterator[ScoredFile]:
        scored = iter(())
        if batch.images:
            scores, maps = self.score_images(list(batch.images.values()))
            scored = iter(zip(scores, maps, strict=True))
        for i, p in enumerate(batch.paths):
            stat = batch.stats.get(i)
            if i in batch.errors:
                yield ScoredFile(p, error=batch.errors[i], stat=stat)
                continue
            s, amap = next(scored)
            if not (np.isfinite(s) and np.isfinite(amap).all()):
                yield ScoredFile(p, error="anomaly map is not finite (NaN/inf): a numerical fault of the model",
                                 stat=stat)
                continue
            yield ScoredFile(p, image=batch.images[i], score=float(s), amap=amap, stat=stat)

    def score(self, images: ImagesLike) -> np.ndarray:
        """Image scores ``(N,)``; higher = more anomalous."""
        self._check_fitted(need_threshold=False)
        return self.score_images(self._decode(images))[0]

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        """Scores on a [0, 1] scale where the image threshold is 0.5 (see :func:`thresholds.normalize`)."""
        self._check_fitted(need_threshold=True)
        return normalize(scores, self.threshold_, *self.norm_range_)

    def anomaly_maps(self, images: ImagesLike) -> np.ndarray:
        """Anomaly maps ``(N, H, W)`` at the input size (inputs of one size; else use ``score_images``)."""
        self._check_fitted(need_threshold=False)
        maps = self.score_images(self._decode(images))[1]
        return np.stack(maps)

    def predict(self, images: ImagesLike) -> np.ndarray:
        """``(N,)`` bool: ``score > threshold_``."""
        self._check_fitted(need_threshold=True)
        return self.score(images) > self.threshold_

    def predict_masks(self, images: ImagesLike) -> np.ndarray:
        """``(N, H, W)`` bool defect masks: ``anomaly map > pixel_threshold_`` (inputs of one size)."""
        self._check_fitted(need_threshold=True)
        return self.anomaly_maps(images) > self.pixel_threshold_

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the self-contained model directory (see :mod:`anomaly_ae.artifact`)."""
        from anomaly_ae.artifact import save_detector

        self._check_fitted(need_threshold=True)
        return save_detector(self, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """Restore a detector saved with :meth:`save` (Keras ``safe_mode=True``)."""
        from anomaly_ae.artifact import load_detector

        return load_detector(Path(path))

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self, need_threshold: bool) -> None:
        if not hasattr(self, "model_") or (need_threshold and not hasattr(self, "threshold_")):
            raise NotFittedError("this Detector is not fitted yet: call fit() or Detector.load() first")

    def _decode(self, images: ImagesLike) -> list[np.ndarray]:
        if isinstance(images, str | Path):
            p = Path(images)
            paths = list_images(p) if p.is_dir() else [p]
            return [read_image(q, self.preprocessing_.channels) for q in paths]
        if isinstance(images, np.ndarray):
            return list(_as_batch(images))
        return [np.asarray(im) for im in images]

    def _preprocess(self, images: ImagesLike) -> np.ndarray:
        return self.preprocessing_(self._decode(images))


@dataclass
class DecodedBatch:
    """Consecutive files ``paths`` (ending before index ``end`` of the full list), decoded or not."""

    paths: Sequence[Path]
    end: int
    images: dict[int, np.ndarray]  # position in the batch -> uint8 (H, W, C)
    errors: dict[int, str]  # position -> one-line reason
    stats: dict[int, tuple[int, int]]  # position -> (size_bytes, mtime_ns) as read


def decode_batch(
    paths: Sequence[Path], start: int, channels: int, max_pixels: int | None, max_images: int, pixel_budget: int
) -> DecodedBatch:
    """Decode files from ``paths[start]`` on until ``max_images`` are taken or the decoded images hold
    ``pixel_budget`` pixels (at least one file is always taken)."""
    images: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    stats: dict[int, tuple[int, int]] = {}
    pixels, end = 0, start
    while end < len(paths) and end - start < max_images and (end == start or pixels < pixel_budget):
        i, p = end - start, paths[end]
        end += 1
        try:
            st = os.stat(p)
            stats[i] = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass  # read_image says why
        try:
            images[i] = read_image(p, channels, max_pixels)
            pixels += images[i].shape[0] * images[i].shape[1]
        except ImageReadError as err:
            errors[i] = str(err)
    return DecodedBatch(paths[start:end], end, images, errors, stats)


def _as_batch(images: np.ndarray) -> np.ndarray:
    """``(H, W)``/``(H, W, C)`` single image or ``(N, H, W[, C])`` batch -> a batch."""
    if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4)):
        return images[None]
    return images


def _take(images: np.ndarray | list[Path], idx: np.ndarray) -> np.ndarray | list[Path]:
    if isinstance(images, np.ndarray):
        return images[idx]
    return [images[i] for i in idx]


def _at_model_size(images: np.ndarray | list[Path], i: int, pre: Preprocessing) -> np.ndarray:
    if isinstance(images, np.ndarray):
        return images[i]
    return pre.resize(read_image(images[i], pre.channels))
