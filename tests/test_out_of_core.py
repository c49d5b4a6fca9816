"""Training sets larger than RAM: at most ``data.cache_mb`` of decoded images are kept, the rest is streamed."""

from pathlib import Path

import numpy as np
import pytest

from anomaly_ae.data.images import Preprocessing, read_image
from anomaly_ae.data.loading import load_training_set


def test_the_cache_holds_what_fits_the_budget_and_streams_the_rest(tiny_data, tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    sources = sorted((tiny_data / "train" / "good").glob("*.png"))
    for p in sources:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    pre = Preprocessing((512, 512), 1)  # 256 KiB per decoded image: a 1 MiB budget holds exactly 4
    data = load_training_set(folder, pre, cache_mb=1)
    kinds = [isinstance(item, np.ndarray) for item in data.images]
    assert kinds == [True] * 4 + [False] * (len(sources) - 4)
    assert [p.name for p in data.images[4:]] == [p.name for p in sources[4:]]
    assert [p.name for p, _ in data.skipped] == ["zz_broken.png"] and len(data.sizes) == len(sources)
    for i in (0, 3, 4, len(sources) - 1):  # a kept image and a streamed one read the same
        assert np.array_equal(data.at_model_size(i, pre), pre.resize(read_image(sources[i], 1)))
    none = load_training_set(folder, pre, cache_mb=0)
    assert all(isinstance(item, Path) for item in none.images)


def test_training_streamed_or_cached_learns_the_same(tiny_config, tiny_data):
    from anomaly_ae import Detector

    good = tiny_data / "train" / "good"
    cached = Detector(tiny_config).fit(good)
    streamed = Detector(tiny_config.with_overrides({"data.cache_mb": 0})).fit(good)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(streamed.history_[key], cached.history_[key], rtol=1e-5)
    assert streamed.threshold_ == pytest.approx(cached.threshold_, rel=1e-5)


def test_the_self_check_uses_a_seeded_subset_of_a_large_holdout(tiny_detector):
    from anomaly_ae.evaluation.self_check import MAX_GOOD

    rng = np.random.default_rng(3)
    good = np.clip(120 + rng.normal(0, 8, (MAX_GOOD + 30, 32, 32, 1)), 0, 255).astype(np.uint8)
    first, again = tiny_detector.self_check(good), tiny_detector.self_check(good)
    assert first["n_good"] == MAX_GOOD and first["n_defective"] == 2 * MAX_GOOD
    assert first == again  # the same subset and defects every time
