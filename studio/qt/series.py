"""The numbers behind the live plots: growing buffers, EMA smoothing and peak decimation.

Pure numpy, no Qt, so it is cheap to test. A million logged points must stay smooth to draw:

- values live in growing float64 buffers (amortised O(1) appends, no per-point objects);
- smoothing is TensorBoard's debiased EMA, computed once per point as points arrive and in one
  vectorised pass when the weight changes (a blocked scan: no Python loop per point); it
  starts afresh after a gap in the steps and where a resumed run continues;
- what is drawn is at most a few thousand points: min/max ("peak") buckets over the visible
  range, read from a pyramid of per-block minima and maxima kept up to date as points arrive,
  so a redraw costs the same at a thousand points as at a million.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

NON_METRICS = frozenset({"step", "time"})


def metric_value(name: str, value: Any) -> float | None:
    """``value`` as a plotted number, or None for what is not a metric (step, time, text,
    flags, missing or unparsable values)."""
    if name in NON_METRICS or isinstance(value, (str, bool)) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# The smoothing restarts (a fresh debiased EMA) where a curve has a gap: a step interval more
# than this many times the one before it (the log interval), as where a run was resumed from
# an older checkpoint or lines are missing. Carried across a gap, the EMA starts the new
# stretch from values the model had long ago (36k against 60.6k raw after a Stop and Resume).
GAP_FACTOR = 4.0

PYRAMID_FACTOR = 16
PYRAMID_LEVELS = 4  # blocks of 16, 256, 4096 and 65536 points
# Min/max pairs go min-max, max-min, min-max, ...: the line from one bucket to the next then
# joins two maxima or two minima (a short step) instead of crossing the whole band from a
# maximum to the next minimum. The band looks the same (one vertical stroke per bucket, about
# a pixel wide) and stroking a noisy curve costs about half (docs/performance.md).
ALTERNATE_PEAKS = True


def ema(
    values: np.ndarray, weight: float, state: float = 0.0, count: int = 0
) -> tuple[np.ndarray, float, int]:
    """Debiased exponential moving average, continued from ``(state, count)``.

    ``s_k = w * s_(k-1) + (1 - w) * x_k`` from ``s_0 = 0``, shown as ``s_k / (1 - w**k)`` (the
    first point is then itself, as in TensorBoard). Non-finite values are skipped: NaN there.
    Returns the smoothed values, the raw state after the last finite value and the number of
    finite values seen, so the next chunk continues exactly where this one ended.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    xs = values if all_finite else values[finite]
    m = len(xs)
    if m == 0:
        return np.full(values.shape, np.nan), state, count
    w = float(weight)
    if w <= 0.0:
        raw, last = xs.copy(), float(xs[-1])
    else:
        raw = _ema_raw(xs, w, float(state))
        last = float(raw[-1])  # the state carries on undebiased
        # Debias: divide by 1 - w**k; past the first points w**k < 1e-17 changes nothing.
        head = min(m, max(0, int(40.0 / -math.log(w)) + 1 - count))
        if head:
            k = np.arange(count + 1, count + head + 1, dtype=np.float64)
            raw[:head] /= -np.expm1(k * math.log(w))  # 1 - w**k, exact near w = 1
    if all_finite:
        return raw, last, count + m
    out = np.full(values.shape, np.nan)
    out[finite] = raw
    return out, last, count + m


