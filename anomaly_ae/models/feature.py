"""Feature autoencoder: frozen pretrained features -> a small autoencoder of them -> per-position error map.

The DFR / reverse-distillation family: a backbone that already knows edges and textures
(:mod:`anomaly_ae.models.backbones`) describes each image position; an autoencoder trained on good images'
features reconstructs them, and a position whose features it cannot reconstruct is anomalous. Steps:

1. ``backbone``: images in [0, 1] ``(N, H, W, C)`` -> features at each of ``feature_strides``;
2. each tap averaged over ``pool`` x ``pool`` positions (local context, as PatchCore), the coarser ones
   bilinearly brought to the finest grid, stacked: ``(N, H / s, W / s, F)``;
3. ``standardize``: per-channel mean and scale of the good training features (fitted, saved);
4. ``encoder`` -> ``decoder``: ``kernel_size`` convolutions ``F -> widths -> latent_channels -> ... -> F``;
5. the map: mean squared error over channels ``(N, H / s, W / s)``, bilinearly up-sampled to ``(N, H, W, 1)``.

``call`` returns that map (what the detector's ``scoring.metric: feature`` reads). Training runs on features
extracted once (:mod:`anomaly_ae.training.features`): :meth:`FeatureAutoencoder.feature_autoencoder` is the
trainable part alone, fitted with ``compile(loss="mse")``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from anomaly_ae.config import FeatureConfig
from anomaly_ae.models.backbones import feature_backbone
from anomaly_ae.models.layers import BilinearUpsample, CropLike

_DEFAULTS = FeatureConfig()


@keras.saving.register_keras_serializable(package="anomaly_ae")
class FeatureStandardize(layers.Layer):
    """``(x - mean) / scale`` per channel, with ``mean`` and ``scale`` fitted on good features (not trained)."""

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.mean = self.add_weight(shape=(self.channels,), initializer="zeros", trainable=False, name="mean")
        self.scale = self.add_weight(shape=(self.channels,), initializer="ones", trainable=False, name="scale")

    def set_statistics(self, mean: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fit: ``mean`` and ``scale`` ``(channels,)`` (a scale of 0 is taken as 1). Returns the float32 mean and
        scale as set, for standardizing NumPy features the same way (``(f - mean) / scale``)."""
        mean32 = np.asarray(mean, np.float32)
        scale32 = np.where(np.asarray(scale) > 1e-6, scale, 1.0).astype(np.float32)
        self.mean.assign(mean32)
        self.scale.assign(scale32)
        return mean32, scale32

    def call(self, x: Any) -> Any:
        return (x - self.mean) / self.scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels}


def _conv_stack(c_in: int, widths: tuple[int, ...], c_out: int, kernel: int, name: str,
                final_activation: str | None) -> keras.Model:
    inp = keras.Input((None, None, c_in), name=f"{name}_input")
    x = inp
    for i, w in enumerate(widths):
        x = layers.Conv2D(w, kernel, padding="same", activation="relu", name=f"{name}_conv{i + 1}")(x)
    out = layers.Conv2D(c_out, kernel, padding="same", activation=final_activation, name=f"{name}_out")(x)
    return keras.Model(inp, out, name=name)


