"""``Detector``, the estimator: preprocessing -> model -> anomaly map -> image score -> post-processing.

pyod-like API where a score always means "higher = more anomalous"::

    det = Detector().fit("good_images/")   # the default preset; Detector(DetectorConfig.from_preset("fast"))
    det.score(images)          # (N,)
    det.anomaly_maps(images)   # (N, H, W) at the input size
    det.predict(images)        # (N,) bool: PostProcessor.is_anomalous, score > threshold_
    det.save("runs/a"); Detector.load("runs/a")

``fit`` is three steps, each owned elsewhere: training (:func:`anomaly_ae.training.fit.train_autoencoder`),
the self-check that fits the scoring (:mod:`anomaly_ae.evaluation.self_check`) and the calibration of the
:class:`~anomaly_ae.postprocessing.PostProcessor`. Inference is the :class:`~anomaly_ae.scoring.scorer.Scorer`
(``scorer_``); runs with folders, trackers and locks are the :class:`~anomaly_ae.pipelines.engine.Engine`'s.

``config`` stays what the user passed (as scikit-learn keeps constructor parameters); ``config_`` is the
fitted one (``image_size: auto`` resolved, the scoring chosen; what ``detector.json`` stores). Fitted
attributes end in ``_``: ``config_``, ``model_``, ``preprocessing_``, ``postprocessor_``, ``history_``,
``train_info_``, ``source_dir_`` (the model directory it was loaded from or saved to, else ``None``), after
``fit`` only ``holdout_images_`` (uint8 held-out good images at model size) and ``val_sample_`` (8 of them);
``threshold_``, ``pixel_threshold_``, ``expected_fpr_``, ``norm_range_``, ``score_stats_``, ``val_scores_``
and ``heatmap_range_`` read the post-processor's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import keras
import numpy as np

from anomaly_ae.artifact import ModelState, load_model_dir, save_calibration, save_model_dir
from anomaly_ae.config import DetectorConfig, ThresholdConfig
from anomaly_ae.data.loading import ImagesLike, decode_images
from anomaly_ae.evaluation.metrics import labelled_pixels
from anomaly_ae.evaluation.self_check import SELF_CHECK_SEED, check_scoring, split_reference
from anomaly_ae.postprocessing import PostProcessor
from anomaly_ae.progress import Progress, as_progress
from anomaly_ae.scoring.scorer import Scorer
from anomaly_ae.training.fit import train_autoencoder

__all__ = ["Detector", "ImagesLike", "NotFittedError"]


#: the fitted attributes that :class:`~anomaly_ae.artifact.ModelState` holds, in its fields' order
_STATE_ATTRS = ("config_", "model_", "preprocessing_", "postprocessor_", "history_", "train_info_", "metadata_",
                "source_dir_", "position_reference_")

class NotFittedError(RuntimeError):
    """The detector was used before ``fit`` or ``load``."""


def _posted(name: str, doc: str) -> property:
    """A read-only fitted attribute that reads the post-processor's ``name`` (calibrated detectors only)."""
    def read(det: Detector) -> Any:
        det.check_fitted(need_threshold=True)
        return getattr(det.postprocessor_, name)

    return property(read, doc=doc)


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
        cfg, pre = getattr(self, "config_", self.config), getattr(self, "preprocessing_", None)
        size = pre.image_size if pre is not None else cfg.data.image_size
        shape = f"{'x'.join(map(str, size)) if size != 'auto' else 'auto'}x{cfg.data.channels}"
        if not hasattr(self, "model_"):
            return f"Detector({cfg.model.name}, {shape}, not fitted)"
        post = getattr(self, "postprocessor_", None)
        threshold = "not calibrated" if post is None else f"threshold={post.threshold:.6g}"
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
        self.config_, self.model_, self.preprocessing_ = trained.config, trained.model, trained.preprocessing
        self.history_ = trained.history
        held, select = trained.holdout, self.config_.scoring.select == "auto"
        progress.stage(f"self-check: seeded synthetic defects on the {len(held)} held-out good images"
                       + (", choosing the scoring" if select else ""))
        check = self.fit_scoring(held, select=select, reference=trained.reference)
        progress.stage(f"calibrating the thresholds on the {len(held)} held-out good images")
        self.calibrate(held)
        self.holdout_images_, self.val_sample_ = held, held[:8]  # the self-check's images, a sample; not saved
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
            self.config_ = self.config_.model_copy(update={"scoring": self.config_.scoring.model_copy(
                update=best.setting)})
        if best.position_norm:
            self.position_reference_ = best.reference
        elif select:
            self.position_reference_ = None
        self.candidates_ = found.rows
        return found.figures

    def tune(self, good: ImagesLike, seed: int = SELF_CHECK_SEED) -> dict[str, Any]:
        """Pick the scoring (map metric, smoothing, reduction) by the self-check on ``good`` images.

        ``good``: good images the model was not trained on (a folder, array or list, any size). With enough of
        them (:func:`~anomaly_ae.evaluation.self_check.split_reference`), a seeded half fits the per-position
        reference and the other half is the self-check's. The result replaces ``train_info_["self_check"]``;
        call :meth:`calibrate` afterwards (the thresholds of the old scoring no longer apply).
        """
        self.check_fitted(need_threshold=False)
        pre = self.preprocessing_
        images = np.stack([pre.resize(pre.convert_channels(im)) for im in self._decode(good)])
        if images.dtype != np.uint8:  # float input in [0, 1]
            images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        images, reference = split_reference(images, seed)
        check = self.fit_scoring(images, select=True, seed=seed, reference=reference)
        self.train_info_ = {**getattr(self, "train_info_", {}), "self_check": check}
        return check

    def calibrate(self, good: ImagesLike, anomalous: ImagesLike | None = None,
                  masks: Sequence[np.ndarray | None] | None = None, threshold: ThresholdConfig | None = None,
                  ) -> Detector:
        """(Re)fit the :class:`~anomaly_ae.postprocessing.PostProcessor` (thresholds, statistics, ranges), no training.

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
        t, scorer = self.config_.threshold, self.scorer_
        good_images = self._decode(good)
        scores, maps = scorer.score_in_batches(good_images)
        bad_images = self._decode(anomalous) if anomalous is not None else []
        if (t.method == "f1" or t.pixel_method == "f1") and not bad_images:
            raise ValueError("threshold method 'f1' needs anomalous images")
        bad_scores, bad_maps = scorer.score_images(bad_images) if bad_images else (np.empty(0), [])
        pixels = None
        if t.pixel_method == "f1":
            if masks is None:
                raise ValueError("pixel_method 'f1' needs anomalous images with masks")
            pixels = labelled_pixels(scorer.at_image_size(maps, good_images), bad_maps, masks)
        self.postprocessor_ = PostProcessor.fit(scores, maps, t, bad_scores, pixels)
        self.source_dir_ = None  # the thresholds now differ from any saved model directory
        return self

    # ----------------------------------------------- the post-processor's values
    threshold_ = _posted("threshold", "Image threshold: ``score > threshold_`` is anomalous.")
    pixel_threshold_ = _posted("pixel_threshold", "``anomaly map > pixel_threshold_`` is a defect pixel.")
    expected_fpr_ = _posted("expected_fpr", "Expected false-alarm rate on new good images.")
    norm_range_ = _posted("norm_range", "``(min, max)`` of the validation-good scores.")
    heatmap_range_ = _posted("heatmap_range", "Colour range of heatmap overlays.")
    score_stats_ = _posted("score_stats", "Statistics (:class:`ScoreStats`) of the validation-good scores.")
    val_scores_ = _posted("val_scores", "``(n,)`` validation-good scores.")

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
        return self.scorer_.score_images(self._decode(images))[0]

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        """Scores on a [0, 1] scale where the image threshold is 0.5 (see :meth:`PostProcessor.normalize`)."""
        self.check_fitted(need_threshold=True)
        return self.postprocessor_.normalize(scores)

    def anomaly_maps(self, images: ImagesLike) -> np.ndarray:
        """Anomaly maps ``(N, H, W)`` at the input size (inputs of one size; else use ``score_images``)."""
        return np.stack(self.scorer_.score_images(self._decode(images))[1])

    def predict(self, images: ImagesLike) -> np.ndarray:
        """``(N,)`` bool: :meth:`PostProcessor.is_anomalous`, ``score > threshold_``."""
        self.check_fitted(need_threshold=True)
        return self.postprocessor_.is_anomalous(self.score(images))

    def predict_masks(self, images: ImagesLike) -> np.ndarray:
        """``(N, H, W)`` bool defect masks: :meth:`PostProcessor.mask`, ``map > pixel_threshold_`` (one size)."""
        self.check_fitted(need_threshold=True)
        return self.postprocessor_.mask(self.anomaly_maps(images))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` new uint8 images ``(n, h, w, C)`` decoded from the prior N(0, I) of a ``vae`` (else ValueError)."""
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
        save_calibration(Path(path), state := self.to_state())
        self.metadata_, self.source_dir_ = state.metadata, Path(path)
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
        for attr, f in zip(_STATE_ATTRS, fields(state), strict=True):  # config_, model_, ... in ModelState's order
            setattr(det, attr, getattr(state, f.name))
        return det

    # ------------------------------------------------------------------ helpers
    def check_fitted(self, need_threshold: bool = True) -> None:
        """Raise :class:`NotFittedError` unless fitted (and calibrated, with ``need_threshold``)."""
        if not hasattr(self, "model_") or (need_threshold and not hasattr(self, "postprocessor_")):
            raise NotFittedError("this Detector is not fitted yet: call fit() or Detector.load() first")

    def _decode(self, images: ImagesLike) -> list[np.ndarray]:
        return decode_images(images, self.preprocessing_.channels)
