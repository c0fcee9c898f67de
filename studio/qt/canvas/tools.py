"""What the pointer does on the canvas: brush, eraser, fill, rectangle and lasso.

The controller turns pointer events, already mapped to image coordinates, into calls on the
:class:`~studio.core.canvas.CanvasDocument` (all the mask maths lives in ``studio.core``) and
hands every resulting command to the :class:`~studio.qt.canvas.undo.UndoBridge`. It knows no
widget: the view feeds it and the tool bar binds to its signals.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import replace

from PySide6.QtCore import QObject, QPointF, QRectF, Signal
from PySide6.QtGui import QPolygonF

from studio.core.brush import BrushMode, BrushSettings, Op
from studio.core.canvas import CanvasDocument
from studio.qt.canvas.undo import UndoBridge

MIN_SIZE, MAX_SIZE = 1.0, 1000.0
SIZE_STEP = 1.2  # `[` and `]` scale the size by this
LASSO_MIN_STEP = 1.5  # image pixels between recorded lasso points


class Tool(str, enum.Enum):
    BRUSH = "brush"
    ERASER = "eraser"
    FILL = "fill"
    RECT = "rect"
    LASSO = "lasso"

    @property
    def paints(self) -> bool:
        return self in (Tool.BRUSH, Tool.ERASER)


class PressureTarget(str, enum.Enum):
    SIZE = "size"
    OPACITY = "opacity"
    NONE = "none"


class ToolController(QObject):
    """The current tool and brush, and the edit in progress.

    ``settings_changed``: size, hardness, opacity or pressure target changed.
    ``tool_changed(name)``: another tool was chosen. ``shape_changed``: the rectangle or
    lasso being dragged changed (the view repaints its outline).
    """

    settings_changed = Signal()
    tool_changed = Signal(str)
    shape_changed = Signal()

    def __init__(
        self,
        document: Callable[[], CanvasDocument | None],
        undo: UndoBridge,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._document = document
        self._undo = undo
        self._tool = Tool.BRUSH
        self._brush = BrushSettings(size=40.0, hardness=0.7, opacity=1.0)
        self._pressure = PressureTarget.SIZE
        self.subtract = False  # shapes cut instead of add (Alt flips it for one drag)
        self.fill_tolerance = 0.05
        self._anchor: QPointF | None = None
        self._corner: QPointF | None = None
        self._lasso: list[QPointF] = []
        self._shape_subtract = False

    # -- settings ------------------------------------------------------------------------
    @property
    def tool(self) -> Tool:
        return self._tool

    def set_tool(self, tool: Tool | str) -> None:
        tool = Tool(tool)
        if tool is self._tool:
            return
        self.cancel()
        self._tool = tool
        self.tool_changed.emit(tool.value)

    def toggle_eraser(self) -> None:
        """``X``: brush <-> eraser (from any other tool, to the eraser's partner brush)."""
        self.set_tool(Tool.BRUSH if self._tool is Tool.ERASER else Tool.ERASER)

    @property
    def brush(self) -> BrushSettings:
        return self._brush

    @property
    def pressure_target(self) -> PressureTarget:
        return self._pressure

    def set_brush(self, **changes: float) -> None:
        """Change ``size``, ``hardness`` or ``opacity`` (clamped to what the core accepts)."""
        limits = {"size": (MIN_SIZE, MAX_SIZE), "hardness": (0.0, 1.0), "opacity": (0.0, 1.0)}
        clean = {k: min(max(float(v), limits[k][0]), limits[k][1]) for k, v in changes.items()}
        new = replace(self._brush, **clean)
        if new != self._brush:
            self._brush = new
            self.settings_changed.emit()

    def set_pressure_target(self, target: PressureTarget | str) -> None:
        target = PressureTarget(target)
        if target is not self._pressure:
            self._pressure = target
            self.settings_changed.emit()

    def grow_size(self) -> None:
        self.set_brush(size=max(self._brush.size + 1, round(self._brush.size * SIZE_STEP)))

    def shrink_size(self) -> None:
        self.set_brush(size=min(self._brush.size - 1, round(self._brush.size / SIZE_STEP)))

    def stroke_settings(self) -> BrushSettings:
        """The brush as a stroke uses it: pressure drives size or opacity (mouse: pressure 1)."""
        return replace(
            self._brush,
            pressure_size=self._pressure is PressureTarget.SIZE,
            pressure_opacity=self._pressure is PressureTarget.OPACITY,
        )

    # -- the edit in progress ------------------------------------------------------------
    @property
    def busy(self) -> bool:
        doc = self._document()
        return self._anchor is not None or (doc is not None and doc.stroking)

    def press(
        self, pos: QPointF, pressure: float = 1.0, *, alt: bool = False, eraser: bool = False
    ) -> None:
        """Start an edit at ``pos`` (image coordinates). ``eraser``: the pen's eraser end,
        which erases with the brush tools whichever of the two is chosen."""
        doc = self._document()
        if doc is None:
            return
        x, y = pos.x(), pos.y()
        if self._tool.paints:
            erase = eraser or self._tool is Tool.ERASER
            mode = BrushMode.ERASE if erase else BrushMode.PAINT
            doc.begin_stroke((x, y, pressure), self.stroke_settings(), mode)
        elif self._tool is Tool.FILL:
            h, w = doc.shape
            if 0 <= x < w and 0 <= y < h:
                value = 0.0 if self.subtract != alt else 1.0
                self._undo.record(doc.flood_fill(int(x), int(y), value, self.fill_tolerance))
        else:
            self._anchor, self._corner = QPointF(pos), QPointF(pos)
            self._lasso = [QPointF(pos)]
            self._shape_subtract = self.subtract != alt
            self.shape_changed.emit()

    def move(self, pos: QPointF, pressure: float = 1.0) -> None:
        doc = self._document()
        if doc is None:
            return
        if self._tool.paints and doc.stroking:
            doc.extend_stroke((pos.x(), pos.y(), pressure))
        elif self._anchor is not None:
            self._corner = QPointF(pos)
            last = self._lasso[-1]
            if abs(pos.x() - last.x()) + abs(pos.y() - last.y()) >= LASSO_MIN_STEP:
                self._lasso.append(QPointF(pos))
            self.shape_changed.emit()

    def release(self, pos: QPointF, pressure: float = 1.0) -> None:
        doc = self._document()
        if doc is None:
            return
        if self._tool.paints and doc.stroking:
            doc.extend_stroke((pos.x(), pos.y(), pressure))
            self._undo.record(doc.end_stroke())
        elif self._anchor is not None:
            self.move(pos, pressure)
            op = Op.SUBTRACT if self._shape_subtract else Op.ADD
            if self._tool is Tool.RECT:
                a, b = self._anchor, self._corner or pos
                self._undo.record(doc.apply_rect(a.x(), a.y(), b.x(), b.y(), op))
            elif self._tool is Tool.LASSO and len(self._lasso) >= 3:
                points = [(p.x(), p.y()) for p in self._lasso]
                self._undo.record(doc.apply_polygon(points, op))
            self._clear_shape()

    def cancel(self) -> None:
        """Escape: drop the stroke or shape in progress, leaving the mask as it was."""
        doc = self._document()
        if doc is not None and doc.stroking:
            doc.cancel_stroke()
        if self._anchor is not None:
            self._clear_shape()

    def _clear_shape(self) -> None:
        self._anchor, self._corner, self._lasso = None, None, []
        self.shape_changed.emit()

    def shape_outline(self) -> QPolygonF | None:
        """The rectangle or lasso being dragged, in image coordinates (None when idle)."""
        if self._anchor is None:
            return None
        if self._tool is Tool.RECT and self._corner is not None:
            return QPolygonF(QRectF(self._anchor, self._corner).normalized())
        return QPolygonF(self._lasso)

    @property
    def shape_subtracts(self) -> bool:
        return self._shape_subtract

    # -- whole-mask actions ---------------------------------------------------------------
    def fill_all(self) -> None:
        self._whole(lambda doc: doc.fill_mask(1.0))

    def clear(self) -> None:
        self._whole(lambda doc: doc.clear_mask())

    def invert(self) -> None:
        self._whole(lambda doc: doc.invert_mask())

    def grow(self, px: int) -> None:
        self._whole(lambda doc: doc.grow_mask(px))

    def _whole(self, edit: Callable[[CanvasDocument], object]) -> None:
        doc = self._document()
        if doc is None:
            return
        self.cancel()
        self._undo.record(edit(doc))  # type: ignore[arg-type]
