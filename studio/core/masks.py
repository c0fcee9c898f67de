"""Whole-mask operations on float32 masks in [0, 1] (``H x W``): fill, clear and invert,
rectangle, polygon (lasso) and flood-fill shapes combined by an :class:`Op`, grow/shrink,
feathering and compositing. Pure numpy.

Every function returns a new mask (or image) and never modifies its input; the canvas turns the
difference into an undo patch. Pixel coordinates are as in :mod:`studio.core.regions`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import numpy as np

from studio.core.regions import clip_rect, support_rect

# -- shape tools -------------------------------------------------------------------------


class Op(str, enum.Enum):
    """How a shape combines with the mask (same algebra as the brush)."""

    ADD = "add"
    SUBTRACT = "subtract"
    INTERSECT = "intersect"
    REPLACE = "replace"


def _checked(mask: np.ndarray) -> np.ndarray:
    if mask.ndim != 2:
        raise ValueError(f"a mask is H x W, not {mask.shape}")
    return mask.astype(np.float32, copy=False)


def combine(mask: np.ndarray, shape: np.ndarray, op: Op | str = Op.ADD) -> np.ndarray:
    """A new mask: ``shape`` (coverage in [0, 1]) added to, cut from, intersected with or
    replacing ``mask``."""
    m, s = _checked(mask), np.clip(shape, 0.0, 1.0).astype(np.float32)
    op = Op(op)
    if op is Op.ADD:
        return m + (1.0 - m) * s
    if op is Op.SUBTRACT:
        return m * (1.0 - s)
    if op is Op.INTERSECT:
        return m * s
    return s.copy()


def fill(mask: np.ndarray, value: float = 1.0) -> np.ndarray:
    return np.full(mask.shape, np.float32(min(max(value, 0.0), 1.0)), np.float32)


def clear(mask: np.ndarray) -> np.ndarray:
    return np.zeros(mask.shape, np.float32)


def invert(mask: np.ndarray) -> np.ndarray:
    return (1.0 - _checked(mask)).astype(np.float32)


def _span_coverage(a: float, b: float, n: int) -> np.ndarray:
    """How much of each of ``n`` unit pixels the interval ``[a, b)`` covers."""
    edges = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(b, edges + 1) - np.maximum(a, edges), 0.0, 1.0)


def rect_mask(
    shape: tuple[int, ...], x0: float, y0: float, x1: float, y1: float, value: float = 1.0
) -> np.ndarray:
    """An ``H x W`` mask of the rectangle between two corners; fractional edges anti-alias,
    integer corners give exactly the pixels ``y0:y1, x0:x1``."""
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    cov = np.outer(_span_coverage(y0, y1, shape[0]), _span_coverage(x0, x1, shape[1]))
    return (cov * value).astype(np.float32)


def apply_rect(
    mask: np.ndarray,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    op: Op | str = Op.ADD,
    value: float = 1.0,
) -> np.ndarray:
    return combine(mask, rect_mask(mask.shape, x0, y0, x1, y1, value), op)


def polygon_mask(
    shape: tuple[int, ...],
    points: Sequence[Sequence[float]],
    *,
    rule: str = "nonzero",
    antialias: bool = True,
    value: float = 1.0,
) -> np.ndarray:
    """Fill a closed polygon (a lasso), scanline by scanline, with the ``nonzero`` or
    ``evenodd`` rule. Horizontal coverage is exact; vertical anti-aliasing samples 4 lines per
    row (1, through the pixel centre, without ``antialias``). A square with integer corners
    equals :func:`rect_mask`."""
    if rule not in ("nonzero", "evenodd"):
        raise ValueError(f"rule must be 'nonzero' or 'evenodd', not {rule!r}")
    h, w = shape[0], shape[1]
    out = np.zeros((h, w), np.float32)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) < 3 or not np.isfinite(pts).all():
        return out
    xa, ya = pts[:, 0], pts[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    keep = ya != yb  # horizontal edges never cross a scanline
    xa, ya, xb, yb = xa[keep], ya[keep], xb[keep], yb[keep]
    if xa.size == 0:
        return out
    sub = 4 if antialias else 1
    row0, row1 = (
        max(0, math.floor(min(ya.min(), yb.min()))),
        min(h, math.ceil(max(ya.max(), yb.max()))),
    )
    lo, hi, direction = np.minimum(ya, yb), np.maximum(ya, yb), np.sign(yb - ya)
    slope = (xb - xa) / (yb - ya)
    # Rows in chunks, so the (scanlines x edges) crossing table stays a few MB.
    rows_per_chunk = max(1, 500_000 // (xa.size * sub))
    for c0 in range(row0, row1, rows_per_chunk):
        c1 = min(row1, c0 + rows_per_chunk)
        ys = (np.arange(c0 * sub, c1 * sub, dtype=np.float64) + 0.5) / sub
        hit = (ys[:, None] >= lo) & (ys[:, None] < hi)
        xs = np.where(hit, xa + (ys[:, None] - ya) * slope, np.inf)
        order = np.argsort(xs, axis=1)
        xs = np.take_along_axis(xs, order, axis=1)
        dirs = np.take_along_axis(np.where(hit, direction, 0.0), order, axis=1)
        winding = np.cumsum(dirs if rule == "nonzero" else np.abs(dirs), axis=1)
        inside = winding % 2 == 1 if rule == "evenodd" else winding != 0
        span = inside[:, :-1] & np.isfinite(xs[:, 1:])
        line, k = np.nonzero(span)
        a = np.clip(xs[line, k], 0.0, w)
        b = np.clip(xs[line, k + 1], 0.0, w)
        _add_spans(out[c0:c1], line // sub, a, b, value / sub)
    return np.clip(out, 0.0, 1.0)


def _add_spans(
    rows: np.ndarray, row: np.ndarray, a: np.ndarray, b: np.ndarray, weight: float
) -> None:
    """Add ``weight`` times the coverage of spans ``[a, b)`` to ``rows[row]``, all at once.

    The coverage of ``[a, b)`` is ``F(b) - F(a)`` with ``F(x)[j] = clip(x - j, 0, 1)``: whole
    pixels go in as a difference array (cumsum), the fractional end pixels directly.
    """
    w = rows.shape[1]
    diff = np.zeros((rows.shape[0], w + 1), np.float64)
    part = np.zeros_like(diff)
    fa, fb = np.floor(a).astype(np.intp), np.floor(b).astype(np.intp)
    np.add.at(diff, (row, fa), weight)
    np.add.at(diff, (row, fb), -weight)
    np.add.at(part, (row, fb), weight * (b - fb))
    np.add.at(part, (row, fa), -weight * (a - fa))
    rows += (np.cumsum(diff, axis=1) + part)[:, :w].astype(np.float32)


def apply_polygon(
    mask: np.ndarray,
    points: Sequence[Sequence[float]],
    op: Op | str = Op.ADD,
    *,
    rule: str = "nonzero",
    antialias: bool = True,
    value: float = 1.0,
) -> np.ndarray:
    return combine(
        mask, polygon_mask(mask.shape, points, rule=rule, antialias=antialias, value=value), op
    )


def flood_fill(
    mask: np.ndarray, x: int, y: int, value: float = 1.0, tolerance: float = 0.0
) -> np.ndarray:
    """A new mask where the 4-connected area around ``(x, y)`` whose values lie within
    ``tolerance`` of the seed's is set to ``value``. Walks runs of pixels, not single pixels."""
    m = _checked(mask)
    out = m.copy()
    h, w = m.shape
    if not (0 <= y < h and 0 <= x < w):
        return out
    similar = np.abs(m - m[y, x]) <= tolerance + 1e-7
    fill_value = np.float32(min(max(value, 0.0), 1.0))
    runs: dict[int, list[tuple[int, int]]] = {}

    def row_runs(r: int) -> list[tuple[int, int]]:
        if r not in runs:
            edges = np.flatnonzero(np.diff(np.concatenate(([0], similar[r].view(np.int8), [0]))))
            runs[r] = list(zip(edges[0::2].tolist(), edges[1::2].tolist()))
        return runs[r]

    start = next(run for run in row_runs(y) if run[0] <= x < run[1])
    seen, todo = {(y, start)}, [(y, start)]
    while todo:
        r, (a, b) = todo.pop()
        out[r, a:b] = fill_value
        for nr in (r - 1, r + 1):
            if 0 <= nr < h:
                for run in row_runs(nr):
                    if run[0] < b and run[1] > a and (nr, run) not in seen:
                        seen.add((nr, run))
                        todo.append((nr, run))
    return out


