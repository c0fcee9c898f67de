"""The canvas view: the image, the mask overlay, the brush cursor; zoom and pan.

Drawn by hand rather than with QGraphicsView so that a brush dab on a 4000 x 3000 image costs
a few hundred pixels: the image is cached as a QPixmap (and, below 100 %, as one smooth
downscaled copy per zoom), the overlay is a cached QImage refreshed only in the rectangles the
document reports dirty, and only the widget area over those rectangles is repainted.

Coordinates: image pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)`` (as in
:mod:`studio.core.brush`); a widget point ``p`` maps to ``(p - offset) / scale``.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRect, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
)
from PySide6.QtWidgets import QWidget

from studio.core.canvas import CanvasDocument
from studio.core.regions import Rect
from studio.qt.canvas.overlay import MaskOverlay
from studio.qt.canvas.pointer import ZOOM_STEP, PointerInput
from studio.qt.canvas.tools import ToolController
from studio.qt.imaging import numpy_to_qimage

MIN_SCALE, MAX_SCALE = 0.02, 32.0
BACKGROUND = QColor("#15171b")
FIT_MARGIN = 0.96
SMOOTH_DELAY_MS = 120  # after the last zoom step, the smooth downscaled copy is made


class CanvasView(PointerInput):
    """Shows one :class:`CanvasDocument` and feeds pointer input to a :class:`ToolController`.

    ``zoom_changed(scale)`` after any zoom; ``files_dropped(paths)`` when files are dropped.
    """

    zoom_changed = Signal(float)
    files_dropped = Signal(list)

    def __init__(self, tools: ToolController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tools = tools
        self.overlay = MaskOverlay()
        self.overlay_opacity = 0.5
        self.show_overlay = True
        self._doc: CanvasDocument | None = None
        self._pixmap = QPixmap()
        self._scaled: tuple[float, QPixmap] | None = None  # smooth copy for zooms below 1
        self._preview: QPixmap | None = None  # a staged result shown instead of the image
        self.scale = 1.0
        self.offset = QPointF(0.0, 0.0)
        self._fitted = True  # keep fitting on resize until the user zooms or pans
        self._hover: QPointF | None = None  # widget position of the brush cursor
        self._pan_from: QPointF | None = None
        self._space = False
        self._drawing = False
        self._smooth_timer = QTimer(self)
        self._smooth_timer.setSingleShot(True)
        self._smooth_timer.setInterval(SMOOTH_DELAY_MS)
        self._smooth_timer.timeout.connect(self._on_smooth_timer)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setAcceptDrops(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setMinimumSize(240, 200)
        tools.settings_changed.connect(self._on_brush_changed)
        tools.shape_changed.connect(self.update)
        tools.tool_changed.connect(self._on_tool_changed)
        self._on_tool_changed(tools.tool.value)

    # -- the document --------------------------------------------------------------------
    @property
    def document(self) -> CanvasDocument | None:
        return self._doc

    def set_document(self, doc: CanvasDocument | None, prepared: QImage | None = None) -> None:
        """Show ``doc``. ``prepared`` is its image already converted by :func:`display_image`
        (on a worker, for a large file), which saves the GUI thread the conversion."""
        if self._doc is not None:
            self._doc.remove_listener(self._on_document_changed)
        self._doc = doc
        self._preview = None
        self._rebuild_image(prepared)
        self.overlay.reset(doc.mask if doc is not None else None)
        if doc is not None:
            doc.add_listener(self._on_document_changed)
        self.fit()

    def _on_document_changed(self, layer: str, rect: Rect) -> None:
        doc = self._doc
        if doc is None:
            return
        if layer == "image":
            resized = (self._pixmap.height(), self._pixmap.width()) != doc.shape
            self._rebuild_image()
            self.overlay.reset(doc.mask)  # an image command may carry a resized mask
            if resized:  # an accepted upscale, or its undo: the whole image in view again
                self.fit()
            self.update()
            return
        changed = self.overlay.update(doc.mask, rect)
        self.update(self._widget_rect(changed))

    def _rebuild_image(self, prepared: QImage | None = None) -> None:
        self._scaled = None
        if self._doc is None:
            self._pixmap = QPixmap()
            return
        h, w = self._doc.shape
        ok = prepared is not None and (prepared.height(), prepared.width()) == (h, w)
        self._pixmap = QPixmap.fromImage(prepared if ok else display_image(self._doc.image))

    def set_preview(self, image: np.ndarray | None) -> None:
        """Show ``image`` in place of the document's image, or go back to the document's with
        None. Nothing is committed. An image of another size (an upscale) is shown scaled
        (smoothly) to the document's, so it lines up with what it would replace."""
        self._preview = None if image is None else QPixmap.fromImage(display_image(image))
        if self._preview is not None and self._doc is not None:
            h, w = self._doc.shape
            if (self._preview.height(), self._preview.width()) != (h, w):
                self._preview = self._preview.scaled(
                    w,
                    h,
                    Qt.AspectRatioMode.IgnoreAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
        self._scaled = None
        self.update()

    @property
    def previewing(self) -> bool:
        return self._preview is not None

    def set_overlay_colour(self, colour: QColor) -> None:
        self.overlay.colour = QColor(colour)
        self.overlay.reset(self._doc.mask if self._doc is not None else None)
        self.update()

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay_opacity = min(max(float(opacity), 0.0), 1.0)
        self.update()

    def set_feather_preview(self, radius: float) -> None:
        """Show the blend inpainting will use at feather ``radius`` px (0: the mask itself)."""
        self.overlay.feather_radius = max(0.0, float(radius))
        self.overlay.reset(self._doc.mask if self._doc is not None else None)
        self.update()

    # -- coordinates and zoom --------------------------------------------------------------
    def map_to_image(self, p: QPointF) -> QPointF:
        return QPointF(
            (p.x() - self.offset.x()) / self.scale, (p.y() - self.offset.y()) / self.scale
        )

    def map_from_image(self, p: QPointF) -> QPointF:
        return QPointF(p.x() * self.scale + self.offset.x(), p.y() * self.scale + self.offset.y())

    def _widget_rect(self, r: Rect, pad: int = 2) -> QRect:
        tl = self.map_from_image(QPointF(r.x0, r.y0))
        br = self.map_from_image(QPointF(r.x1, r.y1))
        return QRectF(tl, br).toAlignedRect().adjusted(-pad, -pad, pad, pad)

    def image_rect(self) -> QRectF:
        """Where the whole image lies, in widget coordinates."""
        if self._doc is None:
            return QRectF()
        h, w = self._doc.shape
        return QRectF(
            self.offset, QPointF(self.offset.x() + w * self.scale, self.offset.y() + h * self.scale)
        )

    def set_zoom(self, scale: float, anchor: QPointF | None = None) -> None:
        """Zoom to ``scale`` keeping the image point under ``anchor`` (default: the centre)."""
        scale = min(max(scale, MIN_SCALE), MAX_SCALE)
        anchor = QPointF(self.width() / 2, self.height() / 2) if anchor is None else anchor
        fixed = self.map_to_image(anchor)
        self.scale = scale
        self.offset = QPointF(anchor.x() - fixed.x() * scale, anchor.y() - fixed.y() * scale)
        self._fitted = False
        self._scaled = None
        self.update()
        self.zoom_changed.emit(self.scale)

    def zoom_in(self, anchor: QPointF | None = None) -> None:
        self.set_zoom(self.scale * ZOOM_STEP, anchor)

    def zoom_out(self, anchor: QPointF | None = None) -> None:
        self.set_zoom(self.scale / ZOOM_STEP, anchor)

    def fit(self) -> None:
        """The whole image, as large as fits, centred."""
        if self._doc is None:
            self.scale, self.offset = 1.0, QPointF()
        else:
            h, w = self._doc.shape
            self.scale = min(
                max(FIT_MARGIN * min(self.width() / w, self.height() / h), MIN_SCALE), MAX_SCALE
            )
            self.offset = QPointF(
                (self.width() - w * self.scale) / 2, (self.height() - h * self.scale) / 2
            )
        self._fitted = True
        self._scaled = None
        self.update()
        self.zoom_changed.emit(self.scale)

    def actual_size(self) -> None:
        """100 %: one image pixel per screen pixel, keeping the centre where it is."""
        self.set_zoom(1.0)

    def pan_by(self, dx: float, dy: float) -> None:
        self.offset = QPointF(self.offset.x() + dx, self.offset.y() + dy)
        self._fitted = False
        self.update()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        if self._fitted:
            self.fit()
        super().resizeEvent(event)

    # -- painting --------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        exposed = event.rect()
        painter.fillRect(exposed, BACKGROUND)
        if self._doc is None:
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(
                self.rect(),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                "Open an image, drop one here, or paste one (Ctrl+V)",
            )
            return
        src = self._source_rect(QRectF(exposed))
        if src is not None:
            self._draw_image(painter, src)
            if self.show_overlay and not self.overlay.image.isNull():
                painter.setOpacity(self.overlay_opacity)
                painter.drawImage(self._target(src), self.overlay.image, QRectF(src))
                painter.setOpacity(1.0)
        self._draw_shape(painter)
        self._draw_cursor(painter)

    def _source_rect(self, exposed: QRectF) -> QRect | None:
        """The image pixels under ``exposed`` (whole pixels, clipped to the image)."""
        assert self._doc is not None
        a, b = self.map_to_image(exposed.topLeft()), self.map_to_image(exposed.bottomRight())
        h, w = self._doc.shape
        x0, y0 = max(0, math.floor(a.x())), max(0, math.floor(a.y()))
        x1, y1 = min(w, math.ceil(b.x()) + 1), min(h, math.ceil(b.y()) + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        return QRect(x0, y0, x1 - x0, y1 - y0)

    def _target(self, src: QRect) -> QRectF:
        return QRectF(
            self.map_from_image(QPointF(src.x(), src.y())),
            self.map_from_image(QPointF(src.x() + src.width(), src.y() + src.height())),
        )

    def _draw_image(self, painter: QPainter, src: QRect) -> None:
        pixmap = self._preview if self._preview is not None else self._pixmap
        if self.scale >= 1.0:
            # Enlarged: crisp pixels, so the artist sees exactly what the mask covers.
            painter.drawPixmap(self._target(src), pixmap, QRectF(src))
            return
        if self._scaled is None or self._scaled[0] != self.scale:
            # Zooming: draw the quick (nearest) way now and make the smooth copy once the
            # wheel rests, so zooming a 12-megapixel image never stutters.
            painter.drawPixmap(self._target(src), pixmap, QRectF(src))
            self._smooth_timer.start()
            return
        # The cached copy is the image at this scale: its pixel (u, v) sits at offset + (u, v).
        target = self._target(src)
        source = target.translated(-self.offset.x(), -self.offset.y())
        painter.drawPixmap(target, self._scaled[1], source)

    def _on_smooth_timer(self) -> None:
        if self._doc is None or self.scale >= 1.0:
            return
        pixmap = self._preview if self._preview is not None else self._pixmap
        smooth = pixmap.scaled(
            max(1, round(pixmap.width() * self.scale)),
            max(1, round(pixmap.height() * self.scale)),
            Qt.AspectRatioMode.IgnoreAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        self._scaled = (self.scale, smooth)
        self.update()

    def _draw_shape(self, painter: QPainter) -> None:
        outline = self.tools.shape_outline()
        if outline is None or outline.isEmpty():
            return
        mapped = [self.map_from_image(p) for p in outline]
        colour = QColor("#ff8080") if self.tools.shape_subtracts else QColor("#ffffff")
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor(0, 0, 0, 160), 3))
        painter.drawPolygon(mapped)
        pen = QPen(colour, 1, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.drawPolygon(mapped)

    def _cursor_radius(self) -> float:
        return max(self.tools.brush.size * self.scale / 2.0, 1.0)

    def _draw_cursor(self, painter: QPainter) -> None:
        if self._hover is None or not self.tools.tool.paints or self._pan_from is not None:
            return
        r = self._cursor_radius()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 180), 3))
        painter.drawEllipse(self._hover, r, r)
        painter.setPen(QPen(QColor(255, 255, 255, 230), 1))
        painter.drawEllipse(self._hover, r, r)
        if r < 6:  # a small brush: a cross shows where the centre is
            x, y = self._hover.x(), self._hover.y()
            painter.drawLine(QPointF(x - 8, y), QPointF(x + 8, y))
            painter.drawLine(QPointF(x, y - 8), QPointF(x, y + 8))

    def _cursor_area(self, pos: QPointF | None) -> QRect:
        if pos is None:
            return QRect()
        r = max(self._cursor_radius(), 8) + 3
        return QRectF(pos.x() - r, pos.y() - r, 2 * r, 2 * r).toAlignedRect()

    def _move_cursor(self, pos: QPointF | None) -> None:
        old, self._hover = self._hover, pos
        self.update(self._cursor_area(old))
        self.update(self._cursor_area(pos))

    def _on_brush_changed(self) -> None:
        self.update()

    def _on_tool_changed(self, _name: str) -> None:
        paints = self.tools.tool.paints
        self.setCursor(Qt.CursorShape.CrossCursor if not paints else Qt.CursorShape.BlankCursor)
        self.update()

    def _emit_dropped(self, paths: list[str]) -> None:
        self.files_dropped.emit(paths)


def display_image(image: np.ndarray) -> QImage:
    """``image`` as a QImage in the screen's native 32-bit format, which a QPixmap takes without
    converting again. Safe to call on a worker thread (QImage, unlike QPixmap, is)."""
    return numpy_to_qimage(image).convertToFormat(QImage.Format.Format_RGB32)
