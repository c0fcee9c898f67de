"""The crop-folder builder of benchmarks/small_folder.py (issue 17's benchmark): folder sizes,
determinism, held-out crops disjoint from training crops, and refusing folders it did not make.
Synthetic "photographs" stand in for scikit-image's, so nothing is downloaded."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sf():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "small_folder_bench", ROOT / "benchmarks" / "small_folder.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("small_folder_bench", None)
        sys.path.remove(str(ROOT / "benchmarks"))


def _photos() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        f"p{i}.png": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for i, (h, w) in enumerate([(120, 200), (160, 150), (100, 300)])
    }


def _overlaps(a: list, b: list) -> bool:
    """Whether box a = [photo, l, t, r, b, mirrored] shares a pixel with box b."""
    return a[0] == b[0] and a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]


def test_folders_have_the_sizes_are_nested_and_held_out_is_disjoint(sf, tmp_path):
    photos = _photos()
    manifest = sf.build_collection(photos, tmp_path / "c", sizes=(5, 20, 60), heldout=15)
    for name, n in [("train-5", 5), ("train-20", 20), ("train-60", 60), ("heldout", 15)]:
        files = sorted((tmp_path / "c" / name).glob("*.png"))
        assert len(files) == n
        with Image.open(files[0]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    folders = manifest["folders"]
    assert folders["train-5"] == folders["train-60"][:5]  # nested
    assert (tmp_path / "c" / "train-5" / "00003.png").read_bytes() == (
        tmp_path / "c" / "train-60" / "00003.png"
    ).read_bytes()
    # No held-out crop shares a pixel with any training crop, and each lies in its photo.
    assert not any(_overlaps(h, t) for h in folders["heldout"] for t in folders["train-60"])
    for box in folders["heldout"] + folders["train-60"]:
        h, w = photos[box[0]].shape[:2]
        assert 0 <= box[1] < box[3] <= w and 0 <= box[2] < box[4] <= h
        assert box[3] - box[1] == box[4] - box[2]  # square
    assert {b[0] for b in folders["train-60"]} == set(photos)  # every photo is used
    saved = json.loads((tmp_path / "c" / sf.MANIFEST).read_text())
    assert saved["folders"] == folders


def test_the_same_seed_gives_the_same_files_and_another_seed_others(sf, tmp_path):
    photos = _photos()
    sf.build_collection(photos, tmp_path / "a", sizes=(10,), heldout=4, seed=3)
    sf.build_collection(photos, tmp_path / "b", sizes=(10,), heldout=4, seed=3)
    sf.build_collection(photos, tmp_path / "c", sizes=(10,), heldout=4, seed=4)
    for name in ["train-10", "heldout"]:
        a = [p.read_bytes() for p in sorted((tmp_path / "a" / name).iterdir())]
        b = [p.read_bytes() for p in sorted((tmp_path / "b" / name).iterdir())]
        c = [p.read_bytes() for p in sorted((tmp_path / "c" / name).iterdir())]
        assert a == b and a != c


def test_rebuilds_its_own_folder_but_refuses_others(sf, tmp_path):
    photos = _photos()
    ours = tmp_path / "ours"
    sf.build_collection(photos, ours, sizes=(4,), heldout=3)
    (ours / "train-4" / "00000.png").write_bytes(b"damaged")
    sf.build_collection(photos, ours, sizes=(4,), heldout=3)  # ours: rebuilt
    with Image.open(ours / "train-4" / "00000.png") as im:
        assert im.size == (32, 32)

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(SystemExit, match="not made by this script"):
        sf.build_collection(photos, theirs, sizes=(4,), heldout=3)
    assert (theirs / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in theirs.iterdir()) == ["holiday.jpg"]

    link = tmp_path / "link"
    link.symlink_to(ours, target_is_directory=True)
    with pytest.raises(SystemExit, match="not a folder"):
        sf.build_collection(photos, link, sizes=(4,), heldout=3)


def test_reads_photos_from_a_wheel_or_a_folder_and_names_what_is_missing(sf, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((40, 50, 3), 7, np.uint8)).save(folder / "astronaut.png")
    (folder / "notes.txt").write_text("not a photo")
    wheel = tmp_path / "pkg.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(folder / "astronaut.png", "skimage/data/astronaut.png")
    for source in (folder, wheel):
        photos = sf.read_photos(source, ("astronaut.png",))
        assert list(photos) == ["astronaut.png"] and photos["astronaut.png"].shape == (40, 50, 3)
    with pytest.raises(SystemExit, match="chelsea.png"):
        sf.read_photos(wheel, ("astronaut.png", "chelsea.png"))
    (folder / "chelsea.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit, match="cannot read chelsea.png"):
        sf.read_photos(folder, ("astronaut.png", "chelsea.png"))
    with pytest.raises(SystemExit, match="neither a folder"):
        sf.read_photos(tmp_path / "missing", ("astronaut.png",))
