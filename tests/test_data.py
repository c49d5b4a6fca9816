import cv2
import numpy as np
import pytest

from anomaly_ae.data.images import ImageReadError, Preprocessing, list_images, load_folder, read_image, split_holdout
from anomaly_ae.scoring.maps import resize_map


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def test_list_images_recursive_sorted_and_filtered(tmp_path):
    img = np.zeros((4, 4), np.uint8)
    for rel in ["b.png", "a.jpg", "sub/c.bmp", "sub/deeper/d.tiff", "x.TIF"]:
        _write(tmp_path / rel, img)
    (tmp_path / "notes.txt").write_text("no")
    (tmp_path / ".hidden").mkdir()
    _write(tmp_path / ".hidden" / "e.png", img)
    rels = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert rels == ["a.jpg", "b.png", "sub/c.bmp", "sub/deeper/d.tiff", "x.TIF"]


def test_read_image_gray_and_rgb_conversions(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 2] = 10
    p = _write(tmp_path / "c.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    as_rgb = read_image(p, 3)
    assert as_rgb.shape == (6, 8, 3) and as_rgb.dtype == np.uint8
    np.testing.assert_array_equal(as_rgb, rgb)  # RGB order, not OpenCV's BGR
    as_gray = read_image(p, 1)
    assert as_gray.shape == (6, 8, 1)
    assert abs(int(as_gray[0, 0, 0]) - round(0.299 * 200 + 0.114 * 10)) <= 1

    g = _write(tmp_path / "g.png", np.full((5, 5), 77, np.uint8))
    assert read_image(g, 3).shape == (5, 5, 3)
    assert (read_image(g, 3) == 77).all()


def test_read_image_16bit_and_rgba(tmp_path):
    p16 = _write(tmp_path / "d.png", np.full((4, 4), 65535, np.uint16))
    assert read_image(p16, 1).max() == 255
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1] = 255
    p = _write(tmp_path / "a.png", rgba)
    out = read_image(p, 3)
    assert out.shape == (4, 4, 3) and (out[..., 1] == 255).all() and (out[..., 0] == 0).all()


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "empty file"), (b"this is text", "cannot decode"), (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated PNG")],
)
def test_bad_files_raise_one_line_reason(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(p, 1)
    assert "\n" not in str(info.value)


def test_truncated_png_is_an_error(tmp_path):
    p = _write(tmp_path / "t.png", (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ImageReadError):
        read_image(p, 1)


def test_preprocessing_scales_resizes_and_converts():
    pre = Preprocessing(image_size=(8, 16), channels=1)
    img = np.full((32, 64, 3), 255, np.uint8)
    x = pre([img, np.zeros((4, 4), np.uint8)])
    assert x.shape == (2, 8, 16, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[1], 0.0)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    rgb = Preprocessing(image_size=(8, 8), channels=3)(np.full((8, 8, 1), 0.5, np.float32))
    assert rgb.shape == (1, 8, 8, 3) and np.allclose(rgb, 0.5)


def test_split_holdout_is_seeded_disjoint_and_complete():
    tr, ho = split_holdout(20, 0.15, seed=3)
    assert len(ho) == 3 and len(tr) == 17
    assert sorted(np.concatenate([tr, ho]).tolist()) == list(range(20))
    tr2, ho2 = split_holdout(20, 0.15, seed=3)
    np.testing.assert_array_equal(ho, ho2)
    assert not np.array_equal(split_holdout(20, 0.15, seed=4)[1], ho)
    assert len(split_holdout(2, 0.01, 0)[1]) == 1
    with pytest.raises(ValueError):
        split_holdout(1, 0.5, 0)


def test_load_folder_skips_bad_files(tmp_path):
    _write(tmp_path / "ok.png", np.full((10, 10), 9, np.uint8))
    (tmp_path / "zero.png").write_bytes(b"")
    res = load_folder(list_images(tmp_path), Preprocessing((4, 4), 1))
    assert res.images.shape == (1, 4, 4, 1) and (res.images == 9).all()
    assert [(p.name, "empty" in e) for p, e in res.failures] == [("zero.png", True)]


def test_a_batch_is_the_same_whenever_and_wherever_it_is_made():
    """Batch i of epoch e comes from (seed, e, i): augmentation and synthetic defects do not depend on the
    order batch threads make them in (train.workers), nor on a resume."""
    from anomaly_ae.config import AugmentConfig
    from anomaly_ae.data.anomalies import AnomalySynthesizer
    from anomaly_ae.data.dataset import ImageDataset

    images = np.random.default_rng(0).integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    kwargs = {"augment": AugmentConfig(hflip=True, brightness=0.3, rotate=10), "shuffle": True, "seed": 3,
              "patch_size": 16, "patches_per_image": 2, "synthetic": AnomalySynthesizer(), "masks": True}
    a = ImageDataset(images, Preprocessing((32, 32), 3), 4, **kwargs)
    b = ImageDataset(images, Preprocessing((32, 32), 3), 4, workers=2, **kwargs)
    later = [a[i] for i in reversed(range(len(a)))][::-1]  # made in the opposite order
    for i in range(len(a)):
        x, y = b[i]
        np.testing.assert_array_equal(x, later[i][0])
        np.testing.assert_array_equal(y["mask"], later[i][1]["mask"])
    a.set_epoch(1)
    assert not np.array_equal(a[0][0], later[0][0])  # a new epoch draws anew


def test_training_is_the_same_with_one_or_two_batch_threads(tiny_data):
    """train.workers 2 (the default since issue 26) learns exactly what 1 learns."""
    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.detector import Detector
    from tests.conftest import TINY

    cfg = DetectorConfig.model_validate(TINY).with_overrides({
        "data.channels": 3, "data.patch_size": 16, "data.patches_per_image": 2, "data.augment.hflip": True,
        "train.synthetic_anomalies": {"probability": 0.5}, "train.epochs": 2})
    losses = [Detector(cfg.with_overrides({"train.workers": w})).fit(tiny_data / "train" / "good").history_["loss"]
              for w in (1, 2)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert DetectorConfig().train.workers == 2 and DetectorConfig.from_preset().train.workers == 2


# ----------------------------------------------------------------------------- aspect: pad (issue 36)
def test_fit_box_keeps_the_aspect_ratio_and_mirror_pad_fills_any_margin():
    from anomaly_ae.data.images import fit_box, mirror_pad

    assert fit_box((460, 1130), (416, 1024)) == (0, 1, 416, 1022)  # BSData: almost the whole input
    assert fit_box((1000, 100), (64, 64)) == (0, 29, 64, 6)  # a tall strip: centred, 1:10 kept (6.4 -> 6)
    assert fit_box((64, 64), (64, 64)) == (0, 0, 64, 64)
    strip = np.arange(3 * 4, dtype=np.uint8).reshape(3, 4, 1)
    out = mirror_pad(strip, 10, 11, 0, 0)  # margins wider than the image: mirrored again and again
    assert out.shape == (24, 4, 1)
    np.testing.assert_array_equal(out[10:13], strip)
    np.testing.assert_array_equal(out[9], strip[1])  # BORDER_REFLECT_101: the edge row is not repeated
    np.testing.assert_array_equal(out[13], strip[1])
    assert set(np.unique(out)) == set(np.unique(strip))  # only the image's own pixels
    one = mirror_pad(np.full((1, 5, 1), 7, np.uint8), 3, 3, 0, 0)  # 1 px high: repeated
    assert one.shape == (7, 5, 1) and (one == 7).all()


def test_pad_keeps_shapes_round_and_the_map_comes_back_to_the_image():
    image = np.zeros((100, 400, 1), np.uint8)
    cv2.circle(image, (200, 50), 30, 255, -1)  # a round defect on a long part
    pad = Preprocessing((128, 128), 1, aspect="pad")
    stretch = Preprocessing((128, 128), 1)
    top, left, bh, bw = pad.box((100, 400))
    assert (top, left, bh, bw) == (48, 0, 32, 128)
    ys, xs = np.nonzero(pad.resize(image)[top : top + bh, left : left + bw, 0] > 127)
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1  # still round (its mirror images lie outside)
    ys, xs = np.nonzero(stretch.resize(image)[..., 0] > 127)
    assert (ys.max() - ys.min()) > 3 * (xs.max() - xs.min())  # squashed: 4x taller than wide
    amap = np.zeros((128, 128), np.float32)
    amap[top : top + bh, left : left + bw] = 1.0  # the image's box; the mirrored margin is dropped
    back = resize_map(amap, (100, 400), pad.box((100, 400)))
    assert back.shape == (100, 400) and back.dtype == np.float32 and (back == 1.0).all()
    assert resize_map(amap, (100, 400), stretch.box((100, 400))).mean() < 0.3


def test_aspect_is_saved_and_old_models_stretch():
    from anomaly_ae.config import DetectorConfig

    pad = Preprocessing((64, 128), 3, (460, 1130), aspect="pad")
    assert Preprocessing.from_dict(pad.to_dict()) == pad
    old = {k: v for k, v in pad.to_dict().items() if k != "aspect"}  # detector.json before the field
    assert Preprocessing.from_dict(old).aspect == "stretch"
    assert pad.with_source_size([(10, 20)]).aspect == "pad"
    assert DetectorConfig().data.aspect == "stretch"  # a user's config as before
    # the default too: on mixed shapes its self-check preferred stretch (benchmarks/README, issue 36)
    assert DetectorConfig.from_preset().data.aspect == "stretch"
    assert DetectorConfig().with_overrides({"data.aspect": "pad"}).data.aspect == "pad"


def test_a_padded_model_scores_any_shape_and_saves_its_rule(tiny_config, tiny_data, tmp_path):
    import json

    from anomaly_ae.detector import Detector

    det = Detector(tiny_config.with_overrides({"data.aspect": "pad"})).fit(tiny_data / "train" / "good")
    assert det.preprocessing_.aspect == "pad"
    long = (np.random.default_rng(0).random((20, 90, 3)) * 255).astype(np.uint8)
    scores, maps = det.score_images([long])
    assert maps[0].shape == (20, 90) and np.isfinite(maps[0]).all()
    model_map = det.scorer_.score_model_size(det.preprocessing_([long]))[1][0]
    np.testing.assert_allclose(maps[0], resize_map(model_map, (20, 90), det.preprocessing_.box((20, 90))),
                               rtol=1e-6)
    run = det.save(tmp_path / "run")
    assert json.loads((run / "detector.json").read_text())["preprocessing"]["aspect"] == "pad"
    again = Detector.load(run)
    assert again.preprocessing_.aspect == "pad"
    np.testing.assert_allclose(again.score_images([long])[0], scores, rtol=1e-5)