# -- feathering and compositing ------------------------------------------------------------


def gaussian_kernel(radius: float) -> np.ndarray:
    """A normalised 1-D Gaussian reaching exactly ``radius`` pixels (sigma = radius / 3)."""
    r = math.ceil(radius)
    t = np.arange(-r, r + 1, dtype=np.float64)
    sigma = max(radius / 3.0, 1e-3)  # a vanishing radius is a delta, not an overflow
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur_axis(a: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    r = (k.size - 1) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    out = np.zeros_like(a)
    for i, weight in enumerate(k):  # taps, not FFT: zeros stay exactly zero
        out += weight * (p[i : i + n] if axis == 0 else p[:, i : i + n])
    return out


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """A Gaussian-blurred copy of ``mask`` (separable, edge-replicated, sigma = radius / 3).

    The kernel is cut at ``ceil(radius)`` taps, so the blur's reach is a square: a pixel more
    than ``ceil(radius)`` rows *or* columns away from every non-zero pixel stays exactly 0, and
    :func:`composite` leaves it exactly as it was. (Diagonally, that square reaches up to
    ``radius * sqrt(2)`` in Euclidean distance.) Only the mask's bounding box plus the radius
    is computed, so a small mask on a big image is cheap."""
    m = _checked(mask)
    if radius <= 0:
        return m.copy()
    box = support_rect(m)
    out = np.zeros_like(m)
    if box is None:
        return out
    r = math.ceil(radius)
    big = clip_rect(box.y0 - r, box.y1 + r, box.x0 - r, box.x1 + r, m.shape)
    assert big is not None
    k = gaussian_kernel(radius)
    out[big.slices] = np.clip(_blur_axis(_blur_axis(m[big.slices], k, 0), k, 1), 0.0, 1.0)
    return out


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Dilate (``px`` > 0) or erode (``px`` < 0) by ``px`` pixels, alternating square and cross
    steps so the result is an octagon, close to a disk."""
    m = _checked(mask).copy()
    pick = np.maximum if px > 0 else np.minimum
    for step in range(abs(int(px))):
        p = np.pad(m, 1, mode="edge")
        res = pick(m, pick(pick(p[:-2, 1:-1], p[2:, 1:-1]), pick(p[1:-1, :-2], p[1:-1, 2:])))
        if step % 2 == 0:  # the square step adds the diagonals
            res = pick(res, pick(pick(p[:-2, :-2], p[:-2, 2:]), pick(p[2:, :-2], p[2:, 2:])))
        m = res
    return m


def composite(original: np.ndarray, result: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``original * (1 - m) + result * m`` as uint8 ``H x W x 3``. Where ``m == 0`` the pixels
    are exactly the original's and where ``m == 1`` exactly the result's, so nothing outside the
    (feathered) mask shifts colour."""
    if original.shape != result.shape or original.shape[:2] != mask.shape:
        raise ValueError(f"shapes differ: {original.shape}, {result.shape}, mask {mask.shape}")
    out = np.array(original, dtype=np.uint8)  # a copy: outside the mask's box, that is all
    m_all = np.nan_to_num(np.clip(mask, 0.0, 1.0).astype(np.float32))
    box = support_rect(m_all)
    if box is None:
        return out
    m = m_all[box.slices][..., None]
    orig, res = out[box.slices], np.asarray(result, dtype=np.uint8)[box.slices]
    # The lerp form is exact at both ends (small integers are exact in float32), and the
    # np.where makes "untouched where m == 0" hold whatever the arithmetic does.
    base = orig.astype(np.float32)
    blend = np.rint(base + (res.astype(np.float32) - base) * m)
    out[box.slices] = np.where(m == 0.0, orig, np.clip(blend, 0, 255).astype(np.uint8))
    return out
