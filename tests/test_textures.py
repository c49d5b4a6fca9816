"""Procedural textures (the DTD stand-in) and the split of defect families between training and the self-check."""

from collections import Counter

import numpy as np
import pytest

from anomaly_ae.data import anomalies, textures
from anomaly_ae.data.anomalies import CHECK_SHAPES, SHAPES, AnomalySynthesizer
from anomaly_ae.data.textures import CHECK_FAMILIES, FAMILIES, TRAIN_FAMILIES, texture


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_family_draws_varied_seeded_textures(family, channels):
    a = texture(family, (48, 80, channels), np.random.default_rng(3))
    b = texture(family, (48, 80, channels), np.random.default_rng(3))
    c = texture(family, (48, 80, channels), np.random.default_rng(4))
    assert a.dtype == np.uint8 and a.shape == (48, 80, channels)
    np.testing.assert_array_equal(a, b)  # seeded
    assert not np.array_equal(a, c)
    assert a.std() > 5  # a texture, not a flat fill (DRAEM: flat colour fills cost 4.7 pixel AUROC points)


def test_families_are_split_between_training_and_the_self_check():
    assert set(TRAIN_FAMILIES).isdisjoint(CHECK_FAMILIES) and set(TRAIN_FAMILIES) | set(CHECK_FAMILIES) == set(FAMILIES)
    assert set(SHAPES).isdisjoint(CHECK_SHAPES)


def _spy(monkeypatch, calls: Counter):
    """Count every mask shape, texture family and the in-place shade the synthesizers draw."""
    for name, fn in list(anomalies.MASKS.items()):
        def mask(*a, _fn=fn, _name=name, **k):
            calls[_name] += 1
            return _fn(*a, **k)
        monkeypatch.setitem(anomalies.MASKS, name, mask)
    for name, fn in list(textures.MAKERS.items()):
        def make(*a, _fn=fn, _name=name, **k):
            calls[_name] += 1
            return _fn(*a, **k)
        monkeypatch.setitem(textures.MAKERS, name, make)
    shaded = anomalies.shaded

    def shade(*a, **k):
        calls["shade"] += 1
        return shaded(*a, **k)
    monkeypatch.setattr(anomalies, "shaded", shade)


def test_held_out_families_never_reach_training_batches(monkeypatch):
    """The default config's repair training, batch after batch: none of the self-check's shapes, texture
    families or the shaded source; its own families do appear (the spy sees them)."""
    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.data.dataset import ImageDataset
    from anomaly_ae.data.images import Preprocessing
    from anomaly_ae.training.fit import _repair_options

    calls: Counter = Counter()
    _spy(monkeypatch, calls)
    cfg = DetectorConfig.from_yaml("configs/repair.yaml").with_overrides({"data.image_size": [64, 64]})
    rng = np.random.default_rng(0)
    images = rng.integers(60, 200, (12, 64, 64, 3)).astype(np.uint8)
    ds = ImageDataset(images, Preprocessing((64, 64), 3), 8, shuffle=True, seed=0, patch_size=32,
                      patches_per_image=8, **_repair_options(cfg))
    for _epoch in range(3):
        for i in range(len(ds)):
            ds[i]
        ds.on_epoch_end()
    held_out = {*CHECK_SHAPES, *CHECK_FAMILIES, "shade"}
    assert not held_out & set(calls), calls
    assert set(calls) >= {*SHAPES, *TRAIN_FAMILIES}, calls  # every training family was drawn


def test_self_check_draws_only_held_out_families(monkeypatch):
    from anomaly_ae.evaluation.self_check import synthetic_defects

    calls: Counter = Counter()
    _spy(monkeypatch, calls)
    good = np.random.default_rng(1).integers(60, 200, (20, 48, 64, 3)).astype(np.uint8)
    bad, masks = synthetic_defects(good)
    assert set(calls) == {*CHECK_SHAPES, *CHECK_FAMILIES, "shade"}, calls
    assert masks.any(axis=(1, 2)).all() and (bad != np.concatenate([good] * 2)).any(axis=-1)[masks].all()


def test_texture_source_without_a_folder_uses_the_procedural_bank():
    synth = AnomalySynthesizer(shapes={"perlin": 1.0}, sources={"texture": 1.0}, texture_families=("stripes",))
    image = np.full((64, 64, 3), 128, np.uint8)
    out, mask = synth(image, np.random.default_rng(0))
    assert mask.any() and (out[mask] != 128).any()
