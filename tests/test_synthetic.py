import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from anomaly_ae.data.images import list_images
from anomaly_ae.data.synthetic import DEFECTS, generate


def test_layout_counts_and_masks(tiny_data):
    assert len(list_images(tiny_data / "train" / "good")) == 24
    assert len(list_images(tiny_data / "test" / "good")) == 4
    for d in DEFECTS:
        imgs = list_images(tiny_data / "test" / d)
        assert len(imgs) == 2
        for p in imgs:
            mask = cv2.imread(str(tiny_data / "ground_truth" / d / f"{p.stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
            assert mask.shape == (32, 32)
            assert set(np.unique(mask)) == {0, 255}


def test_seeded_and_varied(tmp_path):
    a = generate(tmp_path / "a", n_train=3, n_test_good=1, n_test_defect=1, size=32, seed=5)
    b = generate(tmp_path / "b", n_train=3, n_test_good=1, n_test_defect=1, size=32, seed=5)
    ia = [cv2.imread(str(p), 0) for p in list_images(a)]
    ib = [cv2.imread(str(p), 0) for p in list_images(b)]
    assert all(np.array_equal(x, y) for x, y in zip(ia, ib, strict=True))
    assert not np.array_equal(ia[0], ia[1])


def test_committed_sample_data_is_not_trivial():
    """Global image statistics (what a 'blank' detector sees) must not separate defects."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "sample_data" / "metal_plate" / "test"
    paths = list_images(root)
    assert len(paths) >= 40
    y = np.array([p.parent.name != "good" for p in paths])
    imgs = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(float) for p in paths]
    for stat in (np.mean, np.std, np.max, lambda a: -a.min()):
        auc = roc_auc_score(y, [stat(a) for a in imgs])
        assert auc < 0.9, auc


def test_committed_sample_data_is_what_the_generator_makes(tmp_path):
    """sample_data/ is reproducible from the project's own script with its defaults."""
    from pathlib import Path

    committed = Path(__file__).resolve().parent.parent / "sample_data" / "metal_plate"
    fresh = generate(tmp_path)
    rel = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*.png"))
    assert rel == sorted(p.relative_to(committed).as_posix() for p in committed.rglob("*.png"))
    assert len(list_images(committed / "train" / "good")) >= 60
    for r in rel:
        a = cv2.imread(str(fresh / r), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(committed / r), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(a, b), r
