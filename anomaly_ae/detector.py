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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from anomaly_ae.artifact import ModelState, load_model_dir, save_calibration, save_model_dir
from anomaly_ae.config import DetectorConfig, ThresholdConfig
from anomaly_ae.data.loading import ImagesLike, decode_images
from anomaly_ae.evaluation.metrics import PixelAccumulator
from anomaly_ae.evaluation.self_check import SELF_CHECK_SEED, check_scoring
from anomaly_ae.postprocessing import PostProcessor, ScoreStats
from anomaly_ae.progress import Progress, as_progress
from anomaly_ae.scoring.maps import resize_map
from anomaly_ae.scoring.scorer import Scorer
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
    def fit(self, good: ImagesLike, callbacks: Sequence[keras.callbacks.Callback] = ()) -> Detector:
        """Train on good images (a folder, or an array ``(N, H, W[, C])``) and calibrate the thresholds.

        A seeded ``holdout_fraction`` of the images is never trained on: it drives early stopping, the
        self-check (which chooses the scoring with ``scoring.select: auto``) and the thresholds. Unreadable
        files in a folder are skipped and listed in ``train_info_["skipped"]``. With ``data.patch_size`` the
        model trains on random patches and reconstructs whole images (fully convolutional).

        ``callbacks``: Keras callbacks; checkpointing and tracking arrive this way
        (:class:`~anomaly_ae.training.checkpoint.TrainingCheckpoint`,
        :class:`~anomaly_ae.training.callbacks.TrackingCallback`).

        Raises:
            TrainingDiverged: the loss became NaN/inf; the last good checkpoint is kept.
        """
        progress = as_progress(self.verbose)
        trained = train_autoencoder(self.config, good, progress, callbacks)
        self.config_ = trained.config
        self.model_ = trained.model
        self.preprocessing_ = trained.preprocessing
        self.history_ = trained.history
        val_images, n_val = trained.holdout, len(trained.holdout)
        progress.stage(f"self-check: seeded synthetic defects on the {n_val} held-out good images"
                       + (", choosing the scoring" if self.config_.scoring.select == "auto" else ""))
        check = self.fit_scoring(val_images, select=self.config_.scoring.select == "auto", reference=trained.reference)
        progress.stage(f"calibrating the thresholds on the {n_val} held-out good images")
        self.calibrate(val_images)
        self.holdout_images_ = val_images  # the self-check's good images; not saved
        self.val_sample_ = val_images[:8]  # for reports; not saved
        self.train_info_ = {**trained.info, "self_check": check}
        return self

    def self_check(self, good: np.ndarray, seed: int = SELF_CHECK_SEED) -> dict[str, Any]:
        """Synthetic image AUROC, pixel AUROC and AUPRO of the current scoring on held-out good images; only
        reports (:func:`anomaly_ae.evaluation.self_check.check_scoring`, ``good``: uint8 ``(N, h, w, C)`` at
        model size, not trained on)."""
        return check_scoring(self.scorer_, good, seed).figures

    def fit_scoring(self, good: np.ndarray, select: bool = True, seed: int = SELF_CHECK_SEED,
                    reference: np.ndarray | None = None) -> dict[str, Any]:
        """Fit the scoring on held-out good images ``good`` (uint8 ``(N, h, w, C)`` at model size): with
        ``select``, the map metric, smoothing, reduction and per-position normalization the self-check ranks
        best replace ``config_.scoring`` (``scoring.select: auto``); with ``reference`` (training images, not
        in ``good``), the per-position reference is fitted on their maps (``position_reference_``).
        Recalibrate afterwards: the thresholds of the old scoring no longer apply.

        Returns:
            The self-check figures of the fitted setting (:func:`~anomaly_ae.evaluation.self_check.check_scoring`);
            every candidate's row, best first, is kept in ``candidates_`` (not saved).
        """
        found = check_scoring(self.scorer_, good, seed, select, reference)
        best = found.best
        if select:
            scoring = self.config_.scoring.model_copy(update={
                "metric": best.metric, "smoothing_sigma": best.smoothing_sigma, "reduction": best.reduction,
                "position_norm": best.position_norm})
            self.config_ = self.config_.model_copy(update={"scoring": scoring})
        if best.position_norm:
            self.position_reference_ = best.reference
        elif select:
            self.position_reference_ = None
        self.candidates_ = found.rows
        return found.figures

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
        check = self.fit_scoring(images, select=True, seed=seed, reference=reference)
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
        parts = [self.scorer_.score_model_size(self.preprocessing_(good_images[i : i + bs]))
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
    @property
    def scorer_(self) -> Scorer:
        """The fitted model's inference (:class:`~anomaly_ae.scoring.scorer.Scorer`: reconstruction, maps,
        scores) under the current ``config_.scoring``; rebuilt when a part changes."""
        self.check_fitted(need_threshold=False)
        now = Scorer(self.model_, self.preprocessing_, self.config_.scoring, self.config_.size_factor(),
                     getattr(self, "position_reference_", None))
        kept = getattr(self, "_scorer", None)
        if kept is None or not kept.same_parts(now):
            self._scorer = kept = now
        return kept

    def score_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Decoded images of any sizes -> (scores ``(N,)``, anomaly maps, each at its image's size)
        (:meth:`Scorer.score_images <anomaly_ae.scoring.scorer.Scorer.score_images>`)."""
        return self.scorer_.score_images(images)

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
