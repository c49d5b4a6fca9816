import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from anomaly_ae.config import PRESETS_DIR, DetectorConfig, config_file, preset_names, preset_summary

REPO = Path(__file__).resolve().parent.parent


def test_overrides_replace_dotted_keys_and_ignore_none():
    cfg = DetectorConfig().with_overrides({"train.epochs": 3, "data.image_size": 64, "train.seed": None})
    assert cfg.train.epochs == 3
    assert cfg.data.image_size == (64, 64)
    assert cfg.train.seed == DetectorConfig().train.seed


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(KeyError):
        DetectorConfig().with_overrides({"train.epoch": 3})
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ValidationError):
        DetectorConfig.from_yaml(bad)


def test_size_must_divide_by_downsampling():
    with pytest.raises(ValidationError, match="divisible"):
        DetectorConfig().with_overrides({"data.image_size": 36, "model.widths": [8, 16, 32]})


def test_channels_only_1_or_3():
    with pytest.raises(ValidationError):
        DetectorConfig().with_overrides({"data.channels": 2})


def test_yaml_round_trip_and_flat(tmp_path):
    cfg = DetectorConfig().with_overrides({"model.loss": "ssim_l1", "data.channels": 3})
    cfg.to_yaml(tmp_path / "c.yaml")
    again = DetectorConfig.from_yaml(tmp_path / "c.yaml")
    assert again == cfg
    flat = cfg.flat()
    assert flat["model.loss"] == "ssim_l1"
    assert flat["data.augment.hflip"] is False
    assert len(flat) == len(set(flat))


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = DetectorConfig.from_yaml(REPO / "configs" / name)
    stem = name.removesuffix(".yaml")
    named = {m: m for m in ("dense", "linear", "sparse", "contractive", "denoising", "vae")} | {"default": "feature"}
    assert cfg.model.name == named.get(stem, "conv")
    assert DetectorConfig.from_preset(stem) == cfg  # every file of configs/ is a preset by its name
    assert preset_summary(stem) and len(preset_summary(stem)) <= 110  # one line for 'anomaly-ae presets'


def test_the_repository_configs_folder_is_the_packaged_presets():
    assert (REPO / "configs").resolve() == PRESETS_DIR  # one set of files: users read and copy what ships
    assert {"default", "repair", "fast", "draem_gpu", "vae", "dense", "linear", "sparse", "contractive", "denoising",
            "patch", "vgg"} <= set(preset_names())


def test_config_file_takes_a_path_or_a_preset_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_file(None) == PRESETS_DIR / "default.yaml"
    assert config_file(None, "vae") == PRESETS_DIR / "vae.yaml"
    assert config_file(None, "conv") == PRESETS_DIR / "repair.yaml"  # the conv model's own preset
    assert config_file(None, "feature") == PRESETS_DIR / "default.yaml"  # the default is the feature model
    assert config_file("fast") == config_file("fast.yaml") == PRESETS_DIR / "fast.yaml"
    (tmp_path / "fast").write_text("train:\n  epochs: 2\n")  # a file of that name in the folder wins
    assert config_file("fast") == Path("fast")
    with pytest.raises(FileNotFoundError, match="presets: contractive, default"):
        config_file("nope")
    with pytest.raises(FileNotFoundError, match="the preset of that name: --config fast"):
        config_file("configs/fast.yaml")  # a checkout path, given where there is no checkout
    with pytest.raises(ValueError, match="no preset named 'nope'"):
        DetectorConfig.from_preset("nope")


def test_detector_without_a_config_is_the_default_preset():
    from anomaly_ae.detector import Detector

    default = DetectorConfig.from_preset("default")
    assert Detector().config == default == DetectorConfig.from_preset()
    assert default.data.image_size == "auto" and default.model.name == "feature"  # what the CLI trains
    assert default.scoring.metric == "feature" and default.model.backbone == "efficientnet_lite0"
    assert Detector(DetectorConfig.from_preset("fast")).config.data.image_size == (128, 128)


# ---------------------------------------------------------------- one config class per architecture


def test_model_section_is_a_union_keyed_by_name():
    from anomaly_ae.config import ConvConfig, DenseConfig, VAEConfig

    assert isinstance(DetectorConfig().model, ConvConfig)
    assert isinstance(DetectorConfig.model_validate({"model": {}}).model, ConvConfig)  # name defaults to conv
    dense = DetectorConfig.model_validate({"model": {"name": "dense", "hidden": [64]}}).model
    assert isinstance(dense, DenseConfig) and dense.hidden == (64,) and not hasattr(dense, "widths")
    vae = DetectorConfig().with_overrides({"model.name": "vae", "model.beta": 2.0}).model
    assert isinstance(vae, VAEConfig) and vae.beta == 2.0 and vae.widths == (16, 32, 64)  # shared fields carry over
    with pytest.raises(ValidationError, match="widthz"):  # a typo is still an error
        DetectorConfig.model_validate({"model": {"name": "conv", "widthz": [8]}})
    with pytest.raises(ValidationError):
        DetectorConfig.model_validate({"model": {"name": "transformer"}})


def test_every_architecture_takes_exactly_its_config_fields_with_the_configs_defaults():
    """Each hyperparameter is declared once: the Keras class's defaults are its config class's."""
    import inspect

    from anomaly_ae.config import MODEL_CONFIGS
    from anomaly_ae.models import ARCHITECTURES

    assert set(ARCHITECTURES) == set(MODEL_CONFIGS)
    for name, cls in ARCHITECTURES.items():
        cfg = MODEL_CONFIGS[name]()
        # denoising is the conv class with a required corruption: its own __init__ only adds that
        params = inspect.signature((ARCHITECTURES["conv"] if name == "denoising" else cls).__init__).parameters
        for field, default in cfg.hyperparameters().items():
            assert field in params, (name, field)
            assert params[field].default == default, (name, field, params[field].default, default)
            assert field in cls.CONFIG_FIELDS, (name, field)  # saved by get_config


def test_old_config_dicts_migrate(tmp_path):
    """A detector.json / YAML from before the redesign: every model field present, model.ssim_weight."""
    old = json.loads((Path(__file__).parent / "fixtures" / "model_v1_conv" / "detector.json").read_text())["config"]
    assert "hidden" in old["model"] and "ssim_weight" in old["model"]
    cfg = DetectorConfig.model_validate(old)
    assert cfg.model.name == "conv" and cfg.model.ssim_loss_weight == old["model"]["ssim_weight"]
    assert cfg.model.widths == (4, 8) and cfg.scoring.ssim_weight == old["scoring"]["ssim_weight"]
    assert DetectorConfig.model_validate(cfg.to_dict()) == cfg  # today's form round-trips


def test_yaml_field_of_another_architecture_is_ignored_with_a_warning(tmp_path):
    from anomaly_ae.config import ConfigWarning

    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: conv\n  hidden: [64]\n  widths: [8, 16]\ndata:\n  image_size: 32\n")
    with pytest.warns(ConfigWarning, match=r"model 'conv' does not use model\.hidden"):
        cfg = DetectorConfig.from_yaml(p)
    assert cfg.model.widths == (8, 16)
