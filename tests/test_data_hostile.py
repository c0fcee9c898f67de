"""Dataset folders built to hurt (issue 15, points 6, 7, 11 and 12): FIFOs and devices where
files should be, symlinks out of the folder, file names that are not UTF-8, and images whose
decoded size is far larger than their pixel count suggests."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.core.jobs import run_sync
from studio.core.safefiles import NotRegularFile, inside, open_regular, printable
from studio.engine.data import ImageRejected, load_dataset, open_image, scan_folder

posix_only = pytest.mark.skipif(os.name != "posix", reason="FIFOs and symlinks need POSIX")
REPO = Path(__file__).resolve().parents[1]


def _scan(root: Path, **kw):
    outcome = run_sync(scan_folder(root, **kw))
    assert outcome.result is not None, outcome.error
    return outcome.result


def _png(path: Path, colour: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (colour, 10, 10)).save(path)
    return path


def _studio(
    *args: str, timeout: float = 60, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studio", *args],
        capture_output=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})},
    )


# -- point 6: FIFOs and other non-regular files -----------------------------------------------


@posix_only
def test_a_fifo_caption_or_image_is_skipped_and_never_opened(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _png(root / "a.png")
    os.mkfifo(root / "a.txt")  # the caption of a.png: opening it for reading would block
    os.mkfifo(root / "b.png")
    scan = _scan(root)
    assert [e.path for e in scan.entries] == ["a.png"]
    assert scan.entries[0].caption is None
    skipped = {s.path: (s.reason, s.detail) for s in scan.skipped}
    assert skipped == {
        "a.txt": ("not a regular file", "a FIFO (named pipe)"),
        "b.png": ("not a regular file", "a FIFO (named pipe)"),
    }
    dataset = run_sync(load_dataset(scan, 8)).result
    assert dataset.captions == ("",)


@posix_only
def test_data_scan_on_the_command_line_finishes_with_a_fifo_caption(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _png(root / "a.png")
    os.mkfifo(root / "a.txt")
    done = _studio("data", "scan", str(root), timeout=60)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "skipped a.txt: not a regular file" in out and "1 usable images" in out


@posix_only
def test_open_regular_refuses_fifos_and_devices_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NotRegularFile):
        open_regular(tmp_path / "pipe")
    if Path("/dev/zero").exists():
        with pytest.raises(NotRegularFile, match="a device"):
            open_regular("/dev/zero")
    (tmp_path / "f").write_bytes(b"ok")
    with open_regular(tmp_path / "f") as fh:
        assert fh.read() == b"ok"


# -- point 7: symlinks out of the folder ------------------------------------------------------


@posix_only
def test_a_caption_linked_outside_the_folder_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash")
    root = tmp_path / "data"
    _png(root / "cats" / "a.png")
    os.symlink(secret, root / "cats" / "a.txt")
    _png(root / "cats" / "b.png")
    (root / "cats" / "real.txt").write_text("a real caption")
    os.symlink(root / "cats" / "real.txt", root / "cats" / "b.txt")  # inside: followed
    scan = _scan(root)
    captions = {e.path: e.caption for e in scan.entries}
    assert captions == {"cats/a.png": None, "cats/b.png": "a real caption"}
    skipped = {s.path: s.reason for s in scan.skipped}
    assert skipped["cats/a.txt"] == "outside the folder"
    assert any("cats/a.txt: outside the folder" in line for line in scan.describe_skipped())
    dataset = run_sync(load_dataset(scan, 8)).result
    assert "root:x" not in " ".join(dataset.captions)
    assert dataset.captions == ("cats", "a real caption")


@posix_only
def test_images_and_folders_linked_outside_the_folder_are_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    _png(outside / "private.png")
    _png(outside / "more" / "x.png")
    root = tmp_path / "data"
    _png(root / "a.png")
    os.symlink(outside / "private.png", root / "b.png")
    os.symlink(outside / "more", root / "linked")
    os.symlink(root / "a.png", root / "c.png")  # a link to a file inside: followed
    os.symlink(tmp_path / "nowhere.png", root / "dangling.png")
    scan = _scan(root)
    assert [e.path for e in scan.entries] == ["a.png", "c.png"]
    skipped = {s.path: s.reason for s in scan.skipped}
    assert skipped["b.png"] == "outside the folder"
    assert skipped["linked"] == "outside the folder"
    assert skipped["dangling.png"] == "outside the folder"


@posix_only
def test_an_image_swapped_for_an_outside_link_after_the_scan_is_not_decoded(
    tmp_path: Path,
) -> None:
    _png(tmp_path / "outside.png", 200)
    root = tmp_path / "data"
    _png(root / "a.png")
    _png(root / "b.png")
    scan = _scan(root)
    (root / "b.png").unlink()
    os.symlink(tmp_path / "outside.png", root / "b.png")
    dataset = run_sync(load_dataset(scan, 8)).result
    assert dataset.paths == ("a.png",)
    assert dataset.skipped[-1].reason == "outside the folder"


@posix_only
def test_inside_resolves_links_and_refuses_loops(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "root" / "loop", tmp_path / "root" / "loop")
    assert not inside(tmp_path / "root" / "loop", tmp_path / "root")
    assert inside(tmp_path / "root" / "x" / ".." / "y", tmp_path / "root")
    assert not inside(tmp_path / "root" / ".." / "y", tmp_path / "root")


# -- point 11 (console half): names that are not UTF-8 ----------------------------------------


def test_printable_escapes_bytes_that_are_not_utf8() -> None:
    assert printable(os.fsdecode(b"bad\xff.png")) == "bad\\xff.png"
    assert printable("caf\u00e9.png") == "caf\u00e9.png"


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes")
@pytest.mark.parametrize(
    "env",
    [{"PYTHONIOENCODING": "utf-8:strict"}, {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""}],
)
def test_data_scan_prints_a_name_that_is_not_utf8(tmp_path: Path, env: dict) -> None:
    root = tmp_path / "data"
    _png(root / "a.png")
    bad = os.path.join(os.fsencode(root), b"bad\xff.png")
    with open(bad, "wb") as fh:
        fh.write(b"not an image at all")
    done = _studio("data", "scan", str(root), env=env)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"Traceback" not in done.stderr
    assert b"skipped bad\\xff.png: unreadable" in done.stdout
    # An error message that names such a folder is printed too, not a traceback.
    missing = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"gone\xff"))
    done = _studio("data", "scan", missing, env=env)
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert b"error: The folder" in done.stderr and b"does not exist" in done.stderr


# -- point 12: decoded bytes, not only pixels -------------------------------------------------


def test_a_float_tiff_is_bounded_by_its_decoded_bytes(tmp_path: Path) -> None:
    # 1,200 x 1,000 float pixels: 1.2 MP (under a 1.5 MP pixel limit) but 4.8 MB decoded,
    # more than the 4.5 MB an RGB image at that limit takes.
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((1000, 1200), np.float32), "F").save(path, compression="tiff_deflate")
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageRejected) as err:
        open_image(path, max_pixels=1_500_000)
    assert err.value.reason == "over the pixel limit"
    assert "MB" in err.value.detail
    # The same pixels in 8-bit grey are fine.
    gray = tmp_path / "gray.tif"
    Image.new("L", (1200, 1000)).save(gray)
    assert open_image(gray, max_pixels=1_500_000).size == (1200, 1000)


def test_converting_a_float_image_needs_little_memory_beyond_the_decoded_image(
    tmp_path: Path,
) -> None:
    path = tmp_path / "float.tif"
    values = np.linspace(0, 3000, 1000 * 1000, dtype=np.float32).reshape(1000, 1000)
    Image.fromarray(values, "F").save(path, compression="tiff_deflate")
    tracemalloc.start()
    try:
        img = open_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert img.size == (1000, 1000)
    # numpy's allocations are traced: whole-image float64 copies would take 8 MB each.
    assert peak < 6_000_000, peak
    pixels = np.asarray(img)
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255


# -- point 8: Pillow's bomb warning is an error wherever images are opened --------------------


def _bomb(path: Path, side: int = 12_000) -> Path:
    """A tiny PNG claiming side x side pixels: over Pillow's warning limit, under its error."""
    from helpers import write_png_header

    return write_png_header(path, side, side)


def test_open_checked_refuses_a_bomb_before_decoding(tmp_path: Path, monkeypatch) -> None:
    from PIL import ImageFile

    from studio.engine.canvas_io import CanvasFileError, import_mask
    from studio.engine.images import open_checked

    decoded: list[str] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append("load"))
    bomb = _bomb(tmp_path / "bomb.png")
    with pytest.raises(ImageRejected) as err, open_checked(bomb, max_pixels=10**12):
        pass
    assert err.value.reason == "over the pixel limit"
    with pytest.raises(CanvasFileError, match="over the pixel limit"):
        import_mask(bomb, max_pixels=10**12)
    assert decoded == []
    if os.name == "posix":
        os.mkfifo(tmp_path / "mask.png")
        with pytest.raises(CanvasFileError, match="not a regular file"):
            import_mask(tmp_path / "mask.png")
