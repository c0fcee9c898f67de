"""Pure tests of atomic writes, recent lists, paths and grids."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from studio.core import atomic
from studio.core.imaging import make_grid
from studio.core.paths import runs_dir, studio_home
from studio.core.recent import push_recent


def test_atomic_write_creates_the_file_where_asked(tmp_path):
    target = tmp_path / "deep" / "folder" / "data.json"
    atomic.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["data.json"]  # no temp files left


def test_a_failed_write_leaves_the_old_file_byte_identical(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old contents")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_a_full_disk_during_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    atomic.write_text(target, "old")

    def no_space(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        atomic.write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"


def test_push_recent_moves_to_front_dedupes_and_bounds():
    items = ["a", "b", "c"]
    assert push_recent(items, "b") == ["b", "a", "c"]
    assert push_recent(items, "d", limit=3) == ["d", "a", "b"]
    assert push_recent([], "x") == ["x"]
    assert push_recent(["", "a"], "b") == ["b", "a"]


def test_studio_home_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    assert studio_home() == tmp_path / "home"
    assert runs_dir() == tmp_path / "home" / "runs"


def test_make_grid_places_images_row_by_row():
    imgs = np.stack([np.full((4, 4, 3), i * 10, np.uint8) for i in range(5)])
    grid = make_grid(imgs, nrow=3, pad=1, fill=255)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert (grid[1:5, 1:5] == 0).all()
    assert (grid[1:5, 6:10] == 10).all()
    assert (grid[6:10, 6:10] == 40).all()
    assert (grid[6:10, 11:15] == 255).all()  # the empty slot keeps the fill
    with pytest.raises(ValueError):
        make_grid(np.zeros((4, 4, 3), np.uint8))


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_atomic_writes_get_the_mode_an_ordinary_write_would(tmp_path, umask):
    """Files other tools and users read: not 0600 whatever the umask (mkstemp's mode)."""
    atomic.write_json(tmp_path / "new" / "config.json", {"a": 1})
    atomic.write_text(tmp_path / "a.txt", "x")
    with atomic.atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"b")
    with atomic.atomic_path(tmp_path / "c.bin") as tmp:  # a writer that replaces the file, 0600
        tmp.unlink()
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    (tmp_path / "d.bin").write_bytes(b"d")
    os.chmod(tmp_path / "d.bin", 0o600)
    atomic.give_ordinary_mode(tmp_path / "d.bin")
    (tmp_path / "old.txt").write_text("ordinary")  # what an ordinary write gives
    atomic.write_text(tmp_path / "old.txt", "replaced")
    assert atomic.current_umask() == umask
    for name in ["new/config.json", "a.txt", "b.bin", "c.bin", "d.bin", "old.txt"]:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o777 & ~umask


def test_the_umask_is_read_without_proc_too(umask, monkeypatch):
    """Where /proc/self/status is missing (macOS, say), the umask is set and restored."""

    def no_proc(*_args, **_kwargs):
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr(atomic, "open", no_proc, raising=False)
    assert atomic.current_umask() == umask
    monkeypatch.undo()
    assert atomic.current_umask() == umask  # and left as it was
