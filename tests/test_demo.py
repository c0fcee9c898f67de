"""studio.engine.demo: the built-in shapes dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.data import load_dataset, scan_folder
from studio.engine.demo import (
    MARKER_NAME,
    PALETTE,
    SHAPES,
    SIZES,
    demo_is_complete,
    ensure_demo_dataset,
    make_demo_dataset,
)

COUNT = 40


def make(folder: Path, **kwargs) -> list[Progress]:
    progress: list[Progress] = []
    outcome = run_sync(make_demo_dataset(folder, **kwargs), CancelToken(), progress.append)
    assert outcome.status is Status.FINISHED, outcome.error
    assert outcome.result == folder
    return progress


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    make(folder, count=COUNT, size=32)
    return folder


def test_layout_marker_and_captions(demo: Path) -> None:
    pngs = sorted(demo.glob("*/*.png"))
    assert len(pngs) == COUNT
    assert {p.parent.name for p in pngs} == set(SHAPES)
    assert demo_is_complete(demo) and demo_is_complete(demo, count=COUNT, size=32, seed=0)
    assert not demo_is_complete(demo, count=COUNT + 1)
    for png in pngs:
        caption = png.with_suffix(".txt").read_text(encoding="utf-8").strip()
        size_name, colour, shape, on, background = caption.split(" ")
        assert shape == png.parent.name and on == "on"
        assert size_name in SIZES and colour in PALETTE and background in PALETTE
        assert colour != background
        with Image.open(png) as img:
            assert img.size == (32, 32) and img.mode == "RGB"
            corner = np.asarray(img)[0, 0].astype(int)
        assert np.abs(corner - PALETTE[background]).max() <= 2  # the background shows


def test_same_seed_same_bytes(demo: Path, tmp_path: Path) -> None:
    make(tmp_path / "again", count=12, size=32)
    make(tmp_path / "other", count=12, size=32, seed=1)
    for rel in ("circle/00000.png", "square/00001.png", "cross/00011.png", "star/00003.txt"):
        assert (tmp_path / "again" / rel).read_bytes() == (demo / rel).read_bytes()
    differs = [
        (tmp_path / "other" / rel).read_bytes() != (demo / rel).read_bytes()
        for rel in ("circle/00000.png", "square/00001.png", "triangle/00002.png")
    ]
    assert any(differs)


def test_progress_every_fifty_images(tmp_path: Path) -> None:
    progress = make(tmp_path / "d", count=120, size=16)
    assert all(p.stage == "demo" and p.total == 120 for p in progress)
    assert [p.step for p in progress] == [0, 50, 100, 120]


def test_the_demo_is_a_usable_labelled_dataset(demo: Path) -> None:
    scan = run_sync(scan_folder(demo)).result
    assert len(scan.entries) == COUNT and not scan.skipped  # captions and marker not listed
    assert scan.class_names == tuple(sorted(SHAPES))
    assert all(e.caption and e.class_name in e.caption for e in scan.entries)
    dataset = run_sync(load_dataset(scan, 16)).result
    assert dataset.labels is not None and len(set(dataset.labels.tolist())) == len(SHAPES)


def test_cancel_leaves_no_marker_and_ensure_regenerates(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    token = CancelToken()

    def cancel_after_fifty(progress: Progress) -> None:
        if progress.step >= 50:
            token.cancel()

    outcome = run_sync(make_demo_dataset(folder, count=400, size=16), token, cancel_after_fifty)
    assert outcome.status is Status.CANCELLED
    assert not (folder / MARKER_NAME).exists() and not demo_is_complete(folder)
    assert 50 <= len(list(folder.glob("*/*.png"))) < 400

    mine = folder / "circle" / "my-own.jpg"  # a file the demo did not create must survive
    mine.write_bytes(b"mine")
    progress: list[Progress] = []
    outcome = run_sync(ensure_demo_dataset(folder, count=30, size=16), None, progress.append)
    assert outcome.status is Status.FINISHED and outcome.result == folder
    assert progress and demo_is_complete(folder, count=30)
    assert len(list(folder.glob("*/*.png"))) == 30  # the stale ones were cleared
    assert mine.read_bytes() == b"mine"


def test_ensure_skips_a_complete_demo(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    make(folder, count=COUNT, size=16)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    progress: list[Progress] = []
    outcome = run_sync(ensure_demo_dataset(folder, count=COUNT, size=16), None, progress.append)
    assert outcome.status is Status.FINISHED and outcome.result == folder
    assert progress == []
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_ensure_defaults_to_the_studio_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    outcome = run_sync(ensure_demo_dataset(count=6, size=16))
    assert outcome.result == tmp_path / "home" / "demo-shapes"
    assert demo_is_complete(outcome.result, count=6)


def test_a_tidied_demo_is_not_complete(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    make(folder, count=12, size=16)
    next(folder.glob("star/*.png")).unlink()
    assert not demo_is_complete(folder)
    (folder / MARKER_NAME).write_text("{not json")
    assert not demo_is_complete(folder)
