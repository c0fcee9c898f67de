"""Datasets of two folders: pairs matched by relative path and name, the side-by-side layout,
orphans and size mismatches with their reasons, paired loading and paired augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.core.errors import NoUsableImages
from studio.engine.pairs import (
    AMBIGUOUS,
    NO_PARTNER,
    ODD_WIDTH,
    SIZE_MISMATCH,
    load_pairs,
    paired_crop_flip,
    scan_pairs,
)


def run_job(job):
    """Drive a job to its end; its result, or the error it raised."""
    try:
        while True:
            next(job)
    except StopIteration as done:
        return done.value


def _img(path: Path, size=(16, 16), colour=(200, 10, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _reasons(scan) -> dict[str, str]:
    return {f"{p.side}/{p.path}": p.reason for p in scan.problems}


def test_pairs_match_by_relative_path_and_name_across_extensions(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    _img(a / "cat_01.png")
    _img(b / "cat_01.jpg")
    _img(a / "dogs" / "d1.png", (32, 16))
    _img(b / "dogs" / "d1.webp", (64, 32))  # same shape, larger: kept (both are resized)
    _img(a / "only_a.png")
    _img(b / "only_b.png")
    _img(b / "dogs" / "d2.png")
    _img(a / "wide.png", (32, 16))
    _img(b / "wide.png", (16, 16))  # another shape: a mismatch
    (a / "notes.md").write_text("x")  # the usual bad-file handling still applies
    scan = run_job(scan_pairs(a, b))
    assert [(p.a, p.b) for p in scan.pairs] == [
        ("cat_01.png", "cat_01.jpg"),
        ("dogs/d1.png", "dogs/d1.webp"),
    ]
    reasons = _reasons(scan)
    assert reasons == {
        "A/only_a.png": NO_PARTNER,
        "B/only_b.png": NO_PARTNER,
        "B/dogs/d2.png": NO_PARTNER,
        "A/wide.png": SIZE_MISMATCH,
    }
    mismatch = next(p for p in scan.problems if p.reason == SIZE_MISMATCH)
    assert "32x16" in mismatch.detail and "16x16" in mismatch.detail
    assert [s.path for s in scan.skipped_a] == ["notes.md"]
    assert scan.class_names == ("dogs",)
    lines = scan.describe()
    assert any("only_b.png" in line and NO_PARTNER in line for line in lines)


def test_two_images_with_one_name_are_ambiguous_not_guessed(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    _img(a / "x.png")
    _img(a / "x.jpg")
    _img(b / "x.png")
    _img(a / "y.png")
    _img(b / "y.png")
    scan = run_job(scan_pairs(a, b))
    assert [(p.a, p.b) for p in scan.pairs] == [("y.png", "y.png")]
    assert _reasons(scan) == {"A/x.jpg": AMBIGUOUS, "A/x.png": AMBIGUOUS, "B/x.png": AMBIGUOUS}


def test_side_by_side_files_split_into_left_a_and_right_b(tmp_path: Path):
    folder = tmp_path / "ab"
    left = np.zeros((8, 8, 3), np.uint8)
    right = np.full((8, 8, 3), 255, np.uint8)
    folder.mkdir()
    Image.fromarray(np.concatenate([left, right], axis=1)).save(folder / "p1.png")
    _img(folder / "odd.png", (9, 8))
    scan = run_job(scan_pairs(folder))
    assert scan.side_by_side and [p.a for p in scan.pairs] == ["p1.png"]
    assert _reasons(scan) == {"AB/odd.png": ODD_WIDTH}
    data = run_job(load_pairs(scan, 8))
    assert data.a.shape == data.b.shape == (1, 8, 8, 3)
    assert data.a.max() == 0 and data.b.min() == 255


def test_loading_pairs_keeps_them_aligned_and_names_what_changed(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(3):
        _img(a / f"{i}.png", colour=(10 * i, 0, 0))
        _img(b / f"{i}.png", colour=(0, 10 * i, 0))
    scan = run_job(scan_pairs(a, b))
    (b / "1.png").write_bytes(b"not a png any more")
    data = run_job(load_pairs(scan, 4))
    assert data.paths == (("0.png", "0.png"), ("2.png", "2.png"))
    assert [int(x[0, 0, 0]) for x in data.a] == [0, 20]
    assert [int(x[0, 0, 1]) for x in data.b] == [0, 20]
    assert any("1.png" in s.path for s in data.lost)


def test_no_pair_at_all_is_a_clear_error(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    _img(a / "x.png")
    _img(b / "y.png")
    scan = run_job(scan_pairs(a, b))
    with pytest.raises(NoUsableImages, match="No image .* has a partner"):
        scan.require_usable()
    with pytest.raises(NoUsableImages, match="does not exist"):
        run_job(scan_pairs(a, tmp_path / "missing"))


def test_paired_crop_and_flip_move_both_images_alike():
    g = torch.Generator().manual_seed(0)
    a = torch.arange(2 * 3 * 12 * 12, dtype=torch.float32).view(2, 3, 12, 12)
    b = a * 2 + 1  # a pure function of a, pixel by pixel
    flipped = False
    for _ in range(20):
        ca, cb = paired_crop_flip(a, b, 8, g)
        assert ca.shape == cb.shape == (2, 3, 8, 8)
        assert torch.equal(cb, ca * 2 + 1)  # still aligned, pixel by pixel
        # each image's crop is a window of the original, possibly flipped
        flipped |= bool(ca[0, 0, 0, 0] > ca[0, 0, 0, 1])
    assert flipped


def test_cli_scans_pairs(tmp_path: Path, capsys):
    from studio.cli.main import main

    a, b = tmp_path / "a", tmp_path / "b"
    _img(a / "1.png")
    _img(b / "1.jpg")
    _img(a / "2.png")
    assert main(["data", "scan", "--pairs", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "1 pair" in out and "2.png" in out and NO_PARTNER in out
