from pathlib import Path

import pytest
from pydantic import ValidationError

from anomaly_ae.config import DetectorConfig

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
    named = ("dense", "linear", "sparse", "contractive", "denoising", "vae")
    assert cfg.model.name == (stem if stem in named else "conv")
