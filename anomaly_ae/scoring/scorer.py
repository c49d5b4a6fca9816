"""``Scorer``: a fitted model's inference, from model-size images to anomaly maps and image scores.

::

    scorer = det.scorer_                     # built from the detector's fitted parts
    x_hat = scorer.reconstruct(x)            # (N, h, w, C)
    maps = scorer.maps(x, x_hat)             # (N, h, w), smoothed
    scores, maps = scorer.score_model_size(x)
    scores, maps = scorer.score_images(images)   # any sizes; maps at each image's size

The :class:`~anomaly_ae.detector.Detector` is the estimator (fit, calibrate, predict, save); this class is
the arithmetic between its model and its post-processor, with no decision in it (higher = more
anomalous; :class:`~anomaly_ae.postprocessing.PostProcessor` decides). The steps are
:mod:`anomaly_ae.scoring.reconstruction` (model runs) and :mod:`anomaly_ae.scoring.maps` (maps, scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from anomaly_ae.config import ScoringConfig
from anomaly_ae.data.images import Preprocessing, model_size_uint8
from anomaly_ae.scoring import reconstruction
from anomaly_ae.scoring.maps import image_score, model_sigma, residual_map, resize_map, smooth
from anomaly_ae.scoring.position import PositionReference


@dataclass(eq=False)
class Scorer:
    """Inference of one fitted model under one scoring setting.

    Attributes:
        model: the trained autoencoder (or feature model).
        preprocessing: its fitted :class:`~anomaly_ae.data.images.Preprocessing`.
        scoring: the :class:`~anomaly_ae.config.ScoringConfig` (metric, smoothing, reduction, ...).
        size_factor: sides of a fully convolutional model's input are padded to a multiple of this.
        position: the per-position reference of ``scoring.position_norm`` (``None`` when none is fitted).
    """

    model: keras.Model
    preprocessing: Preprocessing
    scoring: ScoringConfig
    size_factor: int
    position: PositionReference | None = None
    _uint8: keras.Model | None = field(default=None, repr=False)  # the model behind a rescaling, built once

    def same_parts(self, other: Scorer) -> bool:
        """Whether ``other`` scores with the very same model, preprocessing, setting and reference."""
        return (self.model is other.model and self.preprocessing is other.preprocessing
                and self.scoring == other.scoring and self.size_factor == other.size_factor
                and self.position is other.position)

    # ------------------------------------------------------------- the model
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Model-size float32 ``(N, h, w, C)`` in [0, 1] (or uint8 0-255) -> float32 reconstructions, batched by
        ``scoring.batch_size``, with the border margin, padding and tiles of
        :func:`anomaly_ae.scoring.reconstruction.reconstruct`."""
        s = self.scoring
        return reconstruction.reconstruct(self.predict_batched, x, self.border_margin(), self.pad_factor(),
                                          s.tile_size, s.tile_overlap)

    def border_margin(self) -> int:
        """Mirrored pixels around the image (:func:`anomaly_ae.scoring.reconstruction.border_margin`)."""
        return reconstruction.border_margin(self.model, self.scoring.border_margin)

    def pad_factor(self) -> int:
        """Sides are padded to a multiple of this (:func:`anomaly_ae.scoring.reconstruction.pad_factor`)."""
        return reconstruction.pad_factor(self.model, self.size_factor)

    def predict_batched(self, x: np.ndarray, model: keras.Model | None = None) -> np.ndarray:
        """``model`` (default: the autoencoder, behind a rescaling for uint8 ``x``) in ``scoring.batch_size``
        batches."""
        if model is None:
            model = self._uint8_model() if x.dtype == np.uint8 else self.model
        return reconstruction.predict_batched(model, x, self.scoring.batch_size)

    def _uint8_model(self) -> keras.Model:
        if self._uint8 is None:
            self._uint8 = reconstruction.uint8_input(self.model, self.preprocessing.channels)
        return self._uint8

    # -------------------------------------------------------------- the maps
    def learned_maps(self, x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
        """Defect probability ``(N, h, w)`` from the model's discriminator on (image, reconstruction)."""
        def predict(joined: np.ndarray) -> np.ndarray:
            return self.predict_batched(joined, self.model.discriminator_net)

        return reconstruction.learned_maps(predict, x, x_hat, self.pad_factor())

    def raw_maps(self, x: np.ndarray, x_hat: np.ndarray, metric: str | None = None) -> np.ndarray:
        """Unsmoothed model-size maps ``(N, h, w)`` by ``metric`` (default ``scoring.metric``)."""
        s = self.scoring
        metric = metric or s.metric
        if metric == "learned":
            return self.learned_maps(x, x_hat)
        if metric == "feature":  # a feature model's output is already its map (N, h, w, 1), not an image
            return np.asarray(x_hat[..., 0], np.float32)
        return residual_map(x, x_hat, metric, s.channel_reduction, s.ssim_weight)

    def smoothing_sigma(self, sigma: float | None = None) -> tuple[float, float]:
        """``(sigma_y, sigma_x)`` at model size of ``sigma`` (default ``scoring.smoothing_sigma``), which is in
        pixels of the original image."""
        sigma = self.scoring.smoothing_sigma if sigma is None else sigma
        return model_sigma(sigma, self.preprocessing.image_size, self.preprocessing.original_hw)

    def position_reference(self) -> PositionReference:
        """The fitted per-position reference of ``scoring.position_norm``.

        Raises:
            ValueError: none is fitted.
        """
        if self.position is None:
            raise ValueError("scoring.position_norm is set but this detector has no position reference: "
                             "fit it, or fit the scoring on good images (Detector.fit_scoring)")
        return self.position

    def maps(self, x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
        """Model-size anomaly maps ``(N, h, w)`` of inputs ``x`` and their reconstructions ``x_hat``."""
        return smooth(self.raw_maps(x, x_hat), self.smoothing_sigma())

    # ------------------------------------------------------------ the scores
    def score_model_size(self, x: np.ndarray, x_model: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(N,)`` and model-size maps ``(N, h, w)`` of float32 ``x``; ``x_model``: the same images as
        uint8, which the model is given instead (it scales them itself)."""
        maps = self.maps(x, self.reconstruct(x if x_model is None else x_model))
        s = self.scoring
        scored = self.position_reference().normalize(maps) if s.position_norm else maps
        scores = image_score(scored, s.reduction, s.topk_fraction)
        if s.kl_weight > 0 and hasattr(self.model, "kl_divergence"):  # VAE: distance of q(z|x) from the prior
            bs = s.batch_size
            kl = [keras.ops.convert_to_numpy(self.model.kl_divergence(x[i : i + bs])) for i in range(0, len(x), bs)]
            scores = scores + s.kl_weight * np.concatenate(kl).astype(np.float64)
        return scores, maps

    def score_in_batches(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(N,)`` and model-size maps ``(N, h, w)`` of decoded images, ``scoring.batch_size`` at a time
        (the float32 copies never hold the whole set)."""
        bs = self.scoring.batch_size
        parts = [self.score_model_size(self.preprocessing(images[i : i + bs])) for i in range(0, len(images), bs)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def at_image_size(self, maps: np.ndarray, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Model-size maps ``(N, h, w)`` -> one map per image at its size (the pad margin cropped)."""
        box = self.preprocessing.box
        return [resize_map(m, im.shape[:2], box(im.shape[:2])) for m, im in zip(maps, images, strict=True)]

    def score_images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Decoded images of any sizes -> (scores ``(N,)``, anomaly maps, each at its image's size).

        Scores are computed on the model-size maps, so they do not depend on the original size.
        """
        pre = self.preprocessing
        u8 = model_size_uint8(pre, list(images))
        if u8 is None:
            scores, maps = self.score_model_size(pre(list(images)))
        else:  # uint8 to the model, scaled there; the maps use the same float32 values on the host
            scores, maps = self.score_model_size(u8.astype(np.float32) * np.float32(1 / 255), x_model=u8)
        return scores, self.at_image_size(maps, images)