@keras.saving.register_keras_serializable(package="anomaly_ae")
class FeatureAutoencoder(keras.Model):
    """Anomaly map of pretrained-feature reconstruction error (see the module docstring).

    ``input_shape``: ``(None, None, C)`` (any image size). ``pretrained``: load the backbone's published
    weights now (training); a saved model is rebuilt without them and its own weights are loaded over it.
    """

    CONFIG_FIELDS = tuple(_DEFAULTS.hyperparameters())

    def __init__(
        self,
        input_shape: tuple[int | None, int | None, int],
        backbone: str = _DEFAULTS.backbone,
        backbone_weights: str | None = _DEFAULTS.backbone_weights,
        feature_strides: tuple[int, ...] = _DEFAULTS.feature_strides,
        pool: int = _DEFAULTS.pool,
        widths: tuple[int, ...] = _DEFAULTS.widths,
        latent_channels: int = _DEFAULTS.latent_channels,
        kernel_size: int = _DEFAULTS.kernel_size,
        loss: str = "mse",
        pretrained: bool = False,
        **kwargs: Any,
    ) -> None:
        for unused in ("ssim_weight", "noise", "noise_level", "noise_seed", "precision"):
            kwargs.pop(unused, None)  # the image autoencoders' arguments (build_model passes them to every class)
        super().__init__(**kwargs)
        self.image_shape = tuple(None if v is None else int(v) for v in input_shape)
        self.backbone_name = backbone
        self.backbone_weights = backbone_weights
        self.feature_strides = tuple(sorted(int(s) for s in feature_strides))
        self.pool = int(pool)
        self.widths = tuple(int(w) for w in widths)
        self.latent_channels = int(latent_channels)
        self.kernel_size = int(kernel_size)
        if loss not in ("mse", "l1"):
            raise ValueError(f"model 'feature' trains with loss mse or l1, not {loss!r}")
        self.reconstruction_loss = loss
        self.backbone = feature_backbone(backbone, self.feature_strides, self.image_shape[-1], backbone_weights,
                                         pretrained=pretrained)
        channels = sum(int(t.shape[-1]) for t in self.backbone.outputs)
        self.feature_channels = channels
        self.smooth = layers.AveragePooling2D(self.pool, strides=1, padding="same", name="local_mean")
        finest = self.feature_strides[0]
        self.regrid = [BilinearUpsample(s // finest, name=f"regrid_{s}") for s in self.feature_strides[1:]]
        self.standardize = FeatureStandardize(channels, name="standardize")
        self.encoder = _conv_stack(channels, self.widths, self.latent_channels, self.kernel_size, "encoder", "relu")
        self.decoder = _conv_stack(self.latent_channels, self.widths[::-1], channels, self.kernel_size,
                                   "decoder", None)
        self.upsample = BilinearUpsample(finest, name="map_upsample")
        self.crop = CropLike(name="crop")

    @property
    def has_learned_map(self) -> bool:
        """No discriminator: the map is the feature reconstruction error."""
        return False

    def raw_features(self, x: Any) -> Any:
        """Images ``(N, H, W, C)`` in [0, 1] -> pooled, stacked, *unstandardized* features ``(N, h, w, F)``."""
        return self.stack_taps(self.backbone(x, training=False))

    def stack_taps(self, taps: list[Any]) -> Any:
        """The backbone's outputs at ``feature_strides`` -> pooled, stacked, unstandardized ``(N, h, w, F)``."""
        taps = [self.smooth(t) if self.pool > 1 else t for t in taps]
        finest = taps[0]
        stacked = [finest] + [self.crop([up(t), finest]) for up, t in zip(self.regrid, taps[1:], strict=True)]
        return ops.concatenate(stacked, axis=-1) if len(stacked) > 1 else finest

    def features(self, x: Any) -> Any:
        """Standardized features ``(N, h, w, F)`` of images ``x``."""
        return self.standardize(self.raw_features(x))

    def feature_error(self, f: Any) -> Any:
        """Per-position squared (or absolute) reconstruction error ``(N, h, w)`` of standardized features ``f``."""
        f_hat = self.decoder(self.encoder(f))
        diff = f - f_hat
        err = ops.square(diff) if self.reconstruction_loss == "mse" else ops.abs(diff)
        return ops.mean(err, axis=-1)

    def call(self, x: Any, training: bool = False) -> Any:
        """``(N, H, W, C)`` images in [0, 1] -> anomaly map ``(N, H, W, 1)`` (float32)."""
        err = self.feature_error(self.features(x))[..., None]
        return ops.cast(self.crop([self.upsample(err), x]), "float32")

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        """``fit(images)`` straight on images: the mean of the error map ``y_pred`` (the backbone stays frozen).
        The detector trains on features extracted once instead (:mod:`anomaly_ae.training.features`)."""
        return ops.mean(y_pred)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """``(N, H, W, C)`` -> ``(N, H, W, 1)``."""
        return (*input_shape[:3], 1)

    def feature_autoencoder(self) -> keras.Model:
        """The trainable part alone: standardized features -> their reconstruction (``fit(f, f)``)."""
        inp = keras.Input((None, None, self.feature_channels), name="features")
        return keras.Model(inp, self.decoder(self.encoder(inp)), name="feature_autoencoder")

    def feature_extractor(self) -> keras.Model:
        """Images -> raw (unstandardized) features, as a functional model for batched ``predict``."""
        inp = keras.Input(self.image_shape, name="image")
        return keras.Model(inp, self.raw_features(inp), name="feature_extractor")

    def get_config(self) -> dict[str, Any]:
        """Plain constructor arguments (the backbone's weights come from the saved file, not ``pretrained``)."""
        return {
            "name": self.name, "trainable": self.trainable, "input_shape": list(self.image_shape),
            "backbone": self.backbone_name, "backbone_weights": self.backbone_weights,
            "feature_strides": list(self.feature_strides), "pool": self.pool, "widths": list(self.widths),
            "latent_channels": self.latent_channels, "kernel_size": self.kernel_size,
            "loss": self.reconstruction_loss,
        }
