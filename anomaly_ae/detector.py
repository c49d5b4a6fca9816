"""``Detector``: preprocessing -> autoencoder -> anomaly map -> image score -> post-processing.

pyod-like API where a score always means "higher = more anomalous"::

    det = Detector().fit("good_images/")   # the default preset; Detector(DetectorConfig.from_preset("fast"))
    det.score(images)          # (N,)
    det.anomaly_maps(images)   # (N, H, W) at the input size
    det.predict(images)        # (N,) bool, score > threshold_
    det.save("runs/a"); Detector.load("runs/a")

``fit`` is three steps, each owned elsewhere: training (:func:`anomaly_ae.training.fit.train_autoencoder`:
data, hold-out split, loop), the self-check that chooses the scoring (:mod:`anomaly_ae.evaluation.self_check`)
and the calibration of the :class:`~anomaly_ae.postprocessing.PostProcessor`. Streaming a folder through a
fitted detector is a pipeline's work (:mod:`anomaly_ae.pipelines.score_batch`).

``config`` stays what the user passed (as scikit-learn keeps constructor parameters); ``config_`` is the
fitted one: ``image_size: auto`` resolved and the scoring chosen by ``scoring.select: auto`` (what
``detector.json`` stores, and what a loaded detector holds in both).

Fitted attributes end in ``_``: ``config_``, ``model_``, ``preprocessing_``, ``postprocessor_``, ``history_``,
``train_info_``, ``source_dir_`` (the model directory it was loaded from or saved to, else ``None``)
(and, after ``fit`` only, ``holdout_images_``: the held-out good images at model size, uint8, and
``val_sample_``: the first 8 of them).
``threshold_``, ``pixel_threshold_``, ``expected_fpr_``, ``norm_range_``, ``score_stats_``,
``val_scores_`` and ``heatmap_range_`` read the post-processor's values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from anomaly_ae.artifact import ModelState, load_model_dir, save_calibration, save_model_dir
from anomaly_ae.config import DetectorConfig, ThresholdConfig
from anomaly_ae.data.images import model_size_uint8
from anomaly_ae.data.loading import ImagesLike, decode_images
from anomaly_ae.evaluation.metrics import PixelAccumulator
from anomaly_ae.evaluation.self_check import MAX_GOOD as SELF_CHECK_MAX_GOOD
from anomaly_ae.evaluation.self_check import SELF_CHECK_SEED, candidates, report, select_scoring, synthetic_defects
from anomaly_ae.postprocessing import PostProcessor, ScoreStats
from anomaly_ae.progress import Progress, as_progress
from anomaly_ae.scoring import reconstruction
from anomaly_ae.scoring.maps import image_score, model_sigma, residual_map, resize_map, smooth, source_ratio
from anomaly_ae.scoring.position import PositionReference
from anomaly_ae.training.fit import train_autoencoder

__all__ = ["Detector", "ImagesLike", "NotFittedError"]


#: ``tune`` fits a position reference only with at least this many images in each half (halving fewer would
#: leave the self-check too few good images)
TUNE_MIN_HALF = 20


class NotFittedError(RuntimeError):
    """The detector was used before ``fit`` or ``load``."""


class Detector:
    """Autoencoder-based anomaly detector (see module docstring)."""

    def __init__(self, config: DetectorConfig | None = None, verbose: int | Progress = 0) -> None:
        """``config``: what to train; without one, the ``default`` preset (:meth:`DetectorConfig.from_preset`),
        the detector ``anomaly-ae train`` trains without ``--config``. ``verbose``: 0 is silent but for
        warnings; 1 shows what ``anomaly-ae train`` / ``score`` show on stderr (a stage line as each step
        begins, bars with images/s, ETA and the running loss)."""
        self.config = config if config is not None else DetectorConfig.from_preset()
        self.verbose = verbose

    def __repr__(self) -> str:
        """``Detector(conv, 208x512x3, fitted, threshold=0.1528, map=learned)`` (or ``not fitted``)."""
        cfg = getattr(self, "config_", self.config)
        pre = getattr(self, "preprocessing_", None)
        size = pre.image_size if pre is not None else cfg.data.image_size
        shape = f"{'x'.join(map(str, size)) if size != 'auto' else 'auto'}x{cfg.data.channels}"
        if not hasattr(self, "model_"):
            return f"Detector({cfg.model.name}, {shape}, not fitted)"
        threshold = f"threshold={self.postprocessor_.threshold:.6g}" if hasattr(self, "postprocessor_") else \
            "not calibrated"
        return f"Detector({cfg.model.name}, {shape}, fitted, {threshold}, map={cfg.scoring.metric})"

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        good: ImagesLike,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        checkpoint_state: dict | None = None,
        record: Mapping[str, Any] | None = None,
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
            record: extra JSON-ready entries for ``train_info_`` (saved in ``detector.json``).

        Raises:
            TrainingDiverged: the loss became NaN/inf; the last good checkpoint is kept.
        """
        progress = as_progress(self.verbose)
        trained = train_autoencoder(self.config, good, progress, callbacks, checkpoint_dir, resume, checkpoint_state)
        self.config_ = trained.config
        self.model_ = trained.model
        self.preprocessing_ = trained.preprocessing
        self.history_ = trained.history
        val_images, n_val = trained.holdout, len(trained.holdout)
        progress.stage(f"self-check: seeded synthetic defects on the {n_val} held-out good images"
                       + (", choosing the scoring" if self.config_.scoring.select == "auto" else ""))
        check = self.self_check(val_images, select=self.config_.scoring.select == "auto", reference=trained.reference)
        progress.stage(f"calibrating the thresholds on the {n_val} held-out good images")
        self.calibrate(val_images)
        self.holdout_images_ = val_images  # the self-check's good images; not saved
        self.val_sample_ = val_images[:8]  # for reports; not saved
        self.train_info_ = {**trained.info, "self_check": check, **(record or {})}
        return self

    def self_check(self, good: np.ndarray, select: bool = False, seed: int = SELF_CHECK_SEED,
                   reference: np.ndarray | None = None) -> dict[str, Any]:
        """Synthetic image AUROC, pixel AUROC and AUPRO on held-out good images (see
        :mod:`anomaly_ae.evaluation.self_check`).

        Args:
            good: uint8 ``(N, h, w, C)`` good images at model size that the model was not trained on (at
                most :data:`~anomaly_ae.evaluation.self_check.MAX_GOOD` of them are used, a seeded subset).
            select: also try every map metric the model has, smoothing sigmas, image reductions and (with
                ``reference``) the per-position normalization, and keep the best in ``config_.scoring``
                (``scoring.select: auto``); recalibrate afterwards.
            reference: uint8 ``(M, h, w, C)`` good images that are *not* in ``good`` (training images): the
                per-position reference of ``scoring.position_norm`` is fitted on their maps and kept in
                ``position_reference_``. Without it a configured ``position_norm`` uses the stored one.

        Returns:
            The ``self_check`` entry of ``train_info_``: the figures of the (selected) setting on a second
            set of defects with the image AUROC's 95% interval (``selection``: its figures on the set that
            chose it), the setting, how many images and candidates it used and the seed.
        """
        self.check_fitted(need_threshold=False)
        s = self.config_.scoring
        if len(good) > SELF_CHECK_MAX_GOOD:  # a seeded subset: bounded memory and time for large sets
            keep = np.sort(np.random.default_rng(seed).choice(len(good), SELF_CHECK_MAX_GOOD, replace=False))
            good = good[keep]
        bad, masks = synthetic_defects(good, seed)
        x_good, x_bad = self.preprocessing_(good), self.preprocessing_(bad)
        xh_good, xh_bad = self.reconstruct(x_good), self.reconstruct(x_bad)
        pre = self.preprocessing_
        c = candidates(s.metric, s.smoothing_sigma, s.reduction, s.position_norm, select,
                       reconstruction.has_learned_map(self.model_), source_ratio(pre.image_size, pre.original_hw),
                       reference is not None)
        metrics, position = c.metrics, c.position
        raw = {m: (self.raw_maps(x_good, xh_good, m), self.raw_maps(x_bad, xh_bad, m)) for m in metrics}
        refs: dict[str, np.ndarray | PositionReference] = {}
        if True in position and reference is not None:
            x_ref = self.preprocessing_(reference)
            xh_ref = self.reconstruct(x_ref)
            refs = {m: self.raw_maps(x_ref, xh_ref, m) for m in metrics}
        elif True in position:
            refs = {s.metric: self.position_reference()}
        sig = [(v, self.smoothing_sigma(v)) for v in c.sigmas]
        rows = select_scoring(raw, masks, sig, c.reductions, s.topk_fraction, refs, position)
        best = rows[0]  # without select, the configured setting is the only candidate
        self.candidates_ = rows  # every candidate's figures, best first (not saved)
        if select:
            scoring = s.model_copy(update={"metric": best.metric, "smoothing_sigma": best.smoothing_sigma,
                                           "reduction": best.reduction, "position_norm": best.position_norm})
            self.config_ = self.config_.model_copy(update={"scoring": scoring})
        if best.position_norm:
            self.position_reference_ = best.reference
        elif select:
            self.position_reference_ = None
        # reported on a second set of defects: the best of many candidates on the set that chose it is biased up
        bad2, masks2 = synthetic_defects(good, seed + 1)
        x_bad2 = self.preprocessing_(bad2)
        bad2_raw = self.raw_maps(x_bad2, self.reconstruct(x_bad2), best.metric)
        best_sigma = next(ms for v, ms in sig if v == best.smoothing_sigma)
        figures = report(best, raw[best.metric][0], bad2_raw, masks2, best_sigma, s.topk_fraction, seed + 1)
        return {**figures, "n_good": int(len(good)), "n_defective": int(len(bad2)), "seed": int(seed),
                "candidates": len(rows), "selected": bool(select)}

    def tune(self, good: ImagesLike, seed: int = SELF_CHECK_SEED) -> dict[str, Any]:
        """Pick the scoring (map metric, smoothing, reduction) by the self-check on ``good`` images.

        ``good``: good images the model was not trained on (a folder, array or list, any size). With at
        least ``2 * TUNE_MIN_HALF`` of them, a seeded half fits the per-position reference
        (``scoring.position_norm`` is a candidate) and the other half is the self-check's. The
        result replaces ``train_info_["self_check"]``; call :meth:`calibrate` afterwards (the
        thresholds of the old scoring no longer apply).
        """
        self.check_fitted(need_threshold=False)
        pre = self.preprocessing_
        images = np.stack([pre.resize(pre.convert_channels(im)) for im in self._decode(good)])
        if images.dtype != np.uint8:  # float input in [0, 1]
            images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        reference = None
        if len(images) >= 2 * TUNE_MIN_HALF:  # a seeded half fits position_norm's reference, the rest checks
            order = np.random.default_rng(seed).permutation(len(images))
            half = len(images) // 2
            reference, images = images[np.sort(order[:half])], images[np.sort(order[half:])]
        check = self.self_check(images, select=True, seed=seed, reference=reference)
        self.train_info_ = {**getattr(self, "train_info_", {}), "self_check": check}
        return check

    def calibrate(
        self,
        good: ImagesLike,
        anomalous: ImagesLike | None = None,
        masks: Sequence[np.ndarray | None] | None = None,
        threshold: ThresholdConfig | None = None,
    ) -> Detector:
        """(Re)fit the :class:`~anomaly_ae.postprocessing.PostProcessor`: thresholds, statistics, ranges.

        No retraining.

        Args:
            good: held-out good images (never the training images: an autoencoder reconstructs those
                too well). Their scores give the statistics and the ``quantile``/``mad``/``max``
                thresholds.
            anomalous: labelled anomalous images, needed by ``method: f1``.
            masks: bool ground-truth masks ``(H, W)`` at the size of each anomalous image (``None``
                for an image without one), needed by ``pixel_method: f1``.
            threshold: new threshold settings (replace ``config_.threshold``).
        """
        self.check_fitted(need_threshold=False)
        if threshold is not None:
            self.config_ = self.config_.model_copy(update={"threshold": threshold})
        t = self.config_.threshold
        good_images = self._decode(good)
        bs = self.config_.scoring.batch_size  # in batches: the float32 copies never hold the whole set
        parts = [self._score_model_size(self.preprocessing_(good_images[i : i + bs]))
                 for i in range(0, len(good_images), bs)]
        scores, maps = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        bad_images = self._decode(anomalous) if anomalous is not None else []
        if (t.method == "f1" or t.pixel_method == "f1") and not bad_images:
            raise ValueError("threshold method 'f1' needs anomalous images")
        bad_scores, bad_maps = self.score_images(bad_images) if bad_images else (np.empty(0), [])
        pixels = None
        if t.pixel_method == "f1":
            if masks is None:
                raise ValueError("pixel_method 'f1' needs anomalous images with masks")
            pixels = PixelAccumulator()
            for m, im in zip(maps, good_images, strict=True):
                pixels.add(resize_map(m, im.shape[:2], self.preprocessing_.box(im.shape[:2])))
            for amap, mask in zip(bad_maps, masks, strict=True):
                if mask is not None:
                    pixels.add(amap, mask)
        self.postprocessor_ = PostProcessor.fit(scores, maps, t, bad_scores, pixels)
        self.source_dir_ = None  # the thresholds now differ from any saved model directory
        return self

    # ----------------------------------------------- the post-processor's values
    @property
    def threshold_(self) -> float:
        """Image threshold: ``score > threshold_`` is anomalous."""
        return self._post().threshold

    @property
    def pixel_threshold_(self) -> float:
        """``anomaly map > pixel_threshold_`` is a defect pixel."""
        return self._post().pixel_threshold

    @property
    def expected_fpr_(self) -> float:
        """Expected false-alarm rate on new good images."""
        return self._post().expected_fpr

    @property
    def norm_range_(self) -> tuple[float, float]:
        """``(min, max)`` of the validation-good scores."""
        return self._post().norm_range

    @property
    def heatmap_range_(self) -> tuple[float, float]:
        """Colour range of heatmap overlays."""
        return self._post().heatmap_range

    @property
    def score_stats_(self) -> ScoreStats:
        """Statistics of the validation-good scores."""
        return self._post().score_stats

    @property
    def val_scores_(self) -> np.ndarray:
        """``(n,)`` validation-good scores."""
        return self._post().val_scores

    def _post(self) -> PostProcessor:
        self.check_fitted(need_threshold=True)
        return self.postprocessor_

    # ---------------------------------------------------------------- inference
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Model-size float32 ``(N, h, w, C)`` in [0, 1] (or uint8 0-255) -> float32 reconstructions, batched by
        ``scoring.batch_size``, with the border margin, padding and tiles of
        :func:`anomaly_ae.scoring.reconstruction.reconstruct`."""
        self.check_fitted(need_threshold=False)
        s = self.config_.scoring
        return reconstruction.reconstruct(self._predict_batched, x, self.border_margin(), self.pad_factor(),
                                          s.tile_size, s.tile_overlap)

    def border_margin(self) -> int:
        """Mirrored pixels around the image (:func:`anomaly_ae.scoring.reconstruction.border_margin`)."""
        return reconstruction.border_margin(self.model_, self.config_.scoring.border_margin)

    def pad_factor(self) -> int:
        """Sides are padded to a multiple of this (:func:`anomaly_ae.scoring.reconstruction.pad_factor`)."""
        return reconstruction.pad_factor(self.model_, self.config_.size_factor())

    def _predict_batched(self, x: np.ndarray, model: keras.Model | None = None) -> np.ndarray:
        """``model`` (default: the autoencoder, behind a rescaling for uint8 ``x``) in ``scoring.batch_size``
        batches."""
        if model is None:
            model = self._uint8_model() if x.dtype == np.uint8 else self.model_
        return reconstruction.predict_batched(model, x, self.config_.scoring.batch_size)

    def _uint8_model(self) -> keras.Model:
        """The autoencoder for uint8 inputs, built once per model (fit or load replace it)."""
        built = getattr(self, "_uint8_model_", None)
        if built is None or built[0] is not self.model_:
            built = (self.model_, reconstruction.uint8_input(self.model_, self.preprocessing_.channels))
            self._uint8_model_ = built
        return built[1]

    def learned_maps(self, x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
        """Defect probability ``(N, h, w)`` from the model's discriminator on (image, reconstruction)."""
        def predict(joined: np.ndarray) -> np.ndarray:
            return self._predict_batched(joined, self.model_.discriminator_net)

        return reconstruction.learned_maps(predict, x, x_hat, self.pad_factor())

    def raw_maps(self, x: np.ndarray, x_hat: np.ndarray, metric: str | None = None) -> np.ndarray:
        """Unsmoothed model-size maps ``(N, h, w)`` by ``metric`` (default ``scoring.metric``)."""
        s = self.config_.scoring
        metric = metric or s.metric
        if metric == "learned":
            return self.learned_maps(x, x_hat)
        if metric == "feature":  # a feature model's output is already its map (N, h, w, 1), not an image
            return np.asarray(x_hat[..., 0], np.float32)
        return residual_map(x, x_hat, metric, s.channel_reduction, s.ssim_weight)

    def smoothing_sigma(self, sigma: float | None = None) -> tuple[float, float]:
        """``(sigma_y, sigma_x)`` at model size of ``sigma`` (default ``scoring.smoothing_sigma``), which is in
        pixels of the original image."""
        sigma = self.config_.scoring.smoothing_sigma if sigma is None else sigma
        return model_sigma(sigma, self.preprocessing_.image_size, self.preprocessing_.original_hw)

    def position_reference(self) -> PositionReference:
        """The fitted per-position reference of ``scoring.position_norm``."""
        ref = getattr(self, "position_reference_", None)
        if ref is None:
            raise ValueError("scoring.position_norm is set but this detector has no position reference: "
                             "fit it, or tune it on good images (calibrate --select-scoring)")
        return ref

    def maps_from_reconstruction(self, x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
        """Model-size anomaly maps ``(N, h, w)`` of inputs ``x`` and their reconstructions ``x_hat``."""
        return smooth(self.raw_maps(x, x_hat), self.smoothing_sigma())

    def _score_model_size(self, x: np.ndarray, x_model: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(N,)`` and model-size maps of float32 ``x``; ``x_model``: the same images as uint8, which
        the model is given instead (it scales them itself)."""
        maps = self.maps_from_reconstruction(x, self.reconstruct(x if x_model is None else x_model))
        s = self.config_.scoring
        scored = self.position_reference().normalize(maps) if s.position_norm else maps
        scores = image_score(scored, s.reduction, s.topk_fraction)
        if s.kl_weight > 0 and hasattr(self.model_, "kl_divergence"):  # VAE: distance of q(z|x) from the prior
            bs = s.batch_size
            kl = [keras.ops.convert_to_numpy(self.model_.kl_divergence(x[i : i + bs])) for i in range(0, len(x), bs)]
            scores = scores + s.kl_weight * np.concatenate(kl).astype(np.float64)
        return scores, maps

    def score_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Decoded images of any sizes -> (scores ``(N,)``, anomaly maps, each at its image's size).

        Scores are computed on the model-size maps, so they do not depend on the original size.
        """
        u8 = model_size_uint8(self.preprocessing_, list(images))
        if u8 is None:
            scores, maps = self._score_model_size(self.preprocessing_(list(images)))
        else:  # uint8 to the model, scaled there; the maps use the same float32 values on the host
            scores, maps = self._score_model_size(u8.astype(np.float32) * np.float32(1 / 255), x_model=u8)
        box = self.preprocessing_.box
        return scores, [resize_map(m, im.shape[:2], box(im.shape[:2])) for m, im in zip(maps, images, strict=True)]

    def score(self, images: ImagesLike) -> np.ndarray:
        """Image scores ``(N,)``; higher = more anomalous."""
        self.check_fitted(need_threshold=False)
        return self.score_images(self._decode(images))[0]

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        """Scores on a [0, 1] scale where the image threshold is 0.5 (see :meth:`PostProcessor.normalize`)."""
        self.check_fitted(need_threshold=True)
        return self.postprocessor_.normalize(scores)

    def anomaly_maps(self, images: ImagesLike) -> np.ndarray:
        """Anomaly maps ``(N, H, W)`` at the input size (inputs of one size; else use ``score_images``)."""
        self.check_fitted(need_threshold=False)
        maps = self.score_images(self._decode(images))[1]
        return np.stack(maps)

    def predict(self, images: ImagesLike) -> np.ndarray:
        """``(N,)`` bool: ``score > threshold_``."""
        self.check_fitted(need_threshold=True)
        return self.postprocessor_.is_anomalous(self.score(images))

    def predict_masks(self, images: ImagesLike) -> np.ndarray:
        """``(N, H, W)`` bool defect masks: ``anomaly map > pixel_threshold_`` (inputs of one size)."""
        self.check_fitted(need_threshold=True)
        return self.postprocessor_.mask(self.anomaly_maps(images))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` new uint8 images ``(n, h, w, C)`` decoded from the prior N(0, I) of a variational model.

        Raises:
            ValueError: the model is not a ``vae``.
        """
        self.check_fitted(need_threshold=False)
        if not hasattr(self.model_, "sample"):
            raise ValueError(f"holds a '{self.config_.model.name}' model; only 'vae' models can sample")
        images = keras.ops.convert_to_numpy(self.model_.sample(n, seed=seed))
        return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the self-contained model directory (see :mod:`anomaly_ae.artifact`)."""
        self.check_fitted(need_threshold=True)
        save_model_dir(Path(path), self.to_state())
        self.source_dir_ = Path(path)
        return Path(path)

    def save_calibration(self, path: str | Path) -> Path:
        """Rewrite only the thresholds (``detector.json``, ``config.yaml``) of the model directory ``path``."""
        self.check_fitted(need_threshold=True)
        state = self.to_state()
        save_calibration(Path(path), state)
        self.metadata_ = state.metadata
        self.source_dir_ = Path(path)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, verbose: int | Progress = 0) -> Detector:
        """Restore a detector saved with :meth:`save` (Keras ``safe_mode=True``)."""
        det = cls.from_state(load_model_dir(Path(path)))
        det.verbose = verbose
        return det

    def to_state(self) -> ModelState:
        """The fitted detector as plain state (what :mod:`anomaly_ae.artifact` reads and writes)."""
        return ModelState(self.config_, self.model_, self.preprocessing_, self.postprocessor_,
                          getattr(self, "history_", {}), getattr(self, "train_info_", {}),
                          getattr(self, "metadata_", {}), getattr(self, "source_dir_", None),
                          getattr(self, "position_reference_", None))

    @classmethod
    def from_state(cls, state: ModelState) -> Detector:
        """A fitted detector from plain state (inverse of :meth:`to_state`)."""
        det = cls(state.config)
        det.config_ = state.config
        det.model_ = state.model
        det.preprocessing_ = state.preprocessing
        det.postprocessor_ = state.postprocessor
        det.history_ = state.history
        det.train_info_ = state.train_info
        det.metadata_ = state.metadata
        det.source_dir_ = state.source
        det.position_reference_ = state.position
        return det

    # ------------------------------------------------------------------ helpers
    def check_fitted(self, need_threshold: bool = True) -> None:
        """Raise :class:`NotFittedError` unless fitted (and calibrated, with ``need_threshold``)."""
        if not hasattr(self, "model_") or (need_threshold and not hasattr(self, "postprocessor_")):
            raise NotFittedError("this Detector is not fitted yet: call fit() or Detector.load() first")

    def _decode(self, images: ImagesLike) -> list[np.ndarray]:
        return decode_images(images, self.preprocessing_.channels)
