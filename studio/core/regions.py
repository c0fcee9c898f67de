"""Pixel rectangles and mask patches, shared by the brush, the mask tools and the canvas.

Coordinates are image pixels with pixel ``(row i, column j)`` covering ``[j, j+1) x [i, i+1)``;
its centre is ``(j + 0.5, i + 0.5)``. Rectangles are :class:`Rect` ``(y0, y1, x0, x1)``,
half-open. A :class:`MaskPatch` is what an edit changed, the unit of mask undo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Rect(NamedTuple):
    """A half-open pixel rectangle ``rows y0:y1, columns x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow wants it."""
        return self.x1 - self.x0, self.y1 - self.y0

    def union(self, other: Rect | None) -> Rect:
        if other is None:
            return self
        return Rect(
            min(self.y0, other.y0),
            max(self.y1, other.y1),
            min(self.x0, other.x0),
            max(self.x1, other.x1),
        )

    def contains(self, other: Rect) -> bool:
        return (
            self.y0 <= other.y0
            and other.y1 <= self.y1
            and self.x0 <= other.x0
            and other.x1 <= self.x1
        )


def clip_rect(y0: float, y1: float, x0: float, x1: float, shape: tuple[int, ...]) -> Rect | None:
    """``(y0, y1, x0, x1)`` rounded outwards and clipped to ``shape``; ``None`` if empty."""
    h, w = shape[0], shape[1]
    r = Rect(
        max(0, math.floor(y0)), min(h, math.ceil(y1)), max(0, math.floor(x0)), min(w, math.ceil(x1))
    )
    return r if r.y1 > r.y0 and r.x1 > r.x0 else None


def changed_rect(before: np.ndarray, after: np.ndarray) -> Rect | None:
    """The bounding box of the pixels that differ between two same-shaped arrays."""
    return support_rect(before != after)


def support_rect(a: np.ndarray) -> Rect | None:
    """The bounding box of the non-zero pixels of ``a`` (``H x W`` or ``H x W x C``)."""
    nz = a != 0
    if nz.ndim == 3:
        nz = nz.any(axis=2)
    rows, cols = np.flatnonzero(nz.any(axis=1)), np.flatnonzero(nz.any(axis=0))
    if rows.size == 0:
        return None
    return Rect(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


@dataclass(frozen=True)
class MaskPatch:
    """What an edit changed: ``mask[rect]`` went from ``before`` to ``after``."""

    rect: Rect
    before: np.ndarray
    after: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.before.nbytes + self.after.nbytes)
