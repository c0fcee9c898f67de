"""The helpers of benchmarks/augment_classifier.py: the rare-class folder builder, the
flips/crops baseline and the classifier. The benchmark itself is run by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.core.errors import StudioError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "augment_classifier.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("augment_classifier_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def _collection(root: Path, per_class: dict[str, int]) -> Path:
    for c, (cls, n) in enumerate(per_class.items()):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (c * 60, i * 10, 0)).save(root / cls / f"{i:03d}.png")
        (root / cls / "notes.txt").write_text("not an image")
    return root


def _names(folder: Path) -> dict[str, set[str]]:
    return {d.name: {p.name for p in d.iterdir()} for d in sorted(folder.iterdir())}


def test_rare_folder_split(bench, tmp_path):
    src = _collection(tmp_path / "src", {"a": 10, "b": 9, "c": 12})
    before = _names(src)
    counts = bench.build_rare_folder(
        src, tmp_path / "train", tmp_path / "test", rare="b", rare_count=2, test_per_class=3
    )
    assert counts == {"train": {"a": 7, "b": 2, "c": 9}, "test": {"a": 3, "b": 3, "c": 3}}
    train, test = _names(tmp_path / "train"), _names(tmp_path / "test")
    for cls in ("a", "b", "c"):
        assert not train[cls] & test[cls]  # the test images are never trained on
        assert train[cls] | test[cls] <= before[cls] - {"notes.txt"}
        for name in test[cls]:  # copied as they are
            assert (tmp_path / "test" / cls / name).read_bytes() == (src / cls / name).read_bytes()
    assert _names(src) == before
    # the same seed gives the same split, another seed another one
    bench.build_rare_folder(
        src, tmp_path / "t2", tmp_path / "s2", rare="b", rare_count=2, test_per_class=3
    )
    assert _names(tmp_path / "t2") == train
    bench.build_rare_folder(
        src, tmp_path / "t3", tmp_path / "s3", rare="b", rare_count=2, test_per_class=3, seed=7
    )
    assert _names(tmp_path / "s3") != test


def test_rare_folder_refusals(bench, tmp_path):
    src = _collection(tmp_path / "src", {"a": 5, "b": 5})
    kw = {"rare_count": 2, "test_per_class": 2}
    with pytest.raises(StudioError, match="no class folder"):
        bench.build_rare_folder(src, tmp_path / "tr", tmp_path / "te", rare="zebra", **kw)
    with pytest.raises(StudioError, match="needs at least 6"):
        bench.build_rare_folder(
            src, tmp_path / "tr", tmp_path / "te", rare="a", rare_count=2, test_per_class=4
        )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.png").write_bytes(b"user's file")
    with pytest.raises(StudioError, match="not a new or empty"):
        bench.build_rare_folder(src, busy, tmp_path / "te", rare="a", **kw)
    assert (busy / "mine.png").read_bytes() == b"user's file"
    assert not (tmp_path / "te").exists()  # refused before anything was copied
    with pytest.raises(StudioError, match="at least one"):
        bench.build_rare_folder(
            src, tmp_path / "tr", tmp_path / "te", rare="a", rare_count=0, test_per_class=2
        )


def test_flips_and_crops(bench):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    plain = bench.flips_and_crops(images, 20, seed=1, shift=0)
    assert plain.shape == (20, 8, 8, 3) and plain.dtype == np.uint8
    variants = [img for im in images for img in (im, im[:, ::-1])]
    assert all(any(np.array_equal(p, v) for v in variants) for p in plain)
    assert any(np.array_equal(p, images[i][:, ::-1]) for p in plain for i in range(3))
    shifted = bench.flips_and_crops(images, 20, seed=1)
    assert not all(any(np.array_equal(p, v) for v in variants) for p in shifted)
    assert np.array_equal(shifted, bench.flips_and_crops(images, 20, seed=1))
    assert bench.flips_and_crops(images, 0, seed=1).shape == (0, 8, 8, 3)


def test_classifier_learns_a_trivial_problem(bench):
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 60, size=(16, 8, 8, 3), dtype=np.uint8)
    light = rng.integers(190, 256, size=(16, 8, 8, 3), dtype=np.uint8)
    x = np.concatenate([dark, light])
    y = np.repeat([0, 1], 16)
    pred = bench.train_and_test((x[::2], y[::2]), (x[1::2], y[1::2]), 2, seed=0, epochs=6)
    assert (pred == y[1::2]).mean() >= 0.95


def test_contact_sheet_places_every_image(bench):
    images = np.stack([np.full((4, 4, 3), v, dtype=np.uint8) for v in (10, 20, 30)])
    sheet = bench.contact_sheet(images, cols=2, gap=1)
    assert sheet.shape == (2 * 5 + 1, 2 * 5 + 1, 3)
    assert sheet[1, 1, 0] == 10 and sheet[1, 6, 0] == 20 and sheet[6, 1, 0] == 30
    assert sheet[6, 6, 0] == 255  # the empty cell stays white
