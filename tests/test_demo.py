"""studio.engine.demo: the built-in shapes dataset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.data import load_dataset, scan_folder
from studio.engine.demo import (
    JOURNAL_NAME,
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


# -- only what the demo can prove it wrote is ever removed (issue 15.2) --------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _users_folder(folder: Path) -> dict[str, bytes]:
    """A folder of the user's own files, named like demo files, in demo-class subfolders."""
    for rel, data in {
        "circle/00000.png": b"my circle",
        "circle/00000.txt": b"my caption",
        "square/00001.png": b"my square",
        "star/00099.png": b"a star of mine",
        "notes.txt": b"notes",
    }.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return _snapshot(folder)


def test_demo_out_refuses_a_folder_that_is_not_a_demo(tmp_path: Path, capsys) -> None:
    from studio.cli.main import main

    folder = tmp_path / "mine"
    before = _users_folder(folder)
    assert main(["demo", "--out", str(folder), "--count", "12"]) == 1
    err = capsys.readouterr().err
    assert "not a demo dataset" in err and "nothing in it was changed" in err
    assert _snapshot(folder) == before
    outcome = run_sync(ensure_demo_dataset(folder, count=12, size=16))  # the window's path
    assert outcome.status is Status.FAILED and "not a demo dataset" in outcome.error
    assert _snapshot(folder) == before


def test_an_old_demo_without_a_manifest_is_not_ours(tmp_path: Path, capsys) -> None:
    from studio.cli.main import main

    folder = tmp_path / "old-demo"
    before = _users_folder(folder)
    old_marker = {"count": 3, "size": 16, "seed": 0, "version": 1, "shapes": list(SHAPES)}
    (folder / MARKER_NAME).write_text(json.dumps(old_marker))
    before[MARKER_NAME] = (folder / MARKER_NAME).read_bytes()
    assert not demo_is_complete(folder)
    assert main(["demo", "--out", str(folder), "--count", "12"]) == 1
    assert "choose an empty or new folder" in capsys.readouterr().err
    assert _snapshot(folder) == before


