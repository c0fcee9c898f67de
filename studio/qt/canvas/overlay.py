"""The mask overlay: a cached premultiplied QImage of the mask in one colour.

Only dirty rectangles are converted (a brush dab touches a few hundred pixels of a 12-megapixel
mask), and the opacity is applied when drawing, so the opacity slider costs nothing. With the
feather preview on, the overlay shows the blend an inpainting result will be pasted through:
the mask grown by the radius, then feathered by it (:func:`blend`), so the preview matches
what Accept will change.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPoint
from PySide6.QtGui import QColor, QImage, QPainter

from studio.core import brush
from studio.core.brush import Rect, clip_rect
from studio.qt.imaging import numpy_to_qimage

DEFAULT_COLOUR = QColor(255, 48, 96)
CHUNK_ROWS = 512  # a full rebuild goes in bands, so no 4-channel copy of a huge mask exists


def blend(mask: np.ndarray, radius: float) -> np.ndarray:
    """The blend inpainting composites through: ``mask`` grown by ``radius`` and feathered by
    it, never below ``mask`` (the same core calls as
    :func:`studio.engine.inpaint.blend_masks`, without importing torch on the GUI thread)."""
    if radius <= 0:
        return mask.astype(np.float32, copy=True)
    grown = brush.grow(mask, math.ceil(radius))
    return np.maximum(mask, brush.feather(grown, radius)).astype(np.float32)


class MaskOverlay:
    """``image`` holds the mask (or its feathered blend) as colour with alpha = coverage."""

    def __init__(self) -> None:
        self.image = QImage()
        self.colour = QColor(DEFAULT_COLOUR)
        self.feather_radius = 0.0  # > 0: show the feathered mask
        self._shape: tuple[int, int] = (0, 0)

    def reset(self, mask: np.ndarray | None) -> None:
        """Rebuild everything (a new document, colour or feather radius)."""
        if mask is None:
            self.image, self._shape = QImage(), (0, 0)
            return
        h, w = mask.shape
        if self._shape != (h, w) or self.image.isNull():
            self.image = QImage(w, h, QImage.Format.Format_ARGB32_Premultiplied)
            self._shape = (h, w)
        self.image.fill(0)
        for y0 in range(0, h, CHUNK_ROWS):
            self._write(mask, Rect(y0, min(h, y0 + CHUNK_ROWS), 0, w), exact=False)

    def update(self, mask: np.ndarray, rect: Rect) -> Rect:
        """Refresh the overlay where ``rect`` of the mask changed; returns the overlay rect that
        was redrawn (wider than ``rect`` when feathering, since a blur spreads)."""
        return self._write(mask, rect, exact=True)

    def _write(self, mask: np.ndarray, rect: Rect, *, exact: bool) -> Rect:
        out = rect
        if self.feather_radius > 0:
            reach = 2 * math.ceil(self.feather_radius)  # grown by the radius, then blurred
            grown = clip_rect(
                rect.y0 - reach, rect.y1 + reach, rect.x0 - reach, rect.x1 + reach, mask.shape
            )
            # The blend of `grown` needs the mask `reach` further out; blending that window
            # alone gives exactly the whole-mask result inside `grown`.
            src = clip_rect(
                grown.y0 - reach, grown.y1 + reach, grown.x0 - reach, grown.x1 + reach, mask.shape
            )
            assert grown is not None and src is not None
            blended = blend(mask[src.slices], self.feather_radius)
            values = blended[
                grown.y0 - src.y0 : grown.y1 - src.y0, grown.x0 - src.x0 : grown.x1 - src.x0
            ]
            out = grown
        else:
            values = mask[rect.slices]
        if not exact and not values.any():
            return out  # the band was cleared by fill(0) already
        alpha = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
        rgba = np.empty((*alpha.shape, 4), np.uint8)
        rgba[..., 0], rgba[..., 1], rgba[..., 2] = (
            self.colour.red(),
            self.colour.green(),
            self.colour.blue(),
        )
        rgba[..., 3] = alpha
        painter = QPainter(self.image)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        painter.drawImage(QPoint(out.x0, out.y0), numpy_to_qimage(rgba))
        painter.end()
        return out

    def alpha_at(self, x: int, y: int) -> int:
        """The overlay's alpha (0..255) at one pixel; for tests and the status line."""
        return QColor.fromRgba(self.image.pixel(x, y)).alpha()
