import numpy as np

from anomaly_ae.config import AugmentConfig
from anomaly_ae.data.dataset import ImageDataset
from anomaly_ae.data.images import Preprocessing


def _images():
    rng = np.random.default_rng(0)
    return (rng.random((6, 16, 16, 1)) * 255).astype(np.uint8)


def test_dataset_batches_without_augmentation_are_exact():
    images = _images()
    ds = ImageDataset(images, Preprocessing((16, 16), 1), batch_size=4)
    assert len(ds) == 2
    x, y = ds[1]
    assert x.shape == (2, 16, 16, 1) and x is y
    np.testing.assert_allclose(x, images[4:] / 255.0, atol=1e-7)


def test_augmentation_changes_images_when_on():
    images = _images()
    aug = AugmentConfig(hflip=True, vflip=True, shift=0.1, rotate=10, brightness=0.2, contrast=0.2)
    assert aug.enabled and not AugmentConfig().enabled
    ds = ImageDataset(images, Preprocessing((16, 16), 1), batch_size=6, augment=aug, seed=1)
    x, _ = ds[0]
    assert x.shape == (6, 16, 16, 1)
    changed = [not np.allclose(x[i], images[i] / 255.0) for i in range(6)]
    assert sum(changed) >= 4


def test_shuffle_is_seeded_and_changes_per_epoch():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * np.ones((1, 8, 8, 1), np.uint8)
    a = ImageDataset(images, Preprocessing((8, 8), 1), batch_size=10, shuffle=True, seed=3)
    b = ImageDataset(images, Preprocessing((8, 8), 1), batch_size=10, shuffle=True, seed=3)
    first = a[0][0][:, 0, 0, 0]
    np.testing.assert_array_equal(first, b[0][0][:, 0, 0, 0])
    assert sorted((first * 255).round().astype(int).tolist()) == list(range(10))
    a.on_epoch_end()
    assert not np.array_equal(first, a[0][0][:, 0, 0, 0])
