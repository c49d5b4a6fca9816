"""Synthetic defects (anomaly_ae.data.anomalies): the guarantees repair training and the self-check rely on."""

import numpy as np
import pytest

from anomaly_ae.data.anomalies import (
    MASKS,
    AnomalySynthesizer,
    blend,
    chip_mask,
    perlin_noise,
    pit_mask,
    scratch_mask,
    synthesize_batch,
)


def _image(seed: int, shape=(64, 96, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(60, 190, shape[1])[None, :, None] + rng.normal(0, 6, shape)
    return np.clip(base, 0, 255).astype(np.uint8)


TEXTURE = (np.random.default_rng(9).random((40, 50, 3)) * 255).astype(np.uint8)  # smaller than the image
CASES = [
    ({"perlin": 1.0}, {"image": 1.0}, 3),
    ({"scratch": 1.0}, {"noise": 1.0}, 3),
    ({"pit": 1.0}, {"texture": 1.0}, 3),
    ({"chip": 1.0}, {"image": 1.0}, 1),
    ({"perlin": 1.0, "scratch": 1.0, "pit": 1.0, "chip": 1.0}, {"image": 1.0, "noise": 1.0, "texture": 1.0}, 1),
]


@pytest.mark.parametrize("shapes,sources,channels", CASES)
def test_outside_untouched_and_mask_is_exactly_the_changed_pixels(shapes, sources, channels):
    synth = AnomalySynthesizer(shapes, sources, textures=[TEXTURE[..., :channels]], seed=3)
    rng = np.random.default_rng(0)
    for i in range(25):
        img = _image(i, (64, 96, channels))
        out, mask = synth(img, rng, donor=_image(100 + i, (64, 96, channels)))
        assert out.shape == img.shape and out.dtype == np.uint8 and mask.shape == img.shape[:2]
        changed = (out != img).any(axis=-1)
        np.testing.assert_array_equal(mask, changed)  # exactly the changed pixels ...
        np.testing.assert_array_equal(out[~mask], img[~mask])  # ... and nothing outside them
        assert mask.any(), "every call pastes a visible defect"
        diff = np.abs(out.astype(int) - img.astype(int)).max(axis=-1)
        assert diff[mask].min() >= synth.min_change


def test_same_seed_same_output_other_seed_other_output():
    img = _image(0)

    def run(seed):
        synth = AnomalySynthesizer(textures=[TEXTURE], seed=1)
        rng = np.random.default_rng(seed)
        return [synth(img, rng, donor=_image(5)) for _ in range(6)]

    a, b, c = run(7), run(7), run(8)
    for (ia, ma), (ib, mb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
    assert any(not np.array_equal(ma, mc) for (_, ma), (_, mc) in zip(a, c, strict=True))


def test_shapes_have_the_geometry_real_defects_have():
    rng = np.random.default_rng(0)
    h, w = 256, 256
    import cv2

    for _ in range(30):
        # scratches: thin lines (the centre of a line k px wide lies about (k + 1) / 2 px from the background)
        m = scratch_mask(h, w, rng)
        if m.any():
            dist = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 5)  # the border is outside
            assert dist.max() <= 3.0
        # pits: small, each 0.1-1% of the image (a few may merge); never empty
        p = pit_mask(h, w, rng)
        assert p.any() and p.mean() <= 4 * 0.011
        n, labels, stats, _ = cv2.connectedComponentsWithStats(p.astype(np.uint8))
        assert stats[1:, cv2.CC_STAT_AREA].min() >= 0.0007 * h * w * 0.5  # edge-clipped pits are smaller
        # chips: touch an image edge
        c = chip_mask(h, w, rng)
        assert c.any() and (c[0].any() or c[-1].any() or c[:, 0].any() or c[:, -1].any())
    # the smallest pits reach ~0.1% of the image
    areas = [a / (h * w) for s in range(40)
             for a in cv2.connectedComponentsWithStats(pit_mask(h, w, np.random.default_rng(s)).astype(np.uint8))[2][
                 1:, cv2.CC_STAT_AREA]]
    assert min(areas) < 0.0015
    # Perlin masks: blobs of varied size, rotated noise
    fractions = [MASKS["perlin"](h, w, np.random.default_rng(s)).mean() for s in range(40)]
    assert max(fractions) > 0.05 and min(fractions) < 0.03


def test_perlin_noise_is_smooth_and_bounded():
    n = perlin_noise((128, 128), (4, 4), np.random.default_rng(0))
    assert n.shape == (128, 128) and np.abs(n).max() <= 1.5
    assert np.abs(np.diff(n, axis=0)).max() < 0.2  # gradient noise: no jumps between neighbours


def test_blend_factor_and_min_change():
    img = np.full((8, 8, 1), 100, np.uint8)
    content = np.full((8, 8, 1), 200, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    out, changed = blend(img, content, mask, beta=1.0)
    assert (out[mask] == 200).all() and (out[~mask] == 100).all() and (changed == mask).all()
    out, changed = blend(img, content, mask, beta=0.2)
    assert (out[mask] == 120).all()
    # a change below min_change grey levels is undone and not called a defect
    out, changed = blend(img, np.full((8, 8, 1), 102, np.uint8), mask, beta=1.0, min_change=3)
    assert not changed.any() and (out == img).all()


def test_batch_probability():
    images = np.stack([_image(i) for i in range(8)])
    synth = AnomalySynthesizer(seed=0)
    out, masks = synthesize_batch(images, synth, np.random.default_rng(0), probability=0.0)
    assert not masks.any() and (out == images).all()
    out, masks = synthesize_batch(images, synth, np.random.default_rng(0), probability=1.0)
    assert all(m.any() for m in masks)
    assert (out == images).all(axis=-1)[~masks].all()


def test_rejects_unknown_names_and_empty_choices():
    with pytest.raises(ValueError, match="unknown"):
        AnomalySynthesizer(shapes={"blob": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        AnomalySynthesizer(sources={"texture": 1.0}, texture_families=())  # no textures, no procedural families
    with pytest.raises(ValueError, match="unknown"):
        AnomalySynthesizer(texture_families=("marble",))


def test_repair_dataset_yields_defects_clean_targets_and_masks():
    from anomaly_ae.data.dataset import ImageDataset
    from anomaly_ae.data.images import Preprocessing

    images = np.stack([_image(i, (32, 32, 1)) for i in range(6)])
    pre = Preprocessing((32, 32), 1)
    ds = ImageDataset(images, pre, 6, synthetic=AnomalySynthesizer(seed=0), synthetic_probability=1.0, masks=True)
    x, y = ds[0]
    assert x.shape == y["image"].shape == (6, 32, 32, 1) and y["mask"].shape == (6, 32, 32)
    np.testing.assert_array_equal(y["image"], images / np.float32(255))  # the target is the clean image
    inside = y["mask"].astype(bool)
    assert inside.any(axis=(1, 2)).all()
    np.testing.assert_array_equal((x != y["image"])[..., 0], inside)
    x2, y2 = ds[0]  # validation-style (no shuffle): the same defects every time
    np.testing.assert_array_equal(x, x2)
    plain = ImageDataset(images, pre, 6, synthetic=AnomalySynthesizer(seed=0), synthetic_probability=1.0)
    xp, yp = plain[0]
    assert isinstance(yp, np.ndarray)  # repair training without a learned map: (defective, clean)
