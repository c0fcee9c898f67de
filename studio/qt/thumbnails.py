"""Thumbnails of a dataset's images: each whole, letterboxed in a square of one size."""

from __future__ import annotations

from pathlib import PurePosixPath

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter

ICON_SIZE = 72
CELL = QSize(ICON_SIZE + 36, ICON_SIZE + 26)  # every thumbnail's cell: icon, margin, one line
LETTERBOX = QColor(128, 128, 128, 48)  # behind a thumbnail's bars: faint on light or dark


def letterbox(image: QImage, size: int = ICON_SIZE) -> QImage:
    """The whole image, scaled to fit a ``size`` square and centred on a faint backdrop.

    Every thumbnail is then the same size whatever its aspect ratio (a 400x100 panorama and
    a 100x400 portrait alike), so cells line up and nothing is cropped. Images smaller than
    the square are enlarged pixel-sharp (QIcon never scales a pixmap up), larger ones smoothly.
    """
    box = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    box.fill(LETTERBOX)
    if image.isNull() or image.width() <= 0 or image.height() <= 0:
        return box
    enlarge = image.width() < size and image.height() < size
    fitted = image.scaled(
        size,
        size,
        Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.FastTransformation
        if enlarge
        else Qt.TransformationMode.SmoothTransformation,
    )
    painter = QPainter(box)
    painter.drawImage((size - fitted.width()) // 2, (size - fitted.height()) // 2, fitted)
    painter.end()
    return box


def thumbnail_tooltip(rel: str, width: int, height: int) -> str:
    """What hovering a thumbnail says: its name, its size in pixels, its path in the folder."""
    size = f"{width:,} × {height:,} px" if width and height else "size unknown"
    return f"{PurePosixPath(rel).name}\n{size}\n{rel}"
