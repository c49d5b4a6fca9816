"""Odd and hostile inputs: each costs one row with a one-line reason (or is scored correctly); the run goes on."""

from __future__ import annotations

import csv
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from anomaly_ae.cli.main import app
from anomaly_ae.data.images import ImageReadError, list_images, max_pixels_default, read_image

runner = CliRunner()
RNG = np.random.default_rng(0)
GRAY = (RNG.random((32, 32)) * 255).astype(np.uint8)


def _png_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _jpeg_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels but holds no pixel data (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def _exif_rotated_jpeg() -> bytes:
    """A 40 wide x 24 high JPEG whose EXIF orientation 6 says: rotate 90 degrees clockwise for display."""
    im = Image.fromarray(np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (24, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


def _palette_png() -> bytes:
    im = Image.fromarray(GRAY).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _pil_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


COLOUR = np.dstack([GRAY, GRAY // 2, 255 - GRAY])  # RGB
#: two flat frames (grey 40, then 200): a decoder that reads the first frame or page gives 40 everywhere
FRAMES = [Image.fromarray(np.full((32, 32), v, np.uint8)) for v in (40, 200)]
#: odd colour models and containers that score (the README's "Image files" rules); name -> bytes
ODD_VALID: dict[str, bytes] = {
    "cmyk.jpg": _pil_bytes(Image.fromarray(COLOUR).convert("CMYK"), "JPEG", quality=95, subsampling=0),
    "progressive.jpg": _pil_bytes(Image.fromarray(COLOUR), "JPEG", progressive=True, quality=95, subsampling=0),
    "animated.png": _pil_bytes(FRAMES[0], "PNG", save_all=True, append_images=FRAMES[1:]),
    "gif_named.png": _pil_bytes(FRAMES[0], "GIF", save_all=True, append_images=FRAMES[1:]),
    "webp_named.png": _pil_bytes(Image.fromarray(COLOUR), "WEBP", lossless=True),
    "multipage.tiff": _pil_bytes(FRAMES[0], "TIFF", save_all=True, append_images=FRAMES[1:]),
    "grey_alpha.png": _pil_bytes(Image.fromarray(np.dstack([GRAY, np.full_like(GRAY, 128)]), "LA"), "PNG"),
    "one_bit.png": _pil_bytes(Image.fromarray(GRAY > 127), "PNG"),
    # 4 px wide, 4,096 px tall: its legend once enlarged it 90x to a 368,640 px JPEG, which stopped the batch
    "aspect_4096x4.png": _png_bytes(np.tile(np.linspace(0, 255, 4096, dtype=np.uint8)[:, None], (1, 4))),
}

# name -> (bytes, expected reason or None when the file must be scored)
CASES: dict[str, tuple[bytes, str | None]] = {
    "empty.png": (b"", "empty file (0 bytes)"),
    "truncated.png": (_png_bytes(GRAY)[:300], "truncated PNG"),
    "truncated.jpg": (_jpeg_bytes(GRAY)[:200], "truncated JPEG"),
    "random_bytes.jpg": (RNG.integers(0, 256, 2048, dtype=np.uint8).tobytes(), "cannot decode"),
    "notes.png": (b"inspection notes, not an image\n" * 10, "cannot decode"),
    "one_pixel.png": (_png_bytes(np.zeros((1, 1), np.uint8)), "image too small: 1x1"),
    "huge.png": (_png_header_only(20000, 20000), "400 megapixels (limit 100"),
    "large.png": (_png_header_only(12000, 10000), "image too large: 12000x10000 = 120 megapixels"),
    "deep16.png": (_png_bytes(GRAY.astype(np.uint16) * 257), None),
    "deep16.tiff": (cv2.imencode(".tiff", GRAY.astype(np.uint16) * 257)[1].tobytes(), None),
    "rgba.png": (_png_bytes(np.dstack([GRAY, GRAY, GRAY, np.full_like(GRAY, 128)])), None),
    "palette.png": (_palette_png(), None),
    "colour.png": (_png_bytes(np.dstack([GRAY, GRAY // 2, 255 - GRAY])), None),
    "exif_rotated.jpg": (_exif_rotated_jpeg(), None),
    "défaut ü 1.png": (_png_bytes(GRAY), None),
    "nested/deeper/still/part.png": (_png_bytes(GRAY), None),
    **{name: (data, None) for name, data in ODD_VALID.items()},
}


@pytest.fixture()
def hostile_folder(tmp_path: Path) -> Path:
    root = tmp_path / "inputs"
    for name, (data, _) in CASES.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "nested" / "loop").symlink_to("..", target_is_directory=True)  # a symlink loop
    (root / "folder.png").mkdir()  # a folder with an image extension
    (root / "readme.txt").write_text("not an image extension: ignored")
    return root


def test_each_hostile_input_gets_its_reason_and_the_run_goes_on(tiny_detector, hostile_folder, tmp_path):
    run = tiny_detector.save(tmp_path / "run")
    res = runner.invoke(app, ["score", str(run), str(hostile_folder), "--out", str(tmp_path / "out")])
    assert res.exit_code == 3, res.output  # some files failed, the others are scored
    with open(tmp_path / "out" / "scores.csv", encoding="utf-8") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(CASES)  # one row per file: the loop is not walked twice, no folder, no .txt
    for name, (_, reason) in CASES.items():
        row = rows[name]
        if reason is None:
            assert row["error"] == "" and np.isfinite(float(row["score"])), (name, row)
            assert (tmp_path / "out" / "heatmaps" / f"{name}.jpg").is_file()
        else:
            assert row["score"] == "" and reason in row["error"] and "\n" not in row["error"], (name, row)
            assert f"failed {name}" in " ".join(res.output.split())


def test_odd_but_valid_images_decode_to_what_they_show(tmp_path):
    for name in ("deep16.png", "deep16.tiff"):
        p = tmp_path / name
        p.write_bytes(CASES[name][0])
        np.testing.assert_array_equal(read_image(p, 1)[..., 0], GRAY)  # 16 bit scaled to 8 bit
    p = tmp_path / "exif.jpg"
    p.write_bytes(CASES["exif_rotated.jpg"][0])
    rotated = read_image(p, 1)
    assert rotated.shape == (40, 24, 1)  # EXIF orientation applied: 24x40 stored, shown 40 high
    assert rotated[0, 0, 0] < 40 and rotated[-1, 0, 0] > 200  # the left-to-right ramp now runs top-down
    p = tmp_path / "colour.png"
    p.write_bytes(CASES["colour.png"][0])
    rgb = read_image(p, 3)
    np.testing.assert_array_equal(rgb[..., 0], 255 - GRAY)  # RGB order: OpenCV wrote (B, G, R) = (GRAY, ., 255 - GRAY)
    np.testing.assert_array_equal(rgb[..., 2], GRAY)
    gray_of_rgb = read_image(p, 1)
    assert gray_of_rgb.shape == (32, 32, 1)
    p = tmp_path / "gray.png"
    p.write_bytes(_png_bytes(GRAY))
    as_rgb = read_image(p, 3)
    assert as_rgb.shape == (32, 32, 3) and (as_rgb == GRAY[..., None]).all()
    p = tmp_path / "palette.png"
    p.write_bytes(CASES["palette.png"][0])
    assert np.abs(read_image(p, 1)[..., 0].astype(int) - GRAY).mean() < 12  # 16-colour palette


@pytest.mark.parametrize("name", sorted(ODD_VALID))
def test_odd_colour_models_and_containers_read_as_the_readme_says(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(ODD_VALID[name])
    rgb = read_image(p, 3).astype(int)
    if name in ("animated.png", "gif_named.png", "multipage.tiff"):
        assert (rgb == 40).all()  # the first frame / page only
    elif name in ("cmyk.jpg", "progressive.jpg", "webp_named.png"):  # colour, in RGB order, by content not name
        assert np.abs(rgb - COLOUR).mean() < 4
    elif name == "grey_alpha.png":
        assert (rgb == GRAY[..., None]).all()  # alpha dropped, not blended with a background
    elif name == "one_bit.png":
        assert set(np.unique(rgb)) == {0, 255} and ((rgb[..., 0] == 255) == (GRAY > 127)).all()
    else:
        assert rgb.shape == (4096, 4, 3) and rgb[0, 0, 0] == 0 and rgb[-1, 0, 0] == 255


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    p = tmp_path / "a.png"
    p.write_bytes(_png_bytes(np.zeros((100, 100), np.uint8)))
    assert read_image(p, 1).shape == (100, 100, 1)
    with pytest.raises(ImageReadError, match="image too large: 100x100"):
        read_image(p, 1, max_pixels=5000)
    monkeypatch.setenv("ANOMALY_AE_MAX_MEGAPIXELS", "0.005")
    with pytest.raises(ImageReadError, match="limit 0.005"):
        read_image(p, 1)
    for typo in ("-5", "0", "nan", "inf", "lots"):  # never "refuse everything" nor "no limit"
        monkeypatch.setenv("ANOMALY_AE_MAX_MEGAPIXELS", typo)
        assert read_image(p, 1).shape == (100, 100, 1)
        assert max_pixels_default() == 100_000_000


def test_symlink_loops_end_and_links_to_files_count(tmp_path):
    root = tmp_path / "r"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.png").write_bytes(_png_bytes(GRAY))
    (root / "a" / "b" / "up").symlink_to("../..", target_is_directory=True)
    (root / "a" / "self").symlink_to(".", target_is_directory=True)
    (root / "link.png").symlink_to(root / "a" / "b" / "x.png")
    (root / "broken.png").symlink_to(root / "missing.png")
    listed = list_images(root)
    assert [p.relative_to(root).as_posix() for p in listed] == ["a/b/x.png", "broken.png", "link.png"]
    with pytest.raises(ImageReadError, match="broken symbolic link"):  # listed, so that it gets its row
        read_image(root / "broken.png", 1)


def test_empty_and_non_image_folders_are_usage_errors(tiny_detector, tmp_path):
    run = tiny_detector.save(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    for folder in ("empty", "docs"):
        res = runner.invoke(app, ["score", str(run), str(tmp_path / folder), "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and "holds no images" in res.output
    res = runner.invoke(app, ["train", str(tmp_path / "empty"), "--no-track", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2


VALID = [_png_bytes(GRAY), _jpeg_bytes(GRAY), cv2.imencode(".bmp", GRAY)[1].tobytes(),
         cv2.imencode(".tiff", GRAY)[1].tobytes(), CASES["exif_rotated.jpg"][0]]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid file with a few bytes flipped, a slice cut out, or random bytes appended or prepended."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        a = draw(st.integers(0, len(data)))
        b = draw(st.integers(a, len(data)))
        del data[a:b]
    extra = draw(st.binary(max_size=64))
    return bytes(data + extra) if draw(st.booleans()) else bytes(extra + data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=4096), mutated()), channels=st.sampled_from([1, 3]))
def test_decoder_only_returns_an_image_or_raises_our_error(tmp_path, content, channels):
    p = tmp_path / "fuzz.png"
    p.write_bytes(content)
    try:
        image = read_image(p, channels)
    except ImageReadError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == channels
        assert min(image.shape[:2]) >= 4


def test_unreadable_file_permissions(tmp_path, run_unprivileged):
    import json
    import sys

    p = tmp_path / "secret.png"
    p.write_bytes(_png_bytes(GRAY))
    p.chmod(0)
    code = ("import json,sys; from anomaly_ae.data.images import ImageReadError, read_image\n"
            "try: read_image(sys.argv[1], 1); print(json.dumps('read'))\n"
            "except ImageReadError as e: print(json.dumps(str(e)))")
    proc = run_unprivileged([sys.executable, "-c", code, str(p)])
    assert json.loads(proc.stdout).startswith("cannot read file: Permission denied"), proc.stderr


# ----------------------------------------------------------------------------- hostile configs
def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" YAML document: ``width ** levels`` strings from ``levels`` lines of aliases."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"data: {{image_size: *a{levels}}}", ""])


def test_yaml_alias_bomb_is_refused_in_a_line_at_once(tiny_data, tmp_path):
    """Before: the 9 ** 10 values were expanded by the config's validation (killed after 300 s)."""
    import time

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    t0 = time.perf_counter()
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(bomb), "--no-track",
                              "--out", str(tmp_path / "m")])
    seconds = time.perf_counter() - t0
    assert res.exit_code == 2 and seconds < 2.0, (seconds, res.output)
    message = " ".join(res.output.split())
    assert "aliases expand to more than 10,000 values" in message and "Traceback" not in res.output
    assert not (tmp_path / "m").exists()


def test_recursive_and_oversized_yaml_are_refused_and_ordinary_anchors_load(tmp_path):
    from anomaly_ae.config import ConfigError, resolve_config
    from anomaly_ae.io.yamlfile import MAX_YAML_BYTES, YAMLTooLarge, load_yaml

    with pytest.raises(YAMLTooLarge, match="refers to itself"):
        load_yaml("a: &x [1, *x]\n")
    with pytest.raises(YAMLTooLarge, match="more than a config"):
        load_yaml("# " + "x" * MAX_YAML_BYTES + "\n")
    assert load_yaml(_alias_bomb(levels=2, width=9)) is not None  # 9 ** 3 = 729 values: a bound, not a ban
    # the anchors and merge keys people write in configs still work
    assert load_yaml("base: &opt {epochs: 2}\ntrain: {<<: *opt, batch_size: 4}\n")["train"] == {
        "epochs": 2, "batch_size": 4}
    big = tmp_path / "big.yaml"
    big.write_text("data: {channels: 3}\n" + "#" * (MAX_YAML_BYTES + 10) + "\n")
    with pytest.raises(ConfigError, match="more than a config's"):
        resolve_config(str(big), None, {})


# ----------------------------------------------------------------------------- folders the default trains on
def _folder(root: Path, shapes: list[tuple[int, ...]]) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for i, shape in enumerate(shapes):
        cv2.imwrite(str(root / f"{i:02d}.png"), (rng.random(shape) * 60 + 100).astype(np.uint8))
    return root


def test_the_default_trains_on_small_and_on_mixed_images(tmp_path):
    """32x32 crops, and a folder mixing sizes, aspect ratios and grey / colour / colour + alpha files, train with
    the shipped default and no flags (the default of issue 38's filing refused 32x32: 'patch_size 64 is larger')."""
    import json

    small = _folder(tmp_path / "small", [(32, 32, 3)] * 12)
    mixed_shapes = [(32, 32), (48, 80, 3), (200, 120, 4), (64, 64), (300, 500, 3), (40, 40, 4)] * 2
    mixed = _folder(tmp_path / "mixed", mixed_shapes)
    for folder, size in ((small, [32, 32]), (mixed, [64, 64])):  # mixed: median 56 x 72, to 16 px steps
        run = tmp_path / f"run-{folder.name}"
        res = runner.invoke(app, ["train", str(folder), "--out", str(run), "--no-track"])
        assert res.exit_code == 0 and "Traceback" not in res.output, res.output
        config = json.loads((run / "detector.json").read_text())["config"]
        assert config["model"]["name"] == "feature" and config["data"]["image_size"] == size
        res = runner.invoke(app, ["score", str(run), str(folder), "--out", str(tmp_path / f"scores-{folder.name}")])
        assert res.exit_code == 0, res.output
        with open(tmp_path / f"scores-{folder.name}" / "scores.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 12 and all(r["error"] == "" and np.isfinite(float(r["score"])) for r in rows)


def test_a_patch_preset_fits_its_patch_to_small_images_and_says_so_once(tmp_path):
    """The repair preset (64 px patches) on 32x32 images: patches of 32, images not enlarged, one note."""
    import json

    small = _folder(tmp_path / "small", [(32, 32, 3)] * 12)
    res = runner.invoke(app, ["train", str(small), "--config", "repair", "--epochs", "1", "--out",
                              str(tmp_path / "run"), "--no-track"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert text.count("data.patch_size 64 is larger than the training images (32x32 at model size): "
                      "training on patches of 32 px") == 1
    data = json.loads((tmp_path / "run" / "detector.json").read_text())["config"]["data"]
    assert data["image_size"] == [32, 32] and data["patch_size"] == 32
