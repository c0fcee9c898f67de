"""Canvas files: mask PNGs, EXIF-rotated images, the .studio-canvas document, autosave and
recovery after a crash."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from studio.core.brush import BrushSettings
from studio.core.canvas import CanvasDocument
from studio.engine import canvas_io
from studio.engine.canvas_io import (
    Autosaver,
    CanvasFileError,
    MaskSizeError,
    autosave_dir,
    discard_recovery,
    export_mask_png,
    import_mask,
    load_document,
    pending_recoveries,
    recover,
    save_document,
)

REPO = Path(__file__).resolve().parents[1]


def random_doc(h: int = 48, w: int = 64, seed: int = 0) -> CanvasDocument:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = rng.random((h, w), dtype=np.float32)  # arbitrary floats: must survive exactly
    mask[:, : w // 3] = 0.0
    return CanvasDocument(image, mask, name="café ☕", source_path="/tmp/x.png")


# -- mask PNGs ----------------------------------------------------------------------------


def test_mask_png_round_trip(tmp_path):
    levels = (np.arange(48 * 64) % 256).reshape(48, 64).astype(np.float32) / 255.0
    path = tmp_path / "mask.png"
    export_mask_png(levels, path)
    with Image.open(path) as img:
        assert img.mode == "L" and img.size == (64, 48)
    assert np.array_equal(import_mask(path, (48, 64)), levels)
    floats = np.random.default_rng(1).random((48, 64), dtype=np.float32)
    export_mask_png(floats, path)
    assert np.abs(import_mask(path) - floats).max() <= 0.5 / 255 + 1e-6


def test_mask_import_converts_modes_and_checks_size(tmp_path):
    alpha = np.zeros((20, 30), np.uint8)
    alpha[5:15, 10:20] = 255
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, alpha  # a red layer painted on transparency
    Image.fromarray(rgba, "RGBA").save(tmp_path / "layer.png")
    assert np.array_equal(import_mask(tmp_path / "layer.png"), alpha / 255.0)
    deep = (np.arange(600).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert np.allclose(import_mask(tmp_path / "deep.png"), deep / 65535.0)
    Image.fromarray(alpha).convert("1").save(tmp_path / "bits.png")
    assert set(np.unique(import_mask(tmp_path / "bits.png"))) == {0.0, 1.0}

    with pytest.raises(MaskSizeError, match="30x20 but the image is 60x40"):
        import_mask(tmp_path / "layer.png", (40, 60))
    big = import_mask(tmp_path / "layer.png", (40, 60), resize=True)
    assert big.shape == (40, 60) and big[20, 30] == 1.0 and big[0, 0] == 0.0

    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(CanvasFileError, match="junk.png"):
        import_mask(tmp_path / "junk.png")


def test_load_mask_into_is_undoable(tmp_path):
    doc = random_doc()
    before = doc.mask.copy()
    export_mask_png(np.ones(doc.shape, np.float32), tmp_path / "m.png")
    canvas_io.load_mask_into(doc, tmp_path / "m.png")
    assert np.all(doc.mask == 1.0)
    doc.undo()
    assert np.array_equal(doc.mask, before)


def test_exif_rotated_image_opens_upright_and_its_mask_lines_up(tmp_path):
    stored = np.full((20, 40, 3), 40, np.uint8)  # stored 40 wide, 20 tall
    stored[2:8, 2:8] = (255, 0, 0)  # a red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)

    doc = canvas_io.open_document(path)
    assert doc.shape == (40, 20) and doc.name == "phone"  # displayed: 20 wide, 40 tall
    red = (doc.image[..., 0] > 200) & (doc.image[..., 1] < 60)
    ys, xs = np.nonzero(red)
    assert xs.mean() > 10 and ys.mean() < 10  # stored top-left is displayed top-right
    doc.begin_stroke((xs.mean() + 0.5, ys.mean() + 0.5), BrushSettings(size=4, hardness=1.0))
    doc.end_stroke()
    export_mask_png(doc.mask, tmp_path / "mask.png")

    with Image.open(path) as img:
        shown = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    with Image.open(tmp_path / "mask.png") as m:
        assert m.size == (20, 40)
        painted = np.asarray(m) > 127
    shown_red = (shown[..., 0] > 200) & (shown[..., 1] < 60)
    assert painted.any() and np.all(shown_red[painted])  # every masked pixel is on the mark


# -- the document file ---------------------------------------------------------------------


def test_document_round_trip_is_exact(tmp_path):
    doc = random_doc()
    doc.metadata.update(prompt="a red fox", seed=np.int64(7), steps=30)
    doc.fill_mask(0.5)
    doc.undo()
    path = save_document(doc, tmp_path / "fox.studio-canvas")
    assert doc.history.is_clean
    back = load_document(path)
    assert np.array_equal(back.image, doc.image) and back.image.dtype == np.uint8
    assert np.array_equal(back.mask, doc.mask) and back.mask.dtype == np.float32
    assert back.name == doc.name and back.source_path == doc.source_path
    assert back.metadata == {"prompt": "a red fox", "seed": 7, "steps": 30}
    assert canvas_io.open_document(path).name == doc.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox.studio-canvas"]


def test_damaged_or_foreign_documents_give_clear_errors(tmp_path):
    path = save_document(random_doc(), tmp_path / "a.studio-canvas")
    data = path.read_bytes()
    (tmp_path / "cut.studio-canvas").write_bytes(data[: len(data) // 2])
    with pytest.raises(CanvasFileError, match="cut.studio-canvas cannot be opened"):
        load_document(tmp_path / "cut.studio-canvas")
    with zipfile.ZipFile(path) as zf:
        header = json.loads(zf.read("document.json"))
        parts = {n: zf.read(n) for n in zf.namelist()}
    header["version"] = 99
    parts["document.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(tmp_path / "new.studio-canvas", "w") as zf:
        for name, blob in parts.items():
            zf.writestr(name, blob)
    with pytest.raises(CanvasFileError, match="newer Studio"):
        load_document(tmp_path / "new.studio-canvas")
    with pytest.raises(CanvasFileError, match="does not exist"):
        load_document(tmp_path / "missing.studio-canvas")
    doc = random_doc()
    doc.metadata["bad"] = object()
    with pytest.raises(CanvasFileError, match="metadata"):
        save_document(doc, path)
    assert path.read_bytes() == data  # the old file is untouched


# -- autosave and recovery ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_autosave_waits_for_a_change_and_the_interval():
    clock = FakeClock()
    doc = random_doc()
    saver = Autosaver(interval_s=30, clock=clock)
    clock.now = 100
    assert not saver.maybe_save(doc)  # never edited: nothing to recover
    doc.invert_mask()
    assert saver.maybe_save(doc) and saver.path.exists()
    clock.now = 200
    assert not saver.maybe_save(doc)  # no change since
    doc.clear_mask()
    clock.now = 210
    assert saver.maybe_save(doc)  # 110 s since the last write
    doc.fill_mask(0.3)
    clock.now = 220
    assert not saver.maybe_save(doc)  # changed, but only 10 s since the last write
    clock.now = 240
    snap = saver.snapshot(doc)
    assert snap is not None and snap.image_png is not None  # the image was not re-encoded
    saver.write(snap)
    assert np.array_equal(load_document(saver.path).mask, doc.mask)
    saver.discard()
    assert not saver.path.exists() and pending_recoveries() == []


def test_a_live_autosave_is_not_offered_for_recovery():
    doc = random_doc()
    doc.invert_mask()
    saver = Autosaver(interval_s=0)
    assert saver.maybe_save(doc)
    assert pending_recoveries() == []  # its owner is alive (holds the lock)
    saver.release()  # what the OS does when the process dies
    (info,) = pending_recoveries()
    assert info.ok and info.doc_id == saver.doc_id and info.size == (64, 48)
    assert np.array_equal(recover(info).mask, doc.mask)
    saver.discard()
    assert pending_recoveries() == []


CRASHING_SESSION = """
import os, sys
import numpy as np
from studio.core.brush import BrushSettings
from studio.core.canvas import CanvasDocument
from studio.engine.canvas_io import Autosaver

