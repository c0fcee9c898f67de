"""Pointer and key input for the canvas view: draw, pan, zoom with the wheel, drop files.

A mixin of :class:`~studio.qt.canvas.view.CanvasView`, kept apart so the view's painting and its
input each stay readable. Mouse events draw at pressure 1; tablet events carry the stylus
pressure, and accepting them stops Qt from synthesising a mouse event after each one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import (
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QFocusEvent,
    QKeyEvent,
    QMouseEvent,
    QPointingDevice,
    QTabletEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from studio.qt.canvas.tools import ToolController

ZOOM_STEP = 1.25


class PointerInput(QWidget):
    """Input handling; the view supplies the mapping, zoom, pan and cursor methods."""

    tools: ToolController
    scale: float
    _pan_from: QPointF | None
    _space: bool
    _drawing: bool

    # Provided by the view.
    def map_to_image(self, p: QPointF) -> QPointF:
        raise NotImplementedError

    def set_zoom(self, scale: float, anchor: QPointF | None = None) -> None:
        raise NotImplementedError

    def pan_by(self, dx: float, dy: float) -> None:
        raise NotImplementedError

    def _move_cursor(self, pos: QPointF | None) -> None:
        raise NotImplementedError

    def _on_tool_changed(self, _name: str) -> None:
        raise NotImplementedError

    def _emit_dropped(self, paths: list[str]) -> None:
        raise NotImplementedError

    # -- input -----------------------------------------------------------------------------
    def _starts_pan(self, button: Qt.MouseButton) -> bool:
        left = button == Qt.MouseButton.LeftButton
        return button == Qt.MouseButton.MiddleButton or (left and self._space)

    def _begin_pan(self, pos: QPointF) -> None:
        self._pan_from = QPointF(pos)
        self.setCursor(Qt.CursorShape.ClosedHandCursor)
        self._move_cursor(None)

    def _end_pan(self) -> None:
        self._pan_from = None
        if self._space:
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self._on_tool_changed(self.tools.tool.value)

    def _pointer_down(self, pos: QPointF, pressure: float, alt: bool, eraser: bool = False) -> None:
        self._drawing = True
        self.tools.press(self.map_to_image(pos), pressure, alt=alt, eraser=eraser)

    def _pointer_move(self, pos: QPointF, pressure: float) -> None:
        if self._pan_from is not None:
            delta = pos - self._pan_from
            self._pan_from = QPointF(pos)
            self.pan_by(delta.x(), delta.y())
            return
        self._move_cursor(QPointF(pos))
        if self._drawing:
            self.tools.move(self.map_to_image(pos), pressure)

    def _pointer_up(self, pos: QPointF, pressure: float) -> None:
        if self._pan_from is not None:
            self._end_pan()
        elif self._drawing:
            self._drawing = False
            self.tools.release(self.map_to_image(pos), pressure)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        if self._starts_pan(event.button()):
            self._begin_pan(event.position())
        elif event.button() == Qt.MouseButton.LeftButton and not self._drawing:
            alt = bool(event.modifiers() & Qt.KeyboardModifier.AltModifier)
            self._pointer_down(event.position(), 1.0, alt)  # a mouse presses at full pressure
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._pointer_move(event.position(), 1.0)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
            self._pointer_up(event.position(), 1.0)

    def tabletEvent(self, event: QTabletEvent) -> None:  # noqa: N802 - Qt override
        pos, pressure, kind = event.position(), float(event.pressure()), event.type()
        if kind == QEvent.Type.TabletPress:
            self.setFocus(Qt.FocusReason.MouseFocusReason)
            if self._starts_pan(event.button()):
                self._begin_pan(pos)
            elif not self._drawing:
                alt = bool(event.modifiers() & Qt.KeyboardModifier.AltModifier)
                eraser = event.pointerType() == QPointingDevice.PointerType.Eraser
                self._pointer_down(pos, pressure, alt, eraser)
        elif kind == QEvent.Type.TabletMove:
            self._pointer_move(pos, pressure)
        elif kind == QEvent.Type.TabletRelease:
            self._pointer_up(pos, pressure)
        event.accept()  # accepted: Qt synthesises no mouse event at pressure 1 after it

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.set_zoom(self.scale * ZOOM_STEP**steps, event.position())
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if event.key() == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space = True
                self.setCursor(Qt.CursorShape.OpenHandCursor)
                self._move_cursor(None)
            return
        if event.key() == Qt.Key.Key_Escape:
            self._drawing = False
            self.tools.cancel()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            if self._pan_from is None:
                self._on_tool_changed(self.tools.tool.value)
            return
        super().keyReleaseEvent(event)

    def leaveEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        self._move_cursor(None)
        super().leaveEvent(event)

    def focusOutEvent(self, event: QFocusEvent) -> None:  # noqa: N802 - Qt override
        self._space = False  # the release of a space held while focus left never arrives
        super().focusOutEvent(event)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if dropped_paths(event):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt override
        if dropped_paths(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        paths = dropped_paths(event)
        if paths:
            event.acceptProposedAction()
            self._emit_dropped(paths)


def dropped_paths(event: QDropEvent | QDragEnterEvent | QDragMoveEvent) -> list[str]:
    """The local files a drag carries (any kind: the workspace says what it cannot open)."""
    mime = event.mimeData()
    if mime is None or not mime.hasUrls():
        return []
    return [
        u.toLocalFile() for u in mime.urls() if u.isLocalFile() and Path(u.toLocalFile()).is_file()
    ]
