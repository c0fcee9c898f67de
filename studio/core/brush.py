"""Brush maths on float32 masks in [0, 1] (``H x W``): dabs, strokes, shape tools, feathering
and compositing. Pure numpy, so the canvas, the tests and any engine can use it headless.

Coordinates are image pixels with pixel ``(row i, column j)`` covering ``[j, j+1) x [i, i+1)``;
its centre is ``(j + 0.5, i + 0.5)``. Rectangles are :class:`Rect` ``(y0, y1, x0, x1)``,
half-open. Shape tools return a new mask and never modify their input; a :class:`Stroke` paints
in place (so a view can show it live) and hands back the changed patch for undo.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
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


# -- brush settings and the dab ------------------------------------------------------------


class BrushMode(enum.Enum):
    PAINT = "paint"
    ERASE = "erase"


@dataclass(frozen=True)
class BrushSettings:
    """A brush. ``size`` is the diameter in pixels; ``hardness`` 1 is a hard (anti-aliased)
    edge, lower values fade smoothly from a core of ``radius * hardness`` to the rim;
    ``spacing`` is the distance between dabs as a fraction of the size. With ``pressure_size``
    / ``pressure_opacity``, the stylus pressure (0..1) scales the size / opacity."""

    size: float = 32.0
    hardness: float = 0.8
    opacity: float = 1.0
    spacing: float = 0.15
    pressure_size: bool = True
    pressure_opacity: bool = False

    def __post_init__(self) -> None:
        checks = {
            "size": 0.0 < self.size <= 10_000.0,
            "hardness": 0.0 <= self.hardness <= 1.0,
            "opacity": 0.0 <= self.opacity <= 1.0,
            "spacing": 0.01 <= self.spacing <= 10.0,
        }
        for name, ok in checks.items():
            if not ok:  # NaN fails every comparison, so it lands here too
                raise ValueError(f"brush {name} out of range: {getattr(self, name)!r}")

    def dab_size(self, pressure: float) -> float:
        """The diameter of a dab at ``pressure``; never below one pixel so a light touch shows."""
        p = min(max(pressure, 0.0), 1.0) if self.pressure_size else 1.0
        return max(self.size * p, 1.0)

    def dab_opacity(self, pressure: float) -> float:
        p = min(max(pressure, 0.0), 1.0) if self.pressure_opacity else 1.0
        return self.opacity * p


def _falloff(dist: np.ndarray, radius: float, hardness: float) -> np.ndarray:
    """1 inside ``radius * hardness``, smoothstep down to 0 at ``radius``. The fade is never
    narrower than one pixel, centred on the rim, which anti-aliases a hard brush."""
    inner, outer = radius * hardness, radius
    if outer - inner < 1.0:
        mid = 0.5 * (inner + outer)
        inner, outer = mid - 0.5, mid + 0.5
    t = np.clip((dist - inner) / (outer - inner), 0.0, 1.0)
    return (1.0 - t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _outer_radius(radius: float, hardness: float) -> float:
    return max(radius, radius * (1.0 + hardness) / 2.0 + 0.5)


def dab_profile(radius: float, hardness: float) -> np.ndarray:
    """One dab centred on the middle pixel of a ``(2r+1) x (2r+1)`` kernel, ``r = ceil(radius)``."""
    if not radius > 0:
        raise ValueError(f"radius must be positive, not {radius!r}")
    r = math.ceil(radius)
    offsets = np.arange(-r, r + 1, dtype=np.float32)
    dist = np.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2)
    return _falloff(dist, float(radius), float(hardness))


# -- strokes ----------------------------------------------------------------------------


class StrokePoint(NamedTuple):
    x: float
    y: float
    pressure: float = 1.0


def _as_point(point: Sequence[float]) -> StrokePoint:
    x, y = float(point[0]), float(point[1])
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"a stroke point must be finite, not {point!r}")
    pressure = float(point[2]) if len(point) > 2 else 1.0
    # A non-finite pressure must not poison the dab maths; count it as a firm touch.
    return StrokePoint(x, y, pressure if math.isfinite(pressure) else 1.0)


class Stroke:
    """One brush stroke painted live into ``mask`` (modified in place).

    Within a stroke, coverage is the *maximum* of its dabs (a per-stroke buffer), so dabs that
    overlap never build up past the stroke's opacity; the mask becomes
    ``before + (1 - before) * cover`` (paint) or ``before * (1 - cover)`` (erase). Dabs are laid
    along each segment at ``spacing * size``, so a fast mouse leaves no gaps. Only each dab's
    bounding box is touched, and the mask as it was is kept only over the stroke's bounding box,
    which becomes the undo patch. Nothing else may write to ``mask`` until :meth:`end`.
    """

    def __init__(
        self, mask: np.ndarray, settings: BrushSettings, mode: BrushMode = BrushMode.PAINT
    ) -> None:
        if mask.ndim != 2 or mask.dtype != np.float32 or not mask.flags.writeable:
            raise ValueError("a stroke paints into a writable H x W float32 mask")
        self.mask, self.settings, self.mode = mask, settings, BrushMode(mode)
        self._box: Rect | None = None  # where _before and _cover are kept (with slack)
        self._before = np.empty((0, 0), np.float32)
        self._cover = np.empty((0, 0), np.float32)
        self.dirty: Rect | None = None  # union of the dabs actually painted
        self._last: StrokePoint | None = None
        self._to_next = 0.0  # path distance left before the next dab
        self._ended = False

    def begin(self, point: Sequence[float]) -> Rect | None:
        """Start at ``point`` ``(x, y[, pressure])``; paints one dab, returns its rect."""
        if self._last is not None:
            raise RuntimeError("the stroke has already begun")
        p = _as_point(point)
        self._last = p
        self._to_next = self._step(p.pressure)
        return self._dab(p)

    def add(self, point: Sequence[float]) -> Rect | None:
        """Extend the stroke to ``point``; returns the rect this segment changed, if any."""
        if self._last is None or self._ended:
            raise RuntimeError("add() needs a stroke that has begun and not ended")
        p0, p1 = self._last, _as_point(point)
        self._last = p1
        length = math.hypot(p1.x - p0.x, p1.y - p0.y)
        changed: Rect | None = None
        d = self._to_next
        while d <= length:
            t = d / length if length > 0 else 1.0
            pressure = p0.pressure + t * (p1.pressure - p0.pressure)
            x, y = p0.x + t * (p1.x - p0.x), p0.y + t * (p1.y - p0.y)
            r = self._dab(StrokePoint(x, y, pressure))
            changed = r.union(changed) if r is not None else changed
            d += self._step(pressure)
        self._to_next = d - length
        return changed

    def end(self) -> MaskPatch | None:
        """Finish; returns the changed patch (for undo), or ``None`` if nothing was painted."""
        self._ended = True
        if self.dirty is None:
            return None
        return MaskPatch(
            self.dirty, self.before_patch(self.dirty), self.mask[self.dirty.slices].copy()
        )

    def cancel(self) -> None:
        """Put the mask back as it was before the stroke."""
        if self.dirty is not None:
            self.mask[self.dirty.slices] = self.before_patch(self.dirty)
        self._ended = True

    def before_patch(self, rect: Rect) -> np.ndarray:
        """The mask under ``rect`` (inside the stroke's box) as it was before the stroke."""
        assert self._box is not None and self._box.contains(rect)
        y, x = rect.y0 - self._box.y0, rect.x0 - self._box.x0
        return self._before[y : y + rect.y1 - rect.y0, x : x + rect.x1 - rect.x0].copy()

    def _step(self, pressure: float) -> float:
        # Half a pixel at least, so a tiny brush cannot make the dab loop explode.
        return max(self.settings.spacing * self.settings.dab_size(pressure), 0.5)

    def _dab(self, p: StrokePoint) -> Rect | None:
        s = self.settings
        radius, opacity = s.dab_size(p.pressure) / 2.0, s.dab_opacity(p.pressure)
        reach = _outer_radius(radius, s.hardness)
        rect = clip_rect(p.y - reach, p.y + reach, p.x - reach, p.x + reach, self.mask.shape)
        if rect is None or opacity <= 0.0:
            return None
        self._ensure(rect)
        assert self._box is not None
        dy = np.arange(rect.y0, rect.y1, dtype=np.float32) + (0.5 - p.y)
        dx = np.arange(rect.x0, rect.x1, dtype=np.float32) + (0.5 - p.x)
        dab = _falloff(np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2), radius, s.hardness)
        if opacity < 1.0:
            dab *= np.float32(opacity)
        by, bx = rect.y0 - self._box.y0, rect.x0 - self._box.x0
        win = (slice(by, by + rect.y1 - rect.y0), slice(bx, bx + rect.x1 - rect.x0))
        cover, before = self._cover[win], self._before[win]
        np.maximum(cover, dab, out=cover)
        if self.mode is BrushMode.PAINT:
            self.mask[rect.slices] = before + (1.0 - before) * cover
        else:
            self.mask[rect.slices] = before * (1.0 - cover)
        self.dirty = rect.union(self.dirty)
        return rect

    def _ensure(self, rect: Rect) -> None:
        """Grow the kept box to hold ``rect``, with slack so a long stroke reallocates rarely."""
        if self._box is not None and self._box.contains(rect):
            return
        old = self._box
        want = rect.union(old)
        slack = max(32, (want.y1 - want.y0) // 2, (want.x1 - want.x0) // 2)
        box = clip_rect(
            want.y0 - slack, want.y1 + slack, want.x0 - slack, want.x1 + slack, self.mask.shape
        )
        assert box is not None
        # Outside the old box the mask is still untouched, so it *is* the "before" there.
        before = self.mask[box.slices].copy()
        cover = np.zeros_like(before)
        if old is not None:
            inner = (
                slice(old.y0 - box.y0, old.y1 - box.y0),
                slice(old.x0 - box.x0, old.x1 - box.x0),
            )
            before[inner], cover[inner] = self._before, self._cover
        self._box, self._before, self._cover = box, before, cover


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
