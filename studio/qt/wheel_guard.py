"""The mouse wheel scrolls the page, not the field under the pointer.

Scrolling a side panel with the wheel used to change whatever spin box, combo box or slider
passed under the pointer (a Peek count went from 16 to 35). A guarded field changes with the
wheel only when it has the keyboard focus (a click or Tab gives it); otherwise the wheel event
goes to the scroll area around it, which scrolls. Its focus policy becomes
``StrongFocus``, so the wheel itself no longer gives it the focus.

The guard is a filter on each field, not on the whole application: an application-wide Python
filter would run (and take the GIL) for every event of every widget, paint and timer events
included, while a model trains on the engine thread. :func:`guard_wheel` guards every field
under a widget: the main window calls it once its workspaces are built, and the settings forms
(``forms.py``) for the fields they build later.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QScrollBar,
    QWidget,
)

GUARDED = (QAbstractSpinBox, QComboBox, QAbstractSlider)
_GUARDED_PROPERTY = "studioWheelGuard"


class WheelGuard(QObject):
    """Hands wheel events on an unfocused field to the scroll area around it."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget):
            return False
        if watched.hasFocus():
            return False  # a focused field takes the wheel as usual
        area = _scroll_area_of(watched)
        if area is None:
            event.ignore()  # unaccepted: Qt hands a real wheel event on to the parents
            return True
        # Sent on explicitly (Qt does not pass a synthesised event to the parents).
        assert isinstance(event, QWheelEvent)
        viewport = area.viewport()
        pos = QPointF(viewport.mapFromGlobal(event.globalPosition().toPoint()))
        forwarded = QWheelEvent(
            pos,
            event.globalPosition(),
            event.pixelDelta(),
            event.angleDelta(),
            event.buttons(),
            event.modifiers(),
            event.phase(),
            event.inverted(),
        )
        QApplication.sendEvent(viewport, forwarded)
        event.accept()
        return True


def _scroll_area_of(widget: QWidget) -> QAbstractScrollArea | None:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea) and not isinstance(parent, GUARDED):
            return parent
        parent = parent.parentWidget()
    return None


_guard: WheelGuard | None = None


def guard_field(field: QWidget) -> None:
    """Guard one spin box, combo box or slider (again: nothing changes)."""
    global _guard
    if field.property(_GUARDED_PROPERTY) or isinstance(field, QScrollBar):
        return
    if _guard is None:
        _guard = WheelGuard()
    field.setProperty(_GUARDED_PROPERTY, True)
    if field.focusPolicy() == Qt.FocusPolicy.WheelFocus:
        field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
    field.installEventFilter(_guard)


def guard_wheel(root: QWidget) -> int:
    """Guard ``root`` and every field under it; returns how many fields are guarded."""
    fields = [root] if isinstance(root, GUARDED) else []
    for kind in GUARDED:
        fields.extend(root.findChildren(kind))
    fields = [f for f in fields if not isinstance(f, QScrollBar)]  # (the scrolling itself)
    for field in fields:
        guard_field(field)
    return len(fields)
