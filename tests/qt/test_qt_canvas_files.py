"""Canvas files: mask PNG export and import, drop, paste, ``.studio-canvas`` save and open,
autosave on a worker, and recovery after a simulated crash."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QMessageBox
from test_qt_canvas_support import drag, engine, open_workspace, test_image

from studio.core.brush import BrushSettings
from studio.core.canvas import CanvasDocument
from studio.engine.canvas_io import Autosaver, autosave_dir, pending_recoveries
from studio.qt.canvas import CanvasWorkspace
from studio.qt.canvas.tools import Tool
from studio.qt.imaging import numpy_to_qimage

YES, NO = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No


@pytest.fixture
def workspace(qtbot, app_settings):
    yield from open_workspace(qtbot, app_settings)


def painted(workspace: CanvasWorkspace) -> np.ndarray:
    """Put the test image on the canvas and paint a soft stroke; returns the mask."""
    workspace.set_image(test_image(), "painted")
    workspace.tools.set_brush(size=18, hardness=0.2, opacity=0.8)
    drag(workspace.view, [(30, 40), (90, 70), (130, 50)])
    assert workspace.document.mask.max() > 0.5
    return workspace.document.mask.copy()


def answer(monkeypatch, button: QMessageBox.StandardButton) -> list[str]:
    """Auto-answer every QMessageBox.question with ``button``; returns the questions asked."""
    asked: list[str] = []

    def question(_parent, _title, text, *_args, **_kwargs):
        asked.append(text)
        return button

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def test_mask_png_export_and_import_round_trip(workspace, qtbot, tmp_path) -> None:
    mask = painted(workspace)
    out = tmp_path / "mask.png"
    with qtbot.waitSignal(workspace.files.exported, timeout=10_000):
        workspace.files.export_mask(out)
    with Image.open(out) as img:
        assert img.mode == "L" and img.size == (160, 120)
    workspace.tools.clear()
    assert workspace.document.mask.max() == 0
    with qtbot.waitSignal(workspace.mask_changed, timeout=10_000):
        workspace.files.import_mask(out)
    assert np.array_equal(workspace.document.mask, np.rint(mask * 255) / np.float32(255))
    assert workspace.undo.stack.undoText() == "Load mask mask.png"


def test_a_mask_of_the_wrong_size_is_explained_or_stretched(
    workspace, qtbot, tmp_path, monkeypatch
) -> None:
    painted(workspace)
    before = workspace.document.mask.copy()
    small = tmp_path / "small.png"
    Image.fromarray(np.full((60, 80), 255, np.uint8)).save(small)
    asked = answer(monkeypatch, NO)
    with qtbot.waitSignal(workspace.files.failed, timeout=10_000):
        workspace.files.import_mask(small)
    text = workspace.banner.text()
    assert "small.png is 80x60 but the image is 160x120" in text
    assert "80x60" in asked[0] and "Stretch" in asked[0]
    assert np.array_equal(workspace.document.mask, before)  # nothing changed
    answer(monkeypatch, YES)
    with qtbot.waitSignal(workspace.mask_changed, timeout=10_000):
        workspace.files.import_mask(small)
    assert workspace.document.mask.min() == 1.0


def test_dropping_a_png_on_the_canvas_opens_it(workspace, qtbot, tmp_path) -> None:
    image = test_image(50, 70, seed=3)
    path = tmp_path / "dropped image.png"
    Image.fromarray(image).save(path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    view = workspace.view
    # Through the window, as a real drag arrives: enter (which the view must accept), drop.
    window = workspace.window().windowHandle()
    pos = view.mapTo(workspace.window(), QPoint(view.width() // 2, view.height() // 2))
    copy, left, none = (
        Qt.DropAction.CopyAction,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with warnings.catch_warnings():  # PySide marks the QPoint constructor deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(pos, copy, mime, left, none)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(pos), copy, mime, left, none)
    with qtbot.waitSignal(workspace.document_changed, timeout=10_000):
        QApplication.sendEvent(window, event)
    assert event.isAccepted()
    doc = workspace.document
    assert np.array_equal(doc.image, image) and doc.name == "dropped image"
    assert doc.mask.shape == (50, 70) and doc.mask.max() == 0


def test_a_dropped_file_that_is_no_image_shows_why(workspace, qtbot, tmp_path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not a picture", encoding="utf-8")
    with qtbot.waitSignal(workspace.files.failed, timeout=10_000):
        workspace.view.files_dropped.emit([str(path)])
    assert "notes.png" in workspace.banner.text() and workspace.document is None


def test_ctrl_v_pastes_an_image_from_the_clipboard(workspace, qtbot) -> None:
    image = test_image(40, 30, seed=5)
    QApplication.clipboard().setImage(numpy_to_qimage(image))
    qtbot.keyClick(workspace.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert workspace.document is not None and np.array_equal(workspace.document.image, image)
    QApplication.clipboard().clear()
    workspace.paste()
    assert "no image" in workspace.banner.text()


def test_save_and_reopen_a_canvas_keeps_the_exact_mask(
    workspace, qtbot, tmp_path, monkeypatch
) -> None:
    painted(workspace)
    assert workspace.has_unsaved_changes() and workspace.title_label.text().startswith("painted *")
    path = tmp_path / "work.studio-canvas"
    with qtbot.waitSignal(workspace.document_saved, timeout=10_000):
        assert workspace.save(path)
    assert path.is_file() and not workspace.has_unsaved_changes()
    workspace.tools.set_tool(Tool.ERASER)
    drag(workspace.view, [(60, 55), (100, 60)])
    assert workspace.has_unsaved_changes()
    with qtbot.waitSignal(workspace.document_saved, timeout=10_000):
        assert workspace.save()  # to the same file, without asking where
    saved_mask = workspace.document.mask.copy()
    workspace.tools.clear()  # an edit that is not saved
    asked = answer(monkeypatch, YES)
    with qtbot.waitSignal(workspace.document_changed, timeout=10_000):
        workspace.open_image(path)
    assert "unsaved" in asked[0]  # replacing unsaved work asks first
    assert np.array_equal(workspace.document.mask, saved_mask)  # bit-identical float mask
    assert np.array_equal(workspace.document.image, test_image())
    assert not workspace.has_unsaved_changes() and workspace.document.name == "painted"


def test_autosave_writes_on_a_worker_and_a_clean_exit_discards_it(workspace, qtbot) -> None:
    painted(workspace)
    autosave = workspace.autosave
    with qtbot.waitSignal(autosave.autosaved, timeout=10_000) as blocker:
        assert autosave.save_now()
    path = Path(blocker.args[0])
    assert path.is_file() and path.parent == autosave_dir()
    assert pending_recoveries() == []  # ours, and we are alive: not offered
    workspace.shutdown()
    assert not path.exists()


def test_the_autosave_timer_writes_only_after_a_change(workspace, qtbot) -> None:
    autosave = workspace.autosave
    autosave.saver.interval_s = 0.0  # every tick may write; the revision decides
    autosave.timer.setInterval(20)
    written: list[str] = []
    autosave.autosaved.connect(written.append)
    workspace.set_image(test_image(), "fresh")
    qtbot.wait(150)
    assert written == []  # an untouched image: its file is all there is to recover
    with qtbot.waitSignal(autosave.autosaved, timeout=10_000):
        drag(workspace.view, [(40, 40), (60, 50)])
    qtbot.wait(150)
    assert len(written) == 1  # no change since: no second write
    drag(workspace.view, [(100, 80)])
    qtbot.waitUntil(lambda: len(written) == 2, timeout=10_000)
    assert Path(written[-1]).is_file()


def test_recovery_after_a_crash_restores_the_identical_mask(
    qtbot, app_settings, monkeypatch
) -> None:
    # The "previous session": it autosaved and then died (its lock went with it).
    crashed = CanvasDocument(test_image(), name="before the crash")
    crashed.begin_stroke((50, 50), BrushSettings(size=30, hardness=0.4))
    crashed.extend_stroke((120, 80, 0.5))
    crashed.end_stroke()
    saver = Autosaver()
    assert saver.maybe_save(crashed, force=True)
    saver.release()
    expected = crashed.mask.copy()

    with engine() as runner:  # the next start
        ws = CanvasWorkspace(runner, app_settings)
        qtbot.addWidget(ws)
        asked = answer(monkeypatch, YES)
        with qtbot.waitSignal(ws.document_changed, timeout=10_000):
            assert ws.offer_recovery(ws)
        assert "before the crash" in asked[0]
        assert np.array_equal(ws.document.mask, expected)
        assert np.array_equal(ws.document.image, crashed.image)
        assert ws.has_unsaved_changes()  # recovered work is not saved work
        assert saver.path.exists()  # kept until this session ends cleanly
        ws.shutdown()
    assert not saver.path.exists() and pending_recoveries() == []


def test_declining_recovery_deletes_the_autosave(qtbot, app_settings, monkeypatch) -> None:
    doc = CanvasDocument(test_image(20, 20), name="unwanted")
    doc.fill_mask()
    saver = Autosaver()
    saver.maybe_save(doc, force=True)
    saver.release()
    with engine() as runner:
        ws = CanvasWorkspace(runner, app_settings)
        qtbot.addWidget(ws)
        asked = answer(monkeypatch, NO)
        assert not ws.offer_recovery(ws)
        assert not saver.path.exists() and ws.document is None
        assert not ws.offer_recovery(ws)  # nothing left to offer: no question
        assert len(asked) == 1
        ws.shutdown()


def test_send_to_canvas_from_a_sample_grid(workspace, qtbot) -> None:
    from PySide6.QtWidgets import QMenu

    from studio.core.imaging import make_grid
    from studio.qt.canvas.send import grid_tile_at, grid_tile_size, install_send_to_canvas
    from studio.qt.widgets import ImageView

    tiles = np.stack([test_image(12, 12, seed=i) for i in range(5)])
    grid = make_grid(tiles)  # 3 x 2 slots, the last one empty
    assert grid_tile_size(grid) == 12
    assert np.array_equal(grid_tile_at(grid, 2 + 14 + 5, 2 + 14 + 5), tiles[4])
    assert grid_tile_at(grid, 1, 1) is None  # a separator
    assert grid_tile_at(grid, 2 + 28 + 3, 2 + 14 + 3) is None  # the empty slot
    assert grid_tile_size(test_image(30, 30)) is None  # not a grid

    view = ImageView()
    qtbot.addWidget(view)
    view.resize(300, 300)
    view.set_image(grid)
    install_send_to_canvas(view, workspace.set_image, "Sample")
    target = view.target_rect()
    scale = target.width() / grid.shape[1]
    at = QPoint(round(target.x() + (2 + 14 + 6) * scale), round(target.y() + 6 * scale))
    view.customContextMenuRequested.emit(at)
    menu = view.findChildren(QMenu)[-1]
    menu.actions()[0].trigger()
    assert np.array_equal(workspace.document.image, tiles[1])
    assert workspace.document.name == "Sample"


def test_the_canvas_menu_and_closing_with_unsaved_work(workspace, tmp_path, monkeypatch) -> None:
    menu = workspace.build_menu()
    texts = [a.text() for a in menu.actions() if a.text()]
    assert texts[:4] == ["Open image…", "Save canvas", "Save canvas as…", "Paste image"]
    assert "Export mask…" in texts and "Undo" in texts
    assert not workspace.export_mask_action.isEnabled()  # no document yet
    assert workspace.confirm_close()  # nothing to lose: no question
    painted(workspace)
    assert workspace.export_mask_action.isEnabled()
    choices = iter([QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save])
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda *a, **k: next(choices)))
    assert not workspace.confirm_close()  # Cancel: stay open
    target = tmp_path / "kept.studio-canvas"
    monkeypatch.setattr(workspace.files, "choose_save_path", lambda _name: str(target))
    assert workspace.confirm_close()  # Save: written before closing
    assert target.is_file() and not workspace.has_unsaved_changes()


def test_importing_the_canvas_does_not_load_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, studio.qt.canvas; "
        "print([m for m in ('torch', 'diffusers', 'studio.engine.inpaint') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
