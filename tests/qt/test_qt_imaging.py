"""numpy <-> QImage: copies, row padding, every channel layout, strided input."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from PySide6.QtGui import QColor, QImage

from studio.qt.imaging import numpy_to_qimage, qimage_to_numpy


def _random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(7, 5, 3), (4, 13, 3), (6, 5), (3, 7, 4), (1, 1, 3), (9, 3, 1)])
def test_round_trip_with_padded_rows(shape: tuple[int, ...]) -> None:
    # Widths like 5 RGB pixels (15 bytes) or 5 gray pixels are not multiples of 4, so the
    # QImage rows are padded; the round trip must not shear the picture.
    arr = _random(shape)
    image = numpy_to_qimage(arr)
    assert (image.width(), image.height()) == (shape[1], shape[0])
    back = qimage_to_numpy(image)
    expected = arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    np.testing.assert_array_equal(back, expected)


def test_pixels_land_where_expected() -> None:
    arr = np.zeros((3, 5, 3), np.uint8)
    arr[2, 4] = (255, 10, 20)
    arr[0, 1] = (1, 2, 3)
    image = numpy_to_qimage(arr)
    assert image.pixelColor(4, 2) == QColor(255, 10, 20)
    assert image.pixelColor(1, 0) == QColor(1, 2, 3)


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::2],  # strided columns
        lambda a: a[::-1],  # negative row stride
        lambda a: a.transpose(1, 0, 2),  # Fortran-like layout
        lambda a: a[1:-1, 1:-1],  # a window into a larger buffer
        lambda a: np.asfortranarray(a),
    ],
)
def test_non_contiguous_input(view) -> None:
    arr = view(_random((10, 9, 3), seed=3))
    np.testing.assert_array_equal(qimage_to_numpy(numpy_to_qimage(arr)), arr)


def test_image_owns_its_memory() -> None:
    arr = _random((8, 7, 3))
    expected = arr.copy()
    image = numpy_to_qimage(arr)
    arr[:] = 0  # changing or freeing the source must not change the image
    del arr
    gc.collect()
    np.testing.assert_array_equal(qimage_to_numpy(image), expected)


def test_result_array_outlives_image() -> None:
    image = QImage(5, 3, QImage.Format.Format_RGB32)
    image.fill(QColor(10, 20, 30))
    out = qimage_to_numpy(image)
    del image
    gc.collect()
    assert out.shape == (3, 5, 3)
    np.testing.assert_array_equal(out[1, 2], [10, 20, 30])


def test_other_qimage_formats_convert() -> None:
    image = QImage(6, 4, QImage.Format.Format_ARGB32)
    image.fill(QColor(200, 100, 50, 128))
    out = qimage_to_numpy(image)
    assert out.shape == (4, 6, 4)
    assert out[0, 0, 3] == 128


def test_float_input_and_bad_shapes() -> None:
    arr = np.full((2, 3, 3), 300.0)
    np.testing.assert_array_equal(qimage_to_numpy(numpy_to_qimage(arr)), 255)
    with pytest.raises(ValueError):
        numpy_to_qimage(np.zeros((2, 3, 2), np.uint8))
    with pytest.raises(ValueError):
        numpy_to_qimage(np.zeros((2,), np.uint8))
    assert numpy_to_qimage(np.zeros((0, 4, 3), np.uint8)).isNull()
    assert qimage_to_numpy(QImage()).shape == (0, 0, 3)
