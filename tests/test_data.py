"""studio.engine.data: decoding every mode, skipping bad files, scanning, loading, caching."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image_zoo, make_tiny_dataset, write_png_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageFile

from studio.core.errors import NoUsableImages
from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine import data
from studio.engine.data import (
    REASONS,
    ImageRejected,
    Thumbnail,
    fit_square,
    load_dataset,
    open_image,
    scan_folder,
    split_holdout,
    to_rgb,
)

GREEN_BG = (0, 255, 0)


def finish(job, progress: list[Progress] | None = None):
    """Run a job; return its result, or raise what a failed job reported."""
    outcome = run_sync(job, CancelToken(), progress.append if progress is not None else None)
    if outcome.status is Status.FAILED:
        raise AssertionError(outcome.error, outcome.details)
    return outcome.result


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_image_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def zoo_scan(zoo: dict) -> data.ScanResult:
    return finish(scan_folder(zoo["root"], max_pixels=zoo["max_pixels"]))


def pixels(zoo: dict, rel: str, background=(255, 255, 255)) -> np.ndarray:
    img = open_image(zoo["root"] / rel, background=background)
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


# -- decoding -------------------------------------------------------------------------------


def test_scan_finds_every_good_image_and_skips_every_bad_file(zoo: dict, zoo_scan) -> None:
    assert {e.path: (e.width, e.height) for e in zoo_scan.entries} == zoo["good"]
    assert {e.path: e.mode for e in zoo_scan.entries} == zoo["modes"]
    assert {s.path: s.reason for s in zoo_scan.skipped} == zoo["bad"]
    assert all(s.reason in REASONS for s in zoo_scan.skipped)
    listed = {e.path for e in zoo_scan.entries} | {s.path for s in zoo_scan.skipped}
    assert not listed & set(zoo["hidden"])
    assert "rgb.txt" not in listed  # a caption, not a skipped file
    assert [e.path for e in zoo_scan.entries] == sorted(e.path for e in zoo_scan.entries)


def test_captions_and_describe_skipped(zoo: dict, zoo_scan) -> None:
    captions = {e.path: e.caption for e in zoo_scan.entries if e.caption is not None}
    assert captions == zoo["captions"]
    lines = zoo_scan.describe_skipped()
    assert "empty.jpg: zero bytes (the file is empty)" in lines
    assert any(line.startswith("truncated.png: truncated") for line in lines)


@pytest.mark.parametrize(
    ("rel", "top_left", "bottom_right"),
    [
        ("rgb.png", (10, 20, 30), (220, 210, 0)),
        ("gray.png", (77, 77, 77), (77, 77, 77)),
        ("bilevel.png", (0, 0, 0), (255, 255, 255)),
        ("palette.png", (0, 128, 255), (0, 128, 255)),
        ("palette_alpha.png", GREEN_BG, (0, 0, 255)),  # transparent -> background
        ("gray_alpha.png", GREEN_BG, (100, 100, 100)),
        ("rgba.png", GREEN_BG, (0, 255, 0)),
        ("cmyk.tif", (0, 255, 255), (0, 255, 255)),
        ("animated.gif", (255, 0, 0), (255, 0, 0)),  # the first frame
        ("pic.webp", (30, 60, 90), (30, 60, 90)),
        ("pic.bmp", (90, 60, 30), (90, 60, 30)),
        ("ünïcödé 画像.png", (4, 5, 6), (4, 5, 6)),
    ],
)
def test_modes_convert_to_the_right_colours(zoo: dict, rel, top_left, bottom_right) -> None:
    arr = pixels(zoo, rel, background=GREEN_BG)
    assert tuple(arr[0, 0]) == top_left
    assert tuple(arr[-1, -1]) == bottom_right


def test_lossy_modes_are_close(zoo: dict) -> None:
    assert np.abs(pixels(zoo, "cmyk.jpg") - (255, 0, 0)).max() <= 12
    assert np.abs(pixels(zoo, "photo.jpg") - (200, 100, 50)).max() <= 6


def test_16_bit_is_scaled_not_clipped(zoo: dict) -> None:
    assert pixels(zoo, "deep16.png")[..., 0].tolist() == [[255, 128], [0, 1]]
    values = np.array([[65535, 32768, 255]], dtype="<u2")
    for mode, raw in (("I;16B", values.astype(">u2").tobytes()), ("I;16L", values.tobytes())):
        img = to_rgb(Image.frombytes(mode, (3, 1), raw))
        assert np.asarray(img)[0, :, 0].tolist() == [255, 128, 0], mode


def test_exif_orientation_rotates_the_content(zoo: dict) -> None:
    arr = pixels(zoo, "rotated.jpg")
    assert arr.shape == (20, 10, 3)  # stored 20x10, shown 10 wide and 20 tall
    assert np.abs(arr[2, 5] - (255, 0, 0)).max() < 30  # the red left half is now on top
    assert np.abs(arr[17, 5] - (0, 0, 255)).max() < 30


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 100, 255], [0, 100, 255]),  # already 8-bit
        ([0, 32768, 65535], [0, 128, 255]),  # 16-bit in a 32-bit container
        ([-1000, 0, 1000], [0, 128, 255]),  # anything else: its own range
    ],
)
def test_32_bit_integer_images_use_their_range(values, expected) -> None:
    img = Image.fromarray(np.array([values], dtype=np.int32))
    assert img.mode == "I"
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == expected


def test_float_images() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]
    nan = Image.fromarray(np.array([[np.nan, 0.0, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(nan))[0, :, 0].tolist() == [0, 0, 255]


def test_colour_spaces_and_premultiplied_alpha() -> None:
    red = Image.new("RGB", (2, 2), (255, 0, 0))
    assert np.asarray(to_rgb(red.convert("YCbCr")))[0, 0].tolist() == pytest.approx(
        [255, 0, 0], abs=3
    )
    assert np.asarray(to_rgb(Image.new("HSV", (2, 2), (0, 255, 255))))[0, 0].tolist() == [
        255,
        0,
        0,
    ]
    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    lab = ImageCms.applyTransform(red, to_lab)
    assert lab.mode == "LAB"
    assert np.abs(np.asarray(to_rgb(lab))[0, 0].astype(int) - (255, 0, 0)).max() <= 8
    half = to_rgb(Image.new("RGBA", (1, 1), (0, 0, 0, 128)), background=(255, 255, 255))
    assert np.asarray(half)[0, 0].tolist() == pytest.approx([127, 127, 127], abs=1)
    assert to_rgb(Image.new("La", (1, 1), (50, 255))).getpixel((0, 0)) == (50, 50, 50)
    assert to_rgb(Image.new("PA", (1, 1), (0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_pixel_limit_and_decompression_bombs(zoo: dict, tmp_path: Path) -> None:
    with pytest.raises(ImageRejected) as err:
        open_image(zoo["root"] / "big.png", max_pixels=1000)
    assert err.value.reason == "over the pixel limit"
    before = list(warnings.filters)
    # Over Pillow's limit (the warning turned into an error), then over twice it (its error).
    for side in (12_000, 20_000):
        bomb = write_png_header(tmp_path / f"bomb{side}.png", side, side)
        with pytest.raises(ImageRejected) as err:
            open_image(bomb, max_pixels=10**12)
        assert err.value.reason == "over the pixel limit"
    assert list(warnings.filters) == before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ImageRejected) as err:
        open_image(tmp_path / "gone.png")
    assert err.value.reason == "unreadable"


_SEEDS: list[bytes] = []
for _fmt, _mode in (("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "L")):
    _buf = io.BytesIO()
    Image.new(_mode, (6, 5), 90).save(_buf, _fmt)
    _SEEDS.append(_buf.getvalue())


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(min_size=0, max_size=300))
    raw = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=damaged_files())
def test_fuzz_open_image_only_raises_image_rejected(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.png"
    path.write_bytes(raw)
    try:
        img = open_image(path, max_pixels=1_000_000)
    except ImageRejected as err:
        assert err.reason in REASONS
    else:
        assert img.mode == "RGB"


def test_fit_square_resizes_the_short_side_and_crops_the_centre() -> None:
    bands = np.zeros((10, 30, 3), np.uint8)
    bands[:, :10] = (255, 0, 0)
    bands[:, 10:20] = (0, 255, 0)
    bands[:, 20:] = (0, 0, 255)
    out = fit_square(Image.fromarray(bands), 5)
    assert out.shape == (5, 5, 3) and out.dtype == np.uint8
    # Only the green band is kept; Lanczos lets the neighbours bleed a little into the edges.
    assert np.abs(out[:, 1:4].astype(int) - (0, 255, 0)).max() <= 3
    assert np.abs(out.astype(int) - (0, 255, 0)).max() <= 20
    tall = fit_square(Image.fromarray(np.full((300, 100, 3), 7, np.uint8)), 16)
    assert tall.shape == (16, 16, 3) and (tall == 7).all()


# -- scanning ---------------------------------------------------------------------------------


def test_folders_with_no_usable_image_explain_why(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("x")
    outcome = run_sync(_scan_and_require(empty))
    assert outcome.status is Status.FAILED
    assert outcome.error == f"The folder {empty} is empty."

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    (bad / "b.doc").write_text("x")
    outcome = run_sync(_scan_and_require(bad))
    assert outcome.status is Status.FAILED
    assert outcome.error.startswith(f"No usable image in {bad}: 2 files were skipped")

    outcome = run_sync(scan_folder(tmp_path / "nowhere"))
    assert outcome.status is Status.FAILED and "does not exist" in outcome.error
    outcome = run_sync(scan_folder(bad / "b.doc"))
    assert outcome.status is Status.FAILED and "is a file, not a folder" in outcome.error


def _scan_and_require(folder: Path):
    result = yield from scan_folder(folder)
    result.require_usable()
    return result


def test_class_labels_from_subfolders(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n=12, size=8, classes=3)
    nested = root / "class_2" / "deeper"
    nested.mkdir()
    Image.new("RGB", (8, 8)).save(nested / "x.png")
    scan = finish(scan_folder(root))
    assert scan.class_names == ("class_0", "class_1", "class_2")
    for entry, label in zip(scan.entries, scan.labels, strict=True):
        assert scan.class_names[label] == entry.path.split("/")[0]
    assert scan.entries[-1].path == "class_2/deeper/x.png"
    assert scan.size_summary() == [(8, 8, 13)]


def test_progress_and_thumbnails(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n=30, size=40)
    progress: list[Progress] = []
    scan = finish(scan_folder(root, thumbnails=3, thumb_size=24), progress)
    assert len(scan.entries) == 30
    thumbs = [p for p in progress if p.image is not None]
    assert [p.payload for p in thumbs] == [
        Thumbnail(e.path, e.width, e.height) for e in scan.entries[:3]
    ]
    assert all(p.image.shape == (24, 24, 3) and p.image.dtype == np.uint8 for p in thumbs)
    steps = [p.step for p in progress if p.total]
    assert steps == sorted(steps) and steps[-1] == 30
    assert all(p.stage == "scan" for p in progress)


def test_fingerprint_follows_the_files(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n=6, size=8)
    first = finish(scan_folder(root)).fingerprint
    assert finish(scan_folder(root)).fingerprint == first
    target = root / "class_0" / "0000.png"
    Image.new("RGB", (9, 9), (1, 1, 1)).save(target)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    assert finish(scan_folder(root)).fingerprint != first


# -- loading ----------------------------------------------------------------------------------


def test_load_dataset_shapes_and_labels(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n=10, size=16, classes=2)
    scan = finish(scan_folder(root))
    progress: list[Progress] = []
    ds = finish(load_dataset(scan, 8), progress)
    assert len(ds) == 10 and ds.images.shape == (10, 8, 8, 3) and ds.images.dtype == np.uint8
    assert ds.labels is not None and ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]  # sorted: class_0/, class_1/
    assert ds.paths == tuple(e.path for e in scan.entries)
    assert ds.fingerprint == scan.fingerprint and ds.resolution == 8
    assert progress and progress[-1].stage == "decode" and progress[-1].step == 10


def test_root_images_beside_class_folders_give_no_labels(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n=4, size=8)
    Image.new("RGB", (8, 8)).save(root / "loose.png")
    scan = finish(scan_folder(root))
    assert scan.labels[-1] is None and scan.labels[0] == 0
    assert finish(load_dataset(scan, 4)).labels is None


def test_cache_is_used_and_a_corrupt_one_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n=8, size=12)
    cache = tmp_path / "cache"
    scan = finish(scan_folder(root))
    first = finish(load_dataset(scan, 8, cache_dir=cache))
    files = list(cache.glob("*.npy"))
    assert len(files) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")

    with monkeypatch.context() as m:
        m.setattr(data, "open_image", no_decoding)
        second = finish(load_dataset(scan, 8, cache_dir=cache))
    np.testing.assert_array_equal(first.images, second.images)
    assert second.labels.tolist() == first.labels.tolist()

    files[0].write_bytes(b"\x93NUMPY garbage")
    third = finish(load_dataset(scan, 8, cache_dir=cache))
    np.testing.assert_array_equal(first.images, third.images)
    np.testing.assert_array_equal(np.load(files[0], allow_pickle=False), first.images)
    finish(load_dataset(scan, 4, cache_dir=cache))
    assert len(list(cache.glob("*.npy"))) == 2  # another resolution, another entry
    assert not list(cache.glob("*.tmp"))


def test_a_file_gone_since_the_scan_is_skipped(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n=6, size=8)
    scan = finish(scan_folder(root))
    (root / scan.entries[1].path).unlink()
    (root / scan.entries[2].path).write_bytes(b"garbage now")
    ds = finish(load_dataset(scan, 8, cache_dir=tmp_path / "cache"))
    assert len(ds) == 4 and ds.labels is not None and len(ds.labels) == 4
    lost = {s.path: s.reason for s in ds.skipped}
    assert lost == {scan.entries[1].path: "unreadable", scan.entries[2].path: "unreadable"}
    assert not list((tmp_path / "cache").glob("*.npy"))  # an incomplete decode is not cached

    for entry in scan.entries:
        (root / entry.path).unlink(missing_ok=True)
    outcome = run_sync(load_dataset(scan, 8))
    assert outcome.status is Status.FAILED and "No usable image" in outcome.error


def test_load_dataset_refuses_an_empty_scan(tmp_path: Path) -> None:
    scan = finish(scan_folder(tmp_path))
    with pytest.raises(NoUsableImages):
        finish_raw(load_dataset(scan, 8))


def finish_raw(job):
    while True:
        try:
            next(job)
        except StopIteration as done:
            return done.value


# -- holdout ----------------------------------------------------------------------------------


def test_split_holdout() -> None:
    train, held = split_holdout(100, 0.05, seed=3)
    again_train, again_held = split_holdout(100, 0.05, seed=3)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(held, again_held)
    assert len(held) == 5 and not set(train) & set(held)
    assert sorted([*train, *held]) == list(range(100))
    assert list(train) == sorted(train) and list(held) == sorted(held)
    assert not np.array_equal(held, split_holdout(100, 0.05, seed=4)[1])
    assert len(split_holdout(1)[1]) == 0 and len(split_holdout(1)[0]) == 1
    assert len(split_holdout(0)[0]) == 0
    assert len(split_holdout(3, 0.05)[1]) == 1  # min_holdout
    assert len(split_holdout(2, 0.9)[1]) == 1  # at least one image left to train on
    assert len(split_holdout(100_000, 0.5)[1]) == 1000  # max_holdout
