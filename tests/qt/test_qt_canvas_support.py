"""Helpers and fixtures for the canvas tests (no tests here): a workspace, synthetic pointer
strokes in image coordinates, tablet events and tiny trained runs.

The other ``test_qt_canvas*`` modules import from here; pytest puts ``tests/qt`` on the path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QInputDevice, QPointingDevice, QTabletEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from studio.qt.canvas import CanvasWorkspace
from studio.qt.canvas.view import CanvasView
from studio.qt.engine_thread import JobRunner
from studio.qt.settings import AppSettings

NO_MOD = Qt.KeyboardModifier.NoModifier
LEFT = Qt.MouseButton.LeftButton


def test_image(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth gradient with a little noise: every pixel differs from its neighbours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) % 256], -1)
    return np.clip(img + rng.integers(0, 8, img.shape), 0, 255).astype(np.uint8)


test_image.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@contextlib.contextmanager
def engine() -> Iterator[JobRunner]:
    """A JobRunner whose engine thread is stopped afterwards (the conftest checks it)."""
    r = JobRunner()
    try:
        yield r
    finally:
        assert r.shutdown(20_000, grace_ms=1_000)


def open_workspace(qtbot, settings: AppSettings) -> Iterator[CanvasWorkspace]:
    """Body of each module's ``workspace`` fixture: a shown workspace, shut down after."""
    with engine() as runner:
        ws = CanvasWorkspace(runner, settings)
        qtbot.addWidget(ws)
        ws.resize(1100, 760)
        ws.show()
        qtbot.waitExposed(ws)
        ws.activateWindow()
        ws.view.setFocus()
        yield ws
        ws.shutdown()


def widget_point(view: CanvasView, x: float, y: float) -> QPoint:
    """The widget pixel over image point ``(x, y)``; exact when scale and offset allow."""
    p = view.map_from_image(QPointF(x, y))
    return QPoint(round(p.x()), round(p.y()))


def drag(
    view: CanvasView,
    points: Sequence[tuple[float, float]],
    modifiers: Qt.KeyboardModifier = NO_MOD,
    button: Qt.MouseButton = LEFT,
) -> None:
    """Press at the first image point, move through the rest, release at the last."""
    first, *rest = [widget_point(view, x, y) for x, y in points]
    QTest.mousePress(view, button, modifiers, first)
    for p in rest:
        QTest.mouseMove(view, p)
    QTest.mouseRelease(view, button, modifiers, rest[-1] if rest else first)


_STYLI: dict[bool, QPointingDevice] = {}


def stylus(eraser: bool = False) -> QPointingDevice:
    """A pen (or its eraser end), made once: Qt keeps devices for the process's lifetime."""
    if eraser not in _STYLI:
        caps = QInputDevice.Capability.Position | QInputDevice.Capability.Pressure
        kind = QPointingDevice.PointerType.Eraser if eraser else QPointingDevice.PointerType.Pen
        name = "test stylus eraser" if eraser else "test stylus"
        _STYLI[eraser] = QPointingDevice(
            name, 1001 + eraser, QInputDevice.DeviceType.Stylus, kind, caps, 1, 2
        )
    return _STYLI[eraser]


def tablet_stroke(
    view: CanvasView,
    points: Sequence[tuple[float, float]],
    pressure: float,
    *,
    eraser: bool = False,
) -> None:
    """A pen stroke through image points at a constant ``pressure`` (``eraser``: with the
    pen's eraser end)."""
    kinds = [QEvent.Type.TabletPress] + [QEvent.Type.TabletMove] * (len(points) - 2)
    kinds.append(QEvent.Type.TabletRelease)
    for kind, (x, y) in zip(kinds, points):
        pos = view.map_from_image(QPointF(x, y))
        down = kind != QEvent.Type.TabletRelease
        event = QTabletEvent(
            kind,
            stylus(eraser),
            pos,
            view.mapToGlobal(pos),
            pressure if down else 0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            NO_MOD,
            LEFT,
            LEFT if down else Qt.MouseButton.NoButton,
        )
        QApplication.sendEvent(view, event)
        assert event.isAccepted()
