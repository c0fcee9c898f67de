"""Copying and moving flagged images: never a file lost, never one overwritten, moves undone."""

from __future__ import annotations

import errno
import os

import pytest

from studio.core import flagged
from studio.core.errors import StudioError
from studio.core.flagged import MoveLog, Transfer, transfer


@pytest.fixture
def scored(tmp_path):
    root = tmp_path / "scored"
    for rel, data in {"cats/a.png": b"cat a", "dogs/a.png": b"dog a", "b.png": b"bee"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def contents(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_move_keeps_paths_and_undo_puts_every_file_back(scored, tmp_path):
    before = contents(scored)
    target = tmp_path / "odd"
    log = MoveLog()
    result = transfer(["cats/a.png", "dogs/a.png"], scored, target, Transfer.MOVE)
    log.record(result)
    assert not result.failed and len(result.done) == 2
    assert contents(target) == {"cats/a.png": b"cat a", "dogs/a.png": b"dog a"}
    assert contents(scored) == {"b.png": b"bee"}
    assert log.can_undo

    undone = log.undo()
    assert len(undone.done) == 2 and not undone.failed
    assert contents(scored) == before
    assert contents(target) == {}
    assert not log.can_undo
    with pytest.raises(StudioError):
        log.undo()


def test_copy_leaves_the_source_and_is_not_an_undoable_move(scored, tmp_path):
    log = MoveLog()
    result = transfer(["b.png"], scored, tmp_path / "odd", Transfer.COPY)
    log.record(result)
    assert contents(tmp_path / "odd") == {"b.png": b"bee"}
    assert (scored / "b.png").read_bytes() == b"bee"
    assert not log.can_undo


def test_an_existing_file_is_never_overwritten(scored, tmp_path):
    target = tmp_path / "odd"
    (target / "cats").mkdir(parents=True)
    (target / "cats" / "a.png").write_bytes(b"already here")
    result = transfer(["cats/a.png"], scored, target, Transfer.MOVE)
    assert [p.target.name for p in result.done] == ["a (2).png"]
    assert (target / "cats" / "a.png").read_bytes() == b"already here"
    assert (target / "cats" / "a (2).png").read_bytes() == b"cat a"
    copy = transfer(["b.png", "b.png"], scored, target, Transfer.COPY)
    assert sorted(p.target.name for p in copy.done) == ["b (2).png", "b.png"]


def test_undo_to_a_name_taken_meanwhile_keeps_both_files(scored, tmp_path):
    log = MoveLog()
    log.record(transfer(["b.png"], scored, tmp_path / "odd", Transfer.MOVE))
    (scored / "b.png").write_bytes(b"a new b")
    undone = log.undo()
    assert [p.target.name for p in undone.done] == ["b (2).png"]
    assert (scored / "b.png").read_bytes() == b"a new b"
    assert (scored / "b (2).png").read_bytes() == b"bee"


def test_a_move_that_fails_after_the_link_leaves_the_source(scored, tmp_path, monkeypatch):
    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(flagged, "_remove_source", refuse)
    log = MoveLog()
    result = transfer(["cats/a.png"], scored, tmp_path / "odd", Transfer.MOVE)
    log.record(result)
    assert not result.done and result.failed[0][1] == "Permission denied"
    assert (scored / "cats" / "a.png").read_bytes() == b"cat a"
    assert contents(tmp_path / "odd") == {}  # the new name was taken back
    assert not log.can_undo


def test_a_copy_that_breaks_midway_leaves_no_half_file(scored, tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def half(src, out):
        out.write(src.read(2))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(flagged.os, "link", no_links)
    monkeypatch.setattr(flagged, "_copy_bytes", half)
    result = transfer(["cats/a.png"], scored, tmp_path / "odd", Transfer.MOVE)
    assert result.failed[0][1] == "No space left on device"
    assert (scored / "cats" / "a.png").read_bytes() == b"cat a"
    assert contents(tmp_path / "odd") == {}


def test_a_move_across_file_systems_copies_then_removes(scored, tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(flagged.os, "link", no_links)
    result = transfer(["b.png"], scored, tmp_path / "odd", Transfer.MOVE)
    assert len(result.done) == 1
    assert contents(tmp_path / "odd") == {"b.png": b"bee"} and not (scored / "b.png").exists()


def test_an_unwritable_target_fails_each_file_and_keeps_it(scored, tmp_path):
    target = tmp_path / "odd"
    target.mkdir()
    (target / "cats").write_bytes(b"a file where a folder must go")
    result = transfer(["cats/a.png", "b.png"], scored, target, Transfer.MOVE)
    assert [p.name for p, _ in result.failed] == ["a.png"]
    assert (scored / "cats" / "a.png").read_bytes() == b"cat a"
    assert len(result.done) == 1 and "failed" in result.summary()


def test_targets_inside_the_scored_folder_are_refused(scored, tmp_path):
    for target in (scored, scored / "odd", scored / "cats"):
        with pytest.raises(StudioError, match="outside"):
            transfer(["b.png"], scored, target, Transfer.MOVE)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StudioError, match="not a folder"):
        transfer(["b.png"], scored, tmp_path / "file", Transfer.COPY)
    assert contents(scored)["b.png"] == b"bee"


def test_paths_outside_the_scored_folder_are_refused(scored, tmp_path):
    (tmp_path / "outside.png").write_bytes(b"not yours")
    result = transfer(["../outside.png", "/etc/passwd"], scored, tmp_path / "odd", Transfer.MOVE)
    assert not result.done and len(result.failed) == 2
    assert (tmp_path / "outside.png").exists() and os.path.exists("/etc/passwd")
