"""Pure numpy helpers for image arrays (H x W x 3 uint8)."""

from __future__ import annotations

import math

import numpy as np


def make_grid(
    images: np.ndarray, nrow: int | None = None, pad: int = 2, fill: int = 24
) -> np.ndarray:
    """Tile ``N x H x W x C`` uint8 images into one ``H' x W' x C`` grid, row by row.

    ``nrow`` is the number of images per row (default: about square).
    """
    if images.ndim != 4:
        raise ValueError(f"expected N x H x W x C images, got shape {images.shape}")
    n, h, w, c = images.shape
    if n == 0:
        return np.full((h or 1, w or 1, c or 3), fill, dtype=np.uint8)
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid
