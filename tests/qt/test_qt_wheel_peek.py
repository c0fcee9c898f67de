"""The side panels hold still: the mouse wheel scrolls them without changing the fields it
passes over (issue 16, point 4), and a peek result does not move the Peek box's controls."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.qt.train_panel import TrainPanel
from studio.qt.wheel_guard import guard_wheel


def wheel(widget: QWidget, notches: int = -3) -> None:
    """Scroll the wheel over the middle of ``widget`` as a mouse does (down: negative)."""
    target = widget
    pos = QPointF(widget.rect().center())
    event = QWheelEvent(
        pos,
        QPointF(target.mapToGlobal(pos.toPoint())),
        QPoint(0, 0),
        QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(target, event)


def scroll_page(qtbot) -> tuple[QScrollArea, QSpinBox]:
    """A scroll area taller inside than out, with a spin box in the middle."""
    inner = QWidget()
    column = QVBoxLayout(inner)
    column.addSpacing(600)
    spin = QSpinBox()
    spin.setRange(0, 100)
    spin.setValue(16)
    column.addWidget(spin)
    column.addSpacing(600)
    area = QScrollArea()
    area.setWidget(inner)
    area.setWidgetResizable(True)
    area.resize(300, 300)
    qtbot.addWidget(area)
    area.show()
    area.verticalScrollBar().setValue(500)
    qtbot.waitExposed(area)
    return area, spin


def test_the_wheel_over_an_unfocused_spin_box_scrolls_the_page(qtbot) -> None:
    area, spin = scroll_page(qtbot)
    assert guard_wheel(area) >= 1
    assert spin.focusPolicy() == Qt.FocusPolicy.StrongFocus  # the wheel gives no focus
    before = area.verticalScrollBar().value()
    wheel(spin)
    assert spin.value() == 16  # unchanged: it has no focus
    assert area.verticalScrollBar().value() > before  # the page scrolled instead
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus)
    wheel(spin, notches=1)
    assert spin.value() == 17  # a focused field still takes the wheel


def test_unguarded_spin_box_takes_the_wheel(qtbot) -> None:
    """(The behaviour the guard exists for: without it, the wheel changes the value.)"""
    _area, spin = scroll_page(qtbot)
    wheel(spin)
    assert spin.value() != 16


def test_every_field_of_the_window_is_guarded(qtbot, window) -> None:
    peek = window.train_panel.peek_panel
    window.show_workspace(window.TRAIN)
    before = peek.count_spin.value()
    wheel(peek.count_spin)
    assert peek.count_spin.value() == before
    fields = [
        w
        for kind in (QAbstractSpinBox, QComboBox, QAbstractSlider)
        for w in window.findChildren(kind)
    ]
    assert len(fields) > 20
    unguarded = [f for f in fields if f.focusPolicy() == Qt.FocusPolicy.WheelFocus]
    assert not unguarded, [f.objectName() or type(f).__name__ for f in unguarded]
    # A field a workspace builds later is guarded within a second (and when its page shows).
    late = QSpinBox(window.train_panel.peek_panel)
    late.setValue(5)
    late.show()
    qtbot.waitUntil(lambda: late.focusPolicy() == Qt.FocusPolicy.StrongFocus, timeout=3000)
    wheel(late)
    assert late.value() == 5
    # The Train form's fields, rebuilt when the family changes, are guarded too.
    form = window.train_panel.options_form
    for name in form.names():
        widget = form.widget(name)
        if isinstance(widget, (QAbstractSpinBox, QComboBox)):
            value = (
                widget.value() if isinstance(widget, QAbstractSpinBox) else widget.currentIndex()
            )
            wheel(widget)
            after = (
                widget.value() if isinstance(widget, QAbstractSpinBox) else widget.currentIndex()
            )
            assert after == value, name


def test_a_peek_result_does_not_move_the_peek_controls(qtbot, runner, app_settings, tmp_path):
    """The user scrolled down to the Peek box and clicks "Sample now" again and again: the
    captions and the cost line that come and go never move the button or the grid."""
    panel = TrainPanel(runner, app_settings)
    qtbot.addWidget(panel)
    panel.resize(1100, 420)
    panel.show()
    qtbot.waitExposed(panel)
    peek = panel.peek_panel
    peek.set_run(tmp_path)
    area = next(a for a in panel.findChildren(QScrollArea) if a.isAncestorOf(peek))

    def settle() -> None:
        QApplication.processEvents()
        area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())  # scrolled down
        QApplication.processEvents()

    def where() -> tuple[QPoint, QPoint, int]:
        button = peek.sample_button
        return (
            button.mapTo(panel, QPoint(0, 0)),
            peek.grid.mapTo(panel, QPoint(0, 0)),
            (peek.grid.height()),
        )

    settle()
    before = where()
    peek.caption.setText("Sampling between training steps…")
    settle()
    assert where() == before
    images = [np.zeros((8, 8, 3), np.uint8)] * 16
    result = SimpleNamespace(
        grid=np.full((140, 140, 3), 200, np.uint8),
        images=images,
        seed=0,
        step=12_345,
        live=True,
        seconds=0.42,
    )
    peek._show(result)
    peek.show_info({"peek_s": 3.5, "peek_cost": 0.021})
    settle()
    panel.grab().save(str(tmp_path / "after.png"))
    assert where() == before  # the next click lands on the button
    peek.caption.setText("Sampling between training steps…")  # the next peek
    settle()
    assert where() == before
