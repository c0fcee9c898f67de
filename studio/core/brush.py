"""Brush maths on float32 masks in [0, 1] (``H x W``): brush settings (with stylus pressure),
the soft dab, and :class:`Stroke`, which lays dabs along a path. Pure numpy, so the canvas, the
tests and any engine can use it headless.

Pixel coordinates and rectangles are those of :mod:`studio.core.regions`. A :class:`Stroke`
paints in place (so a view can show it live) and hands back the changed patch for undo. The
shape tools, feathering and compositing live in :mod:`studio.core.masks`; they and the
rectangle helpers are re-exported here, so ``studio.core.brush`` remains the one import for
mask editing.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from studio.core.masks import (
    Op,
    apply_polygon,
    apply_rect,
    clear,
    combine,
    composite,
    feather,
    fill,
    flood_fill,
    gaussian_kernel,
    grow,
    invert,
    polygon_mask,
    rect_mask,
)
from studio.core.regions import MaskPatch, Rect, changed_rect, clip_rect, support_rect

__all__ = [
    "BrushMode",
    "BrushSettings",
    "MaskPatch",
    "Op",
    "Rect",
    "Stroke",
    "StrokePoint",
    "apply_polygon",
    "apply_rect",
    "changed_rect",
    "clear",
    "clip_rect",
    "combine",
    "composite",
    "dab_profile",
    "feather",
    "fill",
    "flood_fill",
    "gaussian_kernel",
    "grow",
    "invert",
    "polygon_mask",
    "rect_mask",
    "support_rect",
]

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
