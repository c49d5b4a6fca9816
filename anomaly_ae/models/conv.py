"""Convolutional VGG-style autoencoder.

Encoder: for each width, ``convs_per_block`` x (Conv 3x3 [+ BatchNorm] + activation), then 2x max-pool.
Bottleneck: a 1x1 conv to ``latent_channels`` (fully convolutional) or flatten -> Dense(``latent_dim``).
Decoder: the mirror image with nearest 2x up-sampling, then a 3x3 conv with a sigmoid to the input
channels. ``encoder`` and ``decoder`` are named functional sub-models.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from anomaly_ae.config import ConvConfig
from anomaly_ae.models.base import Autoencoder
from anomaly_ae.models.discriminator import build_discriminator
from anomaly_ae.models.losses import mask_loss

#: the defaults of every hyperparameter are the config's (declared once, in anomaly_ae.config)
_DEFAULTS = ConvConfig()


def _conv_block(x: Any, width: int, n: int, activation: str, batch_norm: bool, name: str) -> Any:
    for j in range(n):
        x = layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv{j + 1}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{j + 1}")(x)
        x = layers.Activation(activation, name=f"{name}_act{j + 1}")(x)
    return x


def vgg_down(x: Any, widths: tuple[int, ...], n: int, activation: str, batch_norm: bool) -> Any:
    """Encoder path: per width, ``n`` x (Conv 3x3 [+ BN] + activation) then a 2x max-pool (``enc<i>_*``)."""
    for i, width in enumerate(widths):
        x = _conv_block(x, width, n, activation, batch_norm, f"enc{i + 1}")
        x = layers.MaxPooling2D(2, name=f"enc{i + 1}_pool")(x)
    return x


def vgg_up(y: Any, widths: tuple[int, ...], n: int, activation: str, batch_norm: bool, channels: int) -> Any:
    """Mirrored decoder path (2x up-sampling + conv blocks, ``dec<i>_*``) and the sigmoid reconstruction head."""
    for i in reversed(range(len(widths))):
        y = layers.UpSampling2D(2, name=f"dec{i + 1}_up")(y)
        y = _conv_block(y, widths[i], n, activation, batch_norm, f"dec{i + 1}")
    return layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32", name="reconstruction")(y)


@keras.saving.register_keras_serializable(package="anomaly_ae")
class ConvAutoencoder(Autoencoder):
    """VGG-style convolutional autoencoder for ``(H, W, C)`` images in [0, 1].

    ``input_shape`` may be ``(None, None, C)`` (with the conv bottleneck): a fully convolutional model
    that trains on patches and reconstructs whole images whose sides are multiples of
    ``2 ** len(widths)``.
    """

    CONFIG_FIELDS = tuple(_DEFAULTS.hyperparameters())

    @property
    def downsampling(self) -> int:
        """Total down-sampling factor, ``2 ** len(widths)``."""
        return 2 ** len(self.widths)

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        widths: tuple[int, ...] = _DEFAULTS.widths,
        convs_per_block: int = _DEFAULTS.convs_per_block,
        activation: str = _DEFAULTS.activation,
        batch_norm: bool = _DEFAULTS.batch_norm,
        bottleneck: str = _DEFAULTS.bottleneck,
        latent_channels: int = _DEFAULTS.latent_channels,
        latent_dim: int = _DEFAULTS.latent_dim,
        discriminator: tuple[int, ...] | None = _DEFAULTS.discriminator,
        discriminator_loss: str = _DEFAULTS.discriminator_loss,
        loss: str = _DEFAULTS.loss,
        ssim_weight: float = _DEFAULTS.ssim_loss_weight,
        **kwargs: Any,
    ) -> None:
        self.image_shape = tuple(None if v is None else int(v) for v in input_shape)
        self.widths = tuple(int(w) for w in widths)
        self.convs_per_block = int(convs_per_block)
        self.activation = activation
        self.batch_norm = bool(batch_norm)
        self.bottleneck = bottleneck
        self.latent_channels = int(latent_channels)
        self.latent_dim = int(latent_dim)
        self.discriminator = None if discriminator is None else tuple(int(w) for w in discriminator)
        self.discriminator_loss = discriminator_loss
        encoder, decoder = self._build_parts()
        super().__init__(encoder=encoder, decoder=decoder, loss=loss, ssim_weight=ssim_weight, **kwargs)
        # the learned anomaly map (DRAEM's discriminative network); None for a plain autoencoder
        self.discriminator_net = (None if self.discriminator is None
                                  else build_discriminator(self.image_shape[-1], self.discriminator))

    @property
    def has_learned_map(self) -> bool:
        """True when the model carries a discriminator (``scoring.metric: learned``)."""
        return self.discriminator_net is not None

    def segment_logits(self, x: Any, x_hat: Any, training: bool = False) -> Any:
        """Defect logits ``(N, H, W)`` of images ``x`` given their reconstructions ``x_hat`` (both NHWC)."""
        if self.discriminator_net is None:
            raise ValueError("this model has no discriminator (model.discriminator is null)")
        joined = ops.concatenate([ops.cast(x, "float32"), ops.cast(x_hat, "float32")], axis=-1)
        return self.discriminator_net(joined, training=training)[..., 0]

    def segment(self, x: Any, x_hat: Any) -> Any:
        """Defect probability ``(N, H, W)``: the sigmoid of :meth:`segment_logits`."""
        return ops.sigmoid(self.segment_logits(x, x_hat))

    def objective(self, x: Any, y: Any, y_pred: Any, training: bool = True) -> Any:
        """Reconstruction loss, plus the learned map's loss on the synthetic-defect masks when it has one."""
        loss = super().objective(x, y, y_pred, training)
        if self.discriminator_net is None or not isinstance(y, dict):
            return loss
        # One optimiser trains both networks, but the map's loss does not reach the autoencoder (unlike
        # DRAEM): it stays a pure repair model, and on short CPU runs the map learned as well or better
        logits = self.segment_logits(x, ops.stop_gradient(y_pred), training=training)
        return loss + mask_loss(self.discriminator_loss, y["mask"], logits)

    def _build_parts(self) -> tuple[keras.Model, keras.Model]:
        h, w, c = self.image_shape
        factor = 2 ** len(self.widths)
        if h is None or w is None:
            if self.bottleneck != "conv":
                raise ValueError("a model for any image size (None dims) needs the 'conv' bottleneck")
        elif h % factor or w % factor:
            raise ValueError(f"input {h}x{w} is not divisible by {factor} (2 ** number of blocks)")
        inp = keras.Input(shape=self.image_shape, name="image")
        x = vgg_down(inp, self.widths, self.convs_per_block, self.activation, self.batch_norm)
        bh, bw = (h // factor, w // factor) if h is not None and w is not None else (None, None)
        if self.bottleneck == "conv":
            z = layers.Conv2D(self.latent_channels, 1, name="latent")(x)
        elif self.bottleneck == "dense":
            z = layers.Dense(self.latent_dim, name="latent")(layers.Flatten(name="flatten")(x))
        else:
            raise ValueError(f"unknown bottleneck {self.bottleneck!r}; use 'conv' or 'dense'")
        encoder = keras.Model(inp, z, name="encoder")

        z_in = keras.Input(shape=tuple(z.shape[1:]), name="latent")
        if self.bottleneck == "conv":
            y = layers.Conv2D(self.widths[-1], 1, name="expand")(z_in)
        else:
            y = layers.Dense(bh * bw * self.widths[-1], name="expand")(z_in)
            y = layers.Reshape((bh, bw, self.widths[-1]), name="unflatten")(y)
        y = layers.Activation(self.activation, name="expand_act")(y)
        out = vgg_up(y, self.widths, self.convs_per_block, self.activation, self.batch_norm, c)
        decoder = keras.Model(z_in, out, name="decoder")
        return encoder, decoder

