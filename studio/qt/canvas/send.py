"""Send to canvas: a sample from a grid anywhere in the studio, onto the canvas.

Sample grids are made by :func:`studio.core.imaging.make_grid` (square tiles, ``pad`` pixels of
``fill`` between them). :func:`install_send_to_canvas` gives an
:class:`~studio.qt.widgets.ImageView` showing such a grid a context menu that sends the sample
under the pointer, or the whole grid, to a callback (the canvas's ``set_image``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QMenu

from studio.qt.imaging import qimage_to_numpy
from studio.qt.widgets import ImageView

GRID_PAD, GRID_FILL = 2, 24  # make_grid's defaults

Send = Callable[[np.ndarray, str], None]


def grid_tile_size(grid: np.ndarray, pad: int = GRID_PAD, fill: int = GRID_FILL) -> int | None:
    """The side of the square tiles of a ``make_grid`` grid, found from its separator lines;
    None if ``grid`` does not look like a grid of square tiles."""
    if grid.ndim != 3 or min(grid.shape[:2]) <= 2 * pad:
        return None
    cols_fill = (grid == fill).all(axis=(0, 2))
    rows_fill = (grid == fill).all(axis=(1, 2))
    h, w = grid.shape[:2]
    for tile in range(1, min(h, w) - 2 * pad + 1):
        step = tile + pad
        if (w - pad) % step or (h - pad) % step:
            continue
        seps_x = [x for k in range(0, w, step) for x in range(k, k + pad)]
        seps_y = [y for k in range(0, h, step) for y in range(k, k + pad)]
        if cols_fill[seps_x].all() and rows_fill[seps_y].all():
            return tile
    return None


def grid_tile_at(
    grid: np.ndarray, x: float, y: float, pad: int = GRID_PAD, fill: int = GRID_FILL
) -> np.ndarray | None:
    """A copy of the tile under grid pixel ``(x, y)``; None over a separator, an empty slot
    or a picture that is not a grid."""
    tile = grid_tile_size(grid, pad, fill)
    if tile is None:
        return None
    step = tile + pad
    col, u = divmod(int(x) - pad, step)
    row, v = divmod(int(y) - pad, step)
    if col < 0 or row < 0 or u >= tile or v >= tile:
        return None
    y0, x0 = pad + row * step, pad + col * step
    out = grid[y0 : y0 + tile, x0 : x0 + tile].copy()
    if out.shape[:2] != (tile, tile) or (out == fill).all():
        return None  # past the edge, or an unused slot of the last row
    return out


def install_send_to_canvas(view: ImageView, send: Send, name: str = "Sample") -> None:
    """Right-click on ``view``: "Send this sample to the canvas" / "Send the whole grid"."""
    view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)

    def on_menu(pos: QPoint) -> None:
        image = view.image()
        if image.isNull():
            return
        grid = qimage_to_numpy(image)
        if grid.ndim == 2:
            grid = np.repeat(grid[:, :, None], 3, axis=2)
        grid = grid[:, :, :3]
        target = view.target_rect()
        x = (pos.x() - target.x()) * grid.shape[1] / max(1, target.width())
        y = (pos.y() - target.y()) * grid.shape[0] / max(1, target.height())
        tile = grid_tile_at(grid, x, y)
        menu = QMenu(view)
        one = menu.addAction("Send this sample to the canvas")
        one.setEnabled(tile is not None)
        one.triggered.connect(lambda: send(tile, name))
        menu.addAction("Send the whole grid to the canvas").triggered.connect(
            lambda: send(grid, f"{name} grid")
        )
        menu.popup(view.mapToGlobal(pos))

    view.customContextMenuRequested.connect(on_menu)
