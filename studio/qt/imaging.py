"""The one place numpy arrays and QImages meet. Both directions copy.

A QImage built over a numpy buffer does not own that memory, and QImage rows are padded to
4 bytes, so a naive ``QImage(arr.data, w, h, fmt)`` either crashes later or shears the picture.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage

_FORMATS = {
    1: QImage.Format.Format_Grayscale8,
    3: QImage.Format.Format_RGB888,
    4: QImage.Format.Format_RGBA8888,
}


def numpy_to_qimage(arr: np.ndarray) -> QImage:
    """A QImage that owns a copy of ``arr`` (``H x W``, ``H x W x 1``, ``x 3`` RGB or ``x 4`` RGBA).

    Any layout works (strided, flipped, non-contiguous). Non-uint8 input must already be in
    0..255 and is converted.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in _FORMATS:
        raise ValueError(f"expected H x W, H x W x 1, 3 or 4, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    height, width, channels = arr.shape
    if height == 0 or width == 0:
        return QImage()
    # A C-contiguous buffer whose row stride is exactly width * channels; QImage reads rows
    # at the stride we pass, so no 4-byte padding is assumed.
    buf = np.ascontiguousarray(arr)
    image = QImage(buf.data, width, height, buf.strides[0], _FORMATS[channels])
    return image.copy()  # detach from ``buf`` before it is freed


def qimage_to_numpy(image: QImage) -> np.ndarray:
    """An ``H x W x 3`` (or ``x 4`` when the image has alpha, ``H x W`` for grayscale) copy."""
    if image.isNull():
        return np.zeros((0, 0, 3), dtype=np.uint8)
    fmt = image.format()
    if fmt == QImage.Format.Format_Grayscale8:
        channels = 1
    elif image.hasAlphaChannel():
        channels, fmt = 4, QImage.Format.Format_RGBA8888
    else:
        channels, fmt = 3, QImage.Format.Format_RGB888
    if image.format() != fmt:
        image = image.convertToFormat(fmt)
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    raw = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * height)
    # Drop the row padding, then copy so the array outlives the QImage.
    rows = raw.reshape(height, stride)[:, : width * channels]
    out = rows.reshape(height, width, channels).copy()
    return out[:, :, 0] if channels == 1 else out
