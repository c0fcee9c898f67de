"""The canvas: painting with synthetic mouse and tablet events, tools, keys, undo, zoom.

Every check reads the document's mask at image positions mapped from where the events went,
with a zoom other than 1 and after a pan, so the view's coordinate mapping is tested too.
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from test_qt_canvas_support import (
    NO_MOD,
    drag,
    open_workspace,
    tablet_stroke,
    test_image,
    widget_point,
)

from studio.qt.canvas.overlay import blend
from studio.qt.canvas.tools import PressureTarget, Tool

ALT = Qt.KeyboardModifier.AltModifier
CTRL = Qt.KeyboardModifier.ControlModifier
CTRL_SHIFT = CTRL | Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def workspace(qtbot, app_settings):
    yield from open_workspace(qtbot, app_settings)


@pytest.fixture
def canvas(workspace):
    """A 160 x 120 image at 250 %, panned off-centre, with a hard 10 px brush. The offset is
    whole pixels, so even image coordinates fall on whole widget pixels."""
    workspace.set_image(test_image(), "test")
    view = workspace.view
    view.set_zoom(2.5)
    view.offset = QPointF(round(view.offset.x()), round(view.offset.y()))
    view.pan_by(-37, 23)
    workspace.tools.set_brush(size=10, hardness=1.0, opacity=1.0)
    return workspace


def test_mouse_stroke_paints_where_it_went_at_zoom_and_after_pan(canvas) -> None:
    view, doc = canvas.view, canvas.document
    assert view.scale == pytest.approx(2.5)
    drag(view, [(40, 50), (60, 50), (80, 50)])
    mask = doc.mask
    assert mask[50, 40:81].min() > 0.99  # under the stroke
    assert mask[50, 33] == 0 and mask[50, 87] == 0  # beyond the 5 px radius at the ends
    assert mask[42, 60] == 0 and mask[58, 60] == 0  # above and below
    assert mask[:, 100:].max() == 0 and mask[70:].max() == 0
    assert view.overlay.alpha_at(60, 50) == 255 and view.overlay.alpha_at(120, 100) == 0
    assert canvas.undo.stack.count() == 1 and canvas.undo_action.text() == "Undo Brush stroke"
    # Pan with the middle button, then paint again: still lands where it was aimed.
    before = QPointF(view.offset)
    drag(view, [(10, 10), (30, 25)], button=Qt.MouseButton.MiddleButton)
    assert view.offset != before and canvas.undo.stack.count() == 1  # panning paints nothing
    drag(view, [(120, 90)])
    assert doc.mask[90, 120] > 0.99 and doc.mask[90, 110] == 0


def test_space_drag_pans_instead_of_painting(canvas, qtbot) -> None:
    view = canvas.view
    before = QPointF(view.offset)
    QTest.keyPress(view, Qt.Key.Key_Space)
    drag(view, [(40, 40), (60, 60)])
    QTest.keyRelease(view, Qt.Key.Key_Space)
    assert canvas.document.mask.max() == 0
    assert view.offset.x() - before.x() == pytest.approx(20 * view.scale, abs=2)


def test_tablet_pressure_drives_size_or_opacity(canvas) -> None:
    view, doc = canvas.view, canvas.document
    canvas.tools.set_brush(size=20)
    assert canvas.tools.pressure_target is PressureTarget.SIZE
    tablet_stroke(view, [(30, 30), (30, 30), (30, 30)], pressure=0.25)
    tablet_stroke(view, [(100, 30), (100, 30), (100, 30)], pressure=1.0)
    light, firm = (doc.mask[:, :65] > 0).sum(), (doc.mask[:, 65:] > 0).sum()
    assert 0 < light < firm / 4  # a quarter of the diameter: about a sixteenth of the area
    assert doc.mask[30, 30] > 0.99 and doc.mask[30, 100] > 0.99

    canvas.options.pressure_combo.setCurrentIndex(
        canvas.options.pressure_combo.findData(PressureTarget.OPACITY.value)
    )
    assert canvas.tools.pressure_target is PressureTarget.OPACITY
    tablet_stroke(view, [(30, 90), (30, 90), (30, 90)], pressure=0.3)
    tablet_stroke(view, [(100, 90), (100, 90), (100, 90)], pressure=1.0)
    assert doc.mask[90, 30] == pytest.approx(0.3, abs=0.02)
    assert doc.mask[90, 100] > 0.99
    # The same footprint: opacity, not size, followed the pen.
    assert (doc.mask[75:106, :65] > 0).sum() == (doc.mask[75:106, 65:130] > 0).sum()
    assert canvas.undo.stack.count() == 4  # one command per pen stroke


def test_the_pens_eraser_end_erases_whatever_brush_is_chosen(canvas) -> None:
    view, doc = canvas.view, canvas.document
    tablet_stroke(view, [(30, 60), (80, 60), (130, 60)], pressure=1.0)
    assert doc.mask[60, 80] > 0.99
    tablet_stroke(view, [(80, 45), (80, 60), (80, 75)], pressure=1.0, eraser=True)
    assert doc.mask[60, 80] == 0 and doc.mask[60, 40] > 0.99
    assert canvas.tools.tool is Tool.BRUSH and canvas.undo.stack.undoText() == "Erase"


def test_x_toggles_the_eraser_which_removes_paint(canvas) -> None:
    view, doc = canvas.view, canvas.document
    drag(view, [(30, 60), (130, 60)])
    assert doc.mask[60, 80] > 0.99
    QTest.keyClick(view, Qt.Key.Key_X)
    assert canvas.tools.tool is Tool.ERASER
    assert canvas.tool_strip.buttons[Tool.ERASER].isChecked()
    drag(view, [(80, 45), (80, 75)])
    assert doc.mask[60, 80] == 0 and doc.mask[60, 40] > 0.99 and doc.mask[60, 120] > 0.99
    QTest.keyClick(view, Qt.Key.Key_X)
    assert canvas.tools.tool is Tool.BRUSH


def test_bracket_keys_change_the_brush_size_and_the_slider(canvas) -> None:
    view, tools = canvas.view, canvas.tools
    QTest.keyClick(view, Qt.Key.Key_BracketRight)
    assert tools.brush.size == 12 and canvas.options.size_slider.value() == 12
    QTest.keyClick(view, Qt.Key.Key_BracketLeft)
    QTest.keyClick(view, Qt.Key.Key_BracketLeft)
    assert tools.brush.size == 8
    for _ in range(40):
        QTest.keyClick(view, Qt.Key.Key_BracketLeft)
    assert tools.brush.size == 1  # never below one pixel
    canvas.options.size_slider.setValue(33)
    assert tools.brush.size == 33


def test_ctrl_z_and_ctrl_shift_z_restore_exact_masks_stroke_by_stroke(canvas) -> None:
    view, doc = canvas.view, canvas.document
    canvas.tools.set_brush(hardness=0.3, opacity=0.6)  # soft, partial: values must match
    states = [doc.mask.copy()]
    for y in (30, 45, 60):
        drag(view, [(20, y), (90, y + 10), (140, y)])
        states.append(doc.mask.copy())
    QTest.keyClick(view, Qt.Key.Key_X)
    drag(view, [(60, 20), (60, 100)])
    states.append(doc.mask.copy())
    for expected in reversed(states[:-1]):
        QTest.keyClick(view, Qt.Key.Key_Z, CTRL)
        assert np.array_equal(doc.mask, expected)
    assert not canvas.undo_action.isEnabled()
    QTest.keyClick(view, Qt.Key.Key_Z, CTRL_SHIFT)
    assert np.array_equal(doc.mask, states[1])
    QTest.keyClick(view, Qt.Key.Key_Y, CTRL)
    assert np.array_equal(doc.mask, states[2])
    # A new stroke after undo drops the redo branch, as everywhere else.
    drag(view, [(150, 110)])
    assert not canvas.redo_action.isEnabled()


def test_undo_beyond_the_history_memory_budget_stops_cleanly(canvas) -> None:
    view, doc = canvas.view, canvas.document
    doc.history.budget_bytes = 1  # the core keeps only the newest command
    for y in (30, 60, 90):
        drag(view, [(20, y), (140, y)])
    last = doc.mask.copy()
    QTest.keyClick(view, Qt.Key.Key_Z, CTRL)
    one_back = doc.mask.copy()
    assert not np.array_equal(one_back, last)
    for _ in range(3):  # the older strokes were dropped: nothing happens, nothing breaks
        QTest.keyClick(view, Qt.Key.Key_Z, CTRL)
        assert np.array_equal(doc.mask, one_back)
    assert not canvas.undo_action.isEnabled() and canvas.undo.stack.count() == 1
    QTest.keyClick(view, Qt.Key.Key_Y, CTRL)
    assert np.array_equal(doc.mask, last)


def test_fill_invert_clear_rectangle_and_lasso_through_the_ui(canvas, qtbot) -> None:
    view, doc, strip = canvas.view, canvas.document, canvas.tool_strip
    h, w = doc.shape
    qtbot.mouseClick(strip.fill_all_button, Qt.MouseButton.LeftButton)
    assert doc.mask.min() == 1.0
    qtbot.mouseClick(strip.invert_button, Qt.MouseButton.LeftButton)
    assert doc.mask.max() == 0.0

    qtbot.mouseClick(strip.buttons[Tool.RECT], Qt.MouseButton.LeftButton)
    assert canvas.tools.tool is Tool.RECT
    drag(view, [(20, 20), (50, 30), (60, 40)])  # integer corners: exactly rows 20:40, cols 20:60
    expected = np.zeros((h, w), np.float32)
    expected[20:40, 20:60] = 1
    assert np.array_equal(doc.mask, expected)
    drag(view, [(30, 24), (40, 34)], ALT)  # Alt cuts a hole
    expected[24:34, 30:40] = 0
    assert np.array_equal(doc.mask, expected)

    qtbot.mouseClick(strip.buttons[Tool.FILL], Qt.MouseButton.LeftButton)
    drag(view, [(35, 30)])  # the hole is its own region: the fill stays inside it
    expected[24:34, 30:40] = 1
    assert np.array_equal(doc.mask, expected)

    qtbot.mouseClick(strip.buttons[Tool.LASSO], Qt.MouseButton.LeftButton)
    drag(view, [(100, 60), (140, 60), (140, 100), (100, 100), (100, 61)])
    assert doc.mask[80, 120] == 1.0 and doc.mask[80, 95] == 0 and doc.mask[80, 145] == 0
    assert doc.mask[20:40, 20:60].min() == 1.0  # the rectangle is still there

    qtbot.mouseClick(strip.clear_button, Qt.MouseButton.LeftButton)
    assert doc.mask.max() == 0.0
    assert canvas.undo.stack.count() == 7
    QTest.keyClick(view, Qt.Key.Key_Z, CTRL)
    assert doc.mask[80, 120] == 1.0


def test_zoom_keys_buttons_and_wheel_around_the_cursor(canvas) -> None:
    view = canvas.view
    canvas.fit_action.trigger()
    h, w = canvas.document.shape
    fitted = view.scale
    rect = view.image_rect()
    assert rect.width() <= view.width() and rect.height() <= view.height()
    assert max(rect.width() / view.width(), rect.height() / view.height()) > 0.9
    QTest.keyClick(view, Qt.Key.Key_Plus)
    assert view.scale == pytest.approx(fitted * 1.25)
    QTest.keyClick(view, Qt.Key.Key_Minus)
    QTest.keyClick(view, Qt.Key.Key_Minus)
    assert view.scale == pytest.approx(fitted / 1.25)
    canvas.actual_size_action.trigger()
    assert view.scale == 1.0 and canvas.zoom_label.text() == "100%"

    # The wheel zooms around the cursor: the image point under it stays under it.
    at = widget_point(view, 40, 30)
    under = view.map_to_image(QPointF(at))
    wheel = QWheelEvent(
        QPointF(at), view.mapToGlobal(QPointF(at)), QPoint(), QPoint(0, 240),
        Qt.MouseButton.NoButton, NO_MOD, Qt.ScrollPhase.NoScrollPhase, False,
    )  # fmt: skip
    QApplication.sendEvent(view, wheel)
    assert view.scale == pytest.approx(1.25**2)
    after = view.map_to_image(QPointF(at))
    assert after.x() == pytest.approx(under.x()) and after.y() == pytest.approx(under.y())


def test_feather_preview_shows_the_blend_outside_the_mask(canvas) -> None:
    doc, view = canvas.document, canvas.view
    canvas.tools.set_tool(Tool.RECT)
    drag(view, [(40, 40), (80, 80)])
    assert view.overlay.alpha_at(84, 60) == 0
    canvas.options.feather_slider.setValue(6)
    canvas.options.feather_button.setChecked(True)
    assert view.overlay.alpha_at(84, 60) > 0  # the blend reaches past the mask edge
    assert view.overlay.alpha_at(93, 60) == 0  # but not past twice the radius
    assert canvas.inpaint_panel.feather_spin.value() == 6  # one feather for both
    drag(view, [(100, 100), (110, 110)])  # live: a new shape is feathered too
    assert view.overlay.alpha_at(113, 105) > 0
    # The whole-mask blend (which test_qt_canvas_inpaint checks against the engine's),
    # although the overlay was updated dab by dab.
    expected = np.rint(blend(doc.mask, 6.0) * 255)
    alpha = np.array([[view.overlay.alpha_at(x, y) for x in range(160)] for y in range(120)])
    assert np.abs(alpha - expected).max() <= 1  # premultiplied storage may round by one
    canvas.options.feather_button.setChecked(False)
    assert view.overlay.alpha_at(113, 105) == 0


def test_a_stroke_on_a_large_image_touches_only_its_neighbourhood(workspace, qtbot) -> None:
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[..., 2] = 90
    workspace.set_image(big, "big")
    view, doc = workspace.view, workspace.document
    view.set_zoom(0.5)
    dirty = []
    doc.add_listener(lambda kind, rect: dirty.append(rect))
    workspace.tools.set_brush(size=60)
    drag(view, [(2000, 1500), (2100, 1520), (2200, 1540)])
    assert doc.mask[1520, 2100] > 0.99
    # Each report covers one segment's dabs, never the whole 12-megapixel mask.
    assert dirty and all((r.y1 - r.y0) * (r.x1 - r.x0) < 200 * 200 for r in dirty)
    assert workspace.view.overlay.alpha_at(2100, 1520) == 255
    assert not workspace.view.grab().isNull()  # a full repaint at 50 % from the cached pixmaps