rng = np.random.default_rng(5)
doc = CanvasDocument(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), name="unsaved work")
doc.begin_stroke((5, 5, 0.4), BrushSettings(size=9, hardness=0.3, opacity=0.7))
for i in range(1, 20):
    doc.extend_stroke((5 + 2 * i, 5 + 1.5 * i, 0.4 + i / 40))
doc.end_stroke()
saver = Autosaver(interval_s=0)
assert saver.maybe_save(doc)
np.save(sys.argv[1], doc.mask)
os._exit(3)  # a crash: no discard(), no cleanup of any kind
"""


def test_autosave_survives_a_crash_and_recovers_the_identical_mask(tmp_path):
    expected = tmp_path / "expected.npy"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASHING_SESSION), str(expected)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    (info,) = pending_recoveries()
    assert info.ok and info.name == "unsaved work" and info.size == (50, 40)
    doc = recover(info)
    assert np.array_equal(doc.mask, np.load(expected)) and doc.mask.any()
    # Keep saving over the same autosave, then the user saves and exits cleanly.
    saver = Autosaver(interval_s=0, doc_id=info.doc_id)
    doc.invert_mask()
    assert saver.maybe_save(doc) and saver.path == info.path
    saver.discard()
    assert pending_recoveries() == []


def test_a_corrupt_autosave_is_reported_not_fatal():
    folder = autosave_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "garbage.studio-canvas").write_bytes(b"\x00" * 100)
    doc = random_doc()
    doc.invert_mask()
    saver = Autosaver(interval_s=0)
    saver.maybe_save(doc)
    saver.release()
    data = saver.path.read_bytes()
    (folder / "cut.studio-canvas").write_bytes(data[: len(data) - 200])
    (folder / ".tmp-partial.studio-canvas").write_bytes(b"half")  # an interrupted write
    infos = {info.doc_id: info for info in pending_recoveries()}
    assert set(infos) == {"garbage", "cut", saver.doc_id}
    assert infos[saver.doc_id].ok
    for bad in ("garbage", "cut"):
        assert not infos[bad].ok and "damaged" in (infos[bad].error or "")
        with pytest.raises(CanvasFileError):
            recover(infos[bad])
        discard_recovery(infos[bad])
    assert [i.doc_id for i in pending_recoveries()] == [saver.doc_id]