def test_the_default_location_with_an_old_demo_builds_in_a_fresh_sibling(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from studio.cli.main import main

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    old = tmp_path / "home" / "demo-shapes"
    before = _users_folder(old)
    (old / MARKER_NAME).write_text(json.dumps({"count": 3, "version": 1}))
    before[MARKER_NAME] = (old / MARKER_NAME).read_bytes()
    assert main(["demo", "--count", "12"]) == 0
    sibling = tmp_path / "home" / "demo-shapes-2"
    assert str(sibling) in capsys.readouterr().out
    assert demo_is_complete(sibling, count=12) and _snapshot(old) == before
    assert main(["data", "scan", "demo"]) == 0  # "demo" finds the sibling
    assert "12 usable images" in capsys.readouterr().out
    outcome = run_sync(ensure_demo_dataset(count=12, size=64))  # the window: the same one
    assert outcome.result == sibling and _snapshot(old) == before


def test_the_manifest_lists_every_file_with_size_and_hash(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    make(folder, count=12, size=16)
    manifest = json.loads((folder / MARKER_NAME).read_text())
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {MARKER_NAME} and len(files) == 25
    for rel, (size, digest) in manifest["files"].items():
        data = (folder / rel).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == digest
    assert not (folder / JOURNAL_NAME).exists()


def test_regenerating_removes_only_files_that_still_match_the_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    make(folder, count=12, size=16)
    (folder / "star" / "00003.png").write_bytes(b"edited by the user")  # no longer the demo's
    (folder / "circle" / "00099.png").write_bytes(b"the user's, named like a demo file")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    manifest = json.loads((folder / MARKER_NAME).read_text())
    # A damaged manifest that names a file elsewhere (with its true hash) is not obeyed.
    manifest["files"]["../outside.txt"] = [8, hashlib.sha256(b"precious").hexdigest()]
    (folder / MARKER_NAME).write_text(json.dumps(manifest))

    make(folder, count=3, size=16)
    assert demo_is_complete(folder, count=3)
    assert (folder / "star" / "00003.png").read_bytes() == b"edited by the user"
    assert (folder / "circle" / "00099.png").read_bytes() == b"the user's, named like a demo file"
    assert outside.read_bytes() == b"precious"
    assert not (folder / "cross" / "00005.png").exists()  # the old demo's own files went
    assert len(list(folder.glob("*/0000[0-2].png"))) == 3


def test_a_changed_file_in_the_way_stops_the_demo_before_anything_changes(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    make(folder, count=12, size=16)
    (folder / "circle" / "00000.png").write_bytes(b"edited by the user")
    before = _snapshot(folder)
    outcome = run_sync(make_demo_dataset(folder, count=12, size=16))
    assert outcome.status is Status.FAILED and "cannot prove it wrote" in outcome.error
    assert _snapshot(folder) == before


def test_a_cancelled_demo_is_cleared_from_its_journal(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    token = CancelToken()
    outcome = run_sync(
        make_demo_dataset(folder, count=400, size=16), token,
        lambda p: token.cancel() if p.step >= 50 else None,
    )  # fmt: skip
    assert outcome.status is Status.CANCELLED and (folder / JOURNAL_NAME).is_file()
    with open(folder / JOURNAL_NAME, "a") as fh:
        fh.write('["circle/0')  # a line cut short by a crash
    make(folder, count=6, size=16)
    assert sorted(p.name for p in folder.glob("*/*.png")) == [f"0000{i}.png" for i in range(6)]


def test_a_bad_count_is_one_clear_message_and_writes_nothing(tmp_path: Path, capsys) -> None:
    from studio.cli.main import main

    assert main(["demo", "--out", str(tmp_path / "d"), "--count", "0"]) == 1
    err = capsys.readouterr().err
    assert "count of 1 or more" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_a_crash_while_clearing_an_old_demo_keeps_the_proof(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "demo"
    make(folder, count=12, size=16)
    real_unlink = Path.unlink
    calls = {"n": 0}

    def failing_unlink(self: Path, missing_ok: bool = False) -> None:
        calls["n"] += 1
        if calls["n"] == 6:  # the manifest and a few old files are gone; then the disk fails
            raise OSError("simulated I/O error")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", failing_unlink)
    assert run_sync(make_demo_dataset(folder, count=12, size=16)).status is Status.FAILED
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert not demo_is_complete(folder) and (folder / JOURNAL_NAME).is_file()
    make(folder, count=12, size=16)  # the old files left are still provably the demo's
    assert demo_is_complete(folder, count=12)


def test_the_default_location_skips_a_demo_whose_names_are_taken(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    default = tmp_path / "home" / "demo-shapes"
    token = CancelToken()
    run_sync(make_demo_dataset(default, count=100, size=16), token,
             lambda p: token.cancel() if p.step >= 50 else None)  # fmt: skip
    (default / "circle" / "00000.png").write_bytes(b"changed since")  # not provably ours now
    before = _snapshot(default)
    outcome = run_sync(ensure_demo_dataset(count=12, size=16))
    assert outcome.result == tmp_path / "home" / "demo-shapes-2"
    assert _snapshot(default) == before


def test_a_demo_killed_mid_write_is_rebuilt_and_loses_nothing(tmp_path: Path, capsys) -> None:
    """kill -9 while `studio demo` writes: every file it left is whole and provably its own."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from studio.cli.main import main

    folder = tmp_path / "demo"
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio", "demo", "--out", str(folder), "--count", "3000"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(folder.glob("*/*.png"))) < 30:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (folder / JOURNAL_NAME).is_file() and not demo_is_complete(folder)
    (folder / "circle" / "99990.png").write_bytes(b"the user's")
    assert main(["demo", "--out", str(folder), "--count", "24"]) == 0, capsys.readouterr().err
    assert demo_is_complete(folder, count=24)
    assert len(list(folder.glob("*/0*.png"))) == 24  # the killed run's other files went
    assert (folder / "circle" / "99990.png").read_bytes() == b"the user's"