def _ema_raw(xs: np.ndarray, w: float, state: float) -> np.ndarray:
    """``s_k = w s_(k-1) + (1-w) x_k`` from ``state``, vectorised in blocks.

    Within a block of B points, ``s_t = w^(t+1) s_in + (1-w) w^t cumsum(x_i w^-i)``; B keeps
    ``w^-B`` below e^300 (no overflow), and the state is carried from block to block.
    """
    m = len(xs)
    block = max(1, min(1024, int(300.0 / -math.log(w))))
    nb = -(-m // block)
    grid = np.zeros(nb * block)
    grid[:m] = xs
    grid = grid.reshape(nb, block)
    t = np.arange(block, dtype=np.float64)
    grid *= w**-t
    np.cumsum(grid, axis=1, out=grid)
    grid *= (1.0 - w) * w**t  # now the block's own EMA from a zero state
    ends = grid[:, -1]
    w_block = w**block
    if w_block < 1e-17:  # a block forgets everything before it: only the previous end counts
        carries = np.concatenate(([state], ends[:-1]))
        carries[1:] += w_block * carries[:-1]
    else:  # then B = 1024: about a thousand iterations for a million points
        carries = np.empty(nb)
        s = state
        for b in range(nb):
            carries[b] = s
            s = w_block * s + ends[b]
    grid += carries[:, None] * w ** (t + 1)
    return grid.reshape(-1)[:m]


class PeakPyramid:
    """Per-block minima and maxima of a growing series, at several block sizes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.mins: list[np.ndarray] = [np.empty(0) for _ in range(PYRAMID_LEVELS)]
        self.maxs: list[np.ndarray] = [np.empty(0) for _ in range(PYRAMID_LEVELS)]
        self.counts = [0] * PYRAMID_LEVELS

    @staticmethod
    def size(level: int) -> int:
        return PYRAMID_FACTOR ** (level + 1)

    def update(self, y: np.ndarray, n: int) -> None:
        """Cover every complete block of ``y[:n]`` (only the new ones are computed)."""
        src_lo, src_hi, src_n = y, y, n
        for level in range(PYRAMID_LEVELS):
            done, want = self.counts[level], src_n // PYRAMID_FACTOR
            if want > done:
                a, b = done * PYRAMID_FACTOR, want * PYRAMID_FACTOR
                lo = np.fmin.reduce(src_lo[a:b].reshape(-1, PYRAMID_FACTOR), axis=1)
                hi = np.fmax.reduce(src_hi[a:b].reshape(-1, PYRAMID_FACTOR), axis=1)
                self.mins[level] = _put(self.mins[level], done, lo)
                self.maxs[level] = _put(self.maxs[level], done, hi)
                self.counts[level] = want
            src_lo, src_hi, src_n = self.mins[level], self.maxs[level], self.counts[level]
            if src_n < PYRAMID_FACTOR:
                break

    def level_for(self, per_bucket: int) -> int | None:
        """The coarsest level whose blocks still fit in one bucket (None: use the raw points)."""
        best = None
        for level in range(PYRAMID_LEVELS):
            if self.size(level) <= per_bucket and self.counts[level]:
                best = level
        return best


def _put(buf: np.ndarray, at: int, values: np.ndarray) -> np.ndarray:
    end = at + len(values)
    if end > len(buf):
        grown = np.empty(max(end, 2 * len(buf), 64))
        grown[:at] = buf[:at]
        buf = grown
    buf[at:end] = values
    return buf


class Series:
    """A growing (step, value) series with its smoothing and decimation caches."""

    def __init__(self, capacity: int = 1024) -> None:
        self.x = np.empty(capacity, dtype=np.float64)
        self.y = np.empty(capacity, dtype=np.float64)
        self.s = np.empty(capacity, dtype=np.float64)  # smoothed y, valid up to _s_n
        self.n = 0
        self.lo, self.hi = math.inf, -math.inf  # finite y bounds, kept up to date
        self.ordered = True  # steps ascending: the visible range can be found by bisection
        self.pyramid = PeakPyramid()
        self._weight = 0.0
        self._s_n, self._s_state, self._s_count = 0, 0.0, 0
        self.restarts: list[int] = []  # indices where the smoothing starts afresh (resumes)
        self._scale, self._scale_n = 1.0, 0  # scale() and the point count it was taken at

    # -- feeding ---------------------------------------------------------------------------
    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        if need > len(self.x):
            cap = max(need, 2 * len(self.x))
            self.x, self.y, self.s = (np.resize(a, cap) for a in (self.x, self.y, self.s))

    def append(self, x: float, y: float) -> None:
        if self.n == len(self.x):
            self._reserve(1)
        if self.n and x < self.x[self.n - 1]:
            self.ordered = False
        self.x[self.n] = x
        self.y[self.n] = y
        self.n += 1
        if math.isfinite(y):
            self.lo, self.hi = min(self.lo, y), max(self.hi, y)

    def extend(self, xs: np.ndarray, ys: np.ndarray) -> None:
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
        if not len(xs):
            return
        self._reserve(len(xs))
        start = self.x[self.n - 1] if self.n else -math.inf
        if xs[0] < start or np.any(np.diff(xs) < 0):
            self.ordered = False
        self.x[self.n : self.n + len(xs)] = xs
        self.y[self.n : self.n + len(ys)] = ys
        self.n += len(xs)
        finite = ys[np.isfinite(ys)]
        if finite.size:
            self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))

    def truncate_after(self, step: float) -> None:
        keep = int(np.searchsorted(self.x[: self.n], step, side="right")) if self.ordered else 0
        if not self.ordered or (keep < self.n and np.any(self.x[keep : self.n] <= step)):
            mask = self.x[: self.n] <= step
            kept = int(mask.sum())
            self.x[:kept], self.y[:kept] = self.x[: self.n][mask], self.y[: self.n][mask]
            keep = kept
        self.n = keep
        self.ordered = bool(np.all(np.diff(self.x[:keep]) >= 0))
        finite = self.y[:keep][np.isfinite(self.y[:keep])]
        self.lo = float(finite.min()) if finite.size else math.inf
        self.hi = float(finite.max()) if finite.size else -math.inf
        self.pyramid.reset()
        self._s_n = 0  # recomputed on the next read
        # The run goes on from here (a resume): the points that follow are smoothed afresh.
        self.restarts = [i for i in self.restarts if i < keep]
        if keep and (not self.restarts or self.restarts[-1] != keep):
            self.restarts.append(keep)

    # -- reading ---------------------------------------------------------------------------
    def bounds(self) -> tuple[float, float, float, float] | None:
        """``(x_min, x_max, y_min, y_max)`` of the finite points, or None."""
        if self.n == 0 or self.lo > self.hi:
            return None
        if self.ordered:
            return float(self.x[0]), float(self.x[self.n - 1]), self.lo, self.hi
        return float(self.x[: self.n].min()), float(self.x[: self.n].max()), self.lo, self.hi

    def smoothed(self, weight: float) -> np.ndarray:
        """The EMA of ``y[:n]`` at ``weight`` (a view; computed only for new points)."""
        if weight != self._weight:
            self._weight, self._s_n, self._s_state, self._s_count = weight, 0, 0.0, 0
        if self._s_n < self.n:
            lo, hi = self._s_n, self.n
            cuts = self.smoothing_restarts(lo, hi)
            state, count = self._s_state, self._s_count
            edges = sorted({lo, *cuts, hi})
            for a, b in zip(edges, edges[1:]):
                if a in cuts:
                    state, count = 0.0, 0  # a fresh EMA: its first point is the raw value
                self.s[a:b], state, count = ema(self.y[a:b], weight, state, count)
            self._s_state, self._s_count, self._s_n = state, count, hi
        return self.s[: self.n]

    def smoothing_restarts(self, lo: int, hi: int) -> list[int]:
        """The indices in ``[lo, hi)`` where the smoothing starts afresh: marked restarts
        (:meth:`truncate_after`) and gaps (an interval over ``GAP_FACTOR`` times the one
        before it)."""
        cuts = {i for i in self.restarts if lo <= i < hi}
        start = max(lo, 2)
        if hi > start:
            d = np.diff(self.x[start - 2 : hi])  # d[k] = x[start-1+k] - x[start-2+k]
            prev, cur = d[:-1], d[1:]
            cuts.update((np.nonzero((prev > 0) & (cur > GAP_FACTOR * prev))[0] + start).tolist())
        return sorted(cuts)

    def scale(self) -> float:
        """The curve's typical size: the median of its finite absolute values (1 when there
        are none or it is 0). The Normalise view divides by it. Recomputed when the number of
        points has doubled since (or shrunk), so it holds still as a run goes on."""
        if self._scale_n and self._scale_n <= self.n < 2 * self._scale_n:
            return self._scale
        ys = np.abs(self.y[: self.n])
        ys = ys[np.isfinite(ys)]
        median = float(np.median(ys)) if ys.size else 0.0
        self._scale = median if median > 0 else 1.0
        self._scale_n = self.n
        return self._scale

    def visible(self, x_lo: float, x_hi: float) -> tuple[int, int]:
        """Index range covering ``[x_lo, x_hi]`` plus one point either side (lines run off)."""
        if not self.ordered:
            return 0, self.n
        xs = self.x[: self.n]
        i0 = max(0, int(np.searchsorted(xs, x_lo, side="left")) - 1)
        i1 = min(self.n, int(np.searchsorted(xs, x_hi, side="right")) + 1)
        return i0, max(i0, i1)

    def decimated(self, i0: int, i1: int, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw points in ``[i0, i1)``, or min/max pairs of at most ~``budget`` buckets
        (in alternating order: min, max, max, min, ...)."""
        count = i1 - i0
        if count <= 2 * budget:
            return self.x[i0:i1], self.y[i0:i1]
        self.pyramid.update(self.y, self.n)
        per_bucket = count // budget
        level = self.pyramid.level_for(per_bucket)
        if level is None:
            lows, highs, size, blocks = self.y, self.y, 1, self.n
        else:
            lows, highs = self.pyramid.mins[level], self.pyramid.maxs[level]
            size, blocks = self.pyramid.size(level), self.pyramid.counts[level]
        group = max(1, -(-per_bucket // size))  # buckets of at least per_bucket points
        xs, lo_parts, hi_parts = [], [], []
        j0, j1 = i0 // size, min(-(-i1 // size), blocks)
        if j1 > j0:
            starts = np.arange(0, j1 - j0, group)
            lo_parts.append(np.fmin.reduceat(lows[j0:j1], starts))
            hi_parts.append(np.fmax.reduceat(highs[j0:j1], starts))
            xs.append(self.x[(j0 + starts) * size])
        tail = max(j1 * size, i0)
        if tail < i1:  # points past the last complete block: bucket the raw values
            starts = np.arange(0, i1 - tail, per_bucket)
            lo_parts.append(np.fmin.reduceat(self.y[tail:i1], starts))
            hi_parts.append(np.fmax.reduceat(self.y[tail:i1], starts))
            xs.append(self.x[tail + starts])
        bx = np.concatenate(xs)
        out_x = np.empty(2 * len(bx) + 1)
        out_y = np.empty(2 * len(bx) + 1)
        out_x[0:-1:2], out_x[1:-1:2] = bx, bx
        lows, highs = np.concatenate(lo_parts), np.concatenate(hi_parts)
        if ALTERNATE_PEAKS:  # (see the constant)
            lows[1::2], highs[1::2] = highs[1::2], lows[1::2].copy()
        out_y[0:-1:2], out_y[1:-1:2] = lows, highs
        out_x[-1], out_y[-1] = self.x[i1 - 1], self.y[i1 - 1]  # end on the newest point
        return out_x, out_y

    def smoothed_decimated(
        self, i0: int, i1: int, budget: int, weight: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every k-th smoothed point in ``[i0, i1)`` (a smooth curve needs no peaks)."""
        s = self.smoothed(weight)
        stride = max(1, (i1 - i0) // (2 * budget))
        if stride == 1:
            return self.x[i0:i1], s[i0:i1]
        idx = np.arange(i0, i1, stride)
        if idx[-1] != i1 - 1:
            idx = np.append(idx, i1 - 1)
        return self.x[idx], s[idx]


def columns(
    records: Iterable[Mapping[str, Any]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``metrics.jsonl`` records as ``{name: (steps, values)}`` arrays (non-numbers skipped).

    Done once per batch of records (a worker thread can do it), so the plot appends arrays
    instead of points.
    """
    xs: dict[str, list[float]] = {}
    ys: dict[str, list[float]] = {}
    for record in records:
        if not isinstance(record, Mapping):
            continue
        try:
            step = float(record.get("step", 0))
        except (TypeError, ValueError):
            continue
        for name, value in record.items():
            y = metric_value(name, value)
            if y is None:
                continue
            xs.setdefault(name, []).append(step)
            ys.setdefault(name, []).append(y)
    return {name: (np.asarray(xs[name]), np.asarray(ys[name])) for name in xs}
