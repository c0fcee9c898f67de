"""The metrics plots' view ranges: they move rarely, and only when the data asks for it.

An axis whose range changes is rebuilt (tick positions, text, grid lines): ~3-5 ms each, and a
repaint where the axes change costs about twice one where they don't (docs/performance.md,
``benchmarks/plot_points.py --paint``). pyqtgraph's auto-range refits on every new point, so
the view is kept here instead:

- steps (x), live: from 0 to a round bound ahead of the last step (the next 1, 2 or 5 x 10^k
  above ``last * 1.1``, never past the run's length), so the axis holds still until the data
  reaches the bound: a few changes per decade of steps. A run loaded from disk (or
  :meth:`ViewKeeper.fit_exactly`) is fitted to its data exactly; once it grows, it is live.
- values (y), hysteresis: the view expands at once when data falls outside it (with headroom on
  the side that was crossed, so a trending curve does not push it every update), and shrinks only
  when the data fills less than ``Y_SHRINK`` of it (a hidden curve, a resume that dropped points).
- log axes (the plot's context menu): the same rules, in the view's log10 coordinates.

Zooming or panning hands the view to the user (pyqtgraph then has auto-range off and we leave
it alone); anything that turns pyqtgraph's auto-range back on (the "A" button, the menu's
auto-range, switching an axis to log) hands it back to us, and the plot refits at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyqtgraph as pg

X_LEAD = 1.1  # the step bound is the next round number above last step * X_LEAD
X_PAD = 0.02  # pyqtgraph's padding around the step range
Y_MARGIN = 0.1  # of the data's span, above and below, when the view is refitted
Y_LEAD = 0.25  # more headroom on a side the data has just crossed
Y_SHRINK = 0.6  # refit when the data fills less than this share of the view

Bounds = tuple[float, float, float, float]  # x_min, x_max, y_min, y_max


def nice_ceil(value: float) -> float:
    """The smallest number of the form 1, 2 or 5 x 10^k that is >= ``value`` (> 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for base in (1.0, 2.0, 5.0, 10.0):
        bound = base * 10.0**exp
        if bound >= value * (1 - 1e-12):
            return bound
    return 10.0 ** (exp + 1)  # (not reached)


def step_bound(last: float, total: float | None) -> float:
    """Where a live step axis ends: ahead of ``last``, capped at the run's length ``total``."""
    right = nice_ceil(max(last * X_LEAD, last + 1.0))
    if total:
        right = max(min(right, total), last)
    return right


def value_view(
    lo: float, hi: float, current: tuple[float, float] | None
) -> tuple[float, float] | None:
    """The new y range for data in ``[lo, hi]``, or None to keep ``current``."""
    span = hi - lo or abs(hi) or 1.0
    if current is not None:
        below, above = lo < current[0], hi > current[1]
        if not below and not above:
            if span >= Y_SHRINK * (current[1] - current[0]):
                return None  # inside and filling enough of the view: hold still
            return lo - Y_MARGIN * span, hi + Y_MARGIN * span
        return (
            lo - (Y_MARGIN + (Y_LEAD if below else 0.0)) * span,
            hi + (Y_MARGIN + (Y_LEAD if above else 0.0)) * span,
        )
    return lo - Y_MARGIN * span, hi + Y_MARGIN * span


class ViewKeeper:
    """Sets one plot's view range (see the module doc). ``refit`` is called when the view is
    handed back to us, so the plot can fit it at once (it knows the data)."""

    def __init__(self, widget: pg.PlotWidget, refit: Callable[[], None] | None = None) -> None:
        self.vb = widget.getPlotItem().getViewBox()
        self.vb.disableAutoRange()
        self.active = True  # False while the user's zoom or pan holds the view
        self.total: float | None = None  # the run's length, when known
        self.exact = False  # fit the steps to the data exactly (a run loaded from disk)
        self._refit = refit
        self._x: tuple[float, float] | None = None  # what we last set, in view coordinates
        self._y: tuple[float, float] | None = None
        self._log = self.log_mode()
        self.vb.sigRangeChangedManually.connect(self._on_manual)
        self.vb.sigStateChanged.connect(self._on_state_changed)

    def reset(self) -> None:
        """Forget the current ranges: the next fit starts afresh."""
        self._x = self._y = None

    def fit_exactly(self) -> None:
        self.exact = True
        self.reset()

    def log_mode(self) -> tuple[bool, bool]:
        x, y = self.vb.state.get("logMode", (False, False))
        return bool(x), bool(y)

    def fit(self, bounds: Bounds | None) -> None:
        """Move the view if the data in ``bounds`` (data coordinates; in log mode ``y_min`` is
        the smallest positive value, or <= 0 when there is none) asks for it."""
        if not self.active or bounds is None:
            return
        log_x, log_y = self.log_mode()
        if (log_x, log_y) != self._log:
            self._log = (log_x, log_y)
            self.reset()
        x_lo, x_hi, y_lo, y_hi = bounds
        want_x = self._step_range(x_lo, x_hi, log_x)
        if want_x is not None and want_x != self._x:
            self._x = want_x
            self.vb.setXRange(*want_x, padding=X_PAD)
        if log_y:
            if y_hi <= 0:
                return  # nothing positive to show on a log axis
            y_lo, y_hi = math.log10(y_lo if y_lo > 0 else y_hi), math.log10(y_hi)
        want_y = value_view(y_lo, y_hi, self._y)
        if want_y is not None:
            self._y = want_y
            self.vb.setYRange(*want_y, padding=0)

    def _step_range(self, lo: float, hi: float, log_x: bool) -> tuple[float, float] | None:
        cur = self._x
        if log_x:
            if hi <= 0:
                return None
            lo = max(lo, min(1.0, hi))  # steps start at 1; a step 0 has no place on a log axis
            cur = None if cur is None else (10.0 ** cur[0], 10.0 ** cur[1])
        else:
            lo = min(0.0, lo)
        if cur is not None and cur[0] <= lo and hi <= cur[1]:
            return self._x  # the data is inside: hold still
        if self.exact and cur is not None:
            self.exact = False  # a loaded run that grows is live from now on
        right = hi if self.exact else step_bound(hi, self.total)
        if right <= lo:
            right = lo + 1.0
        if log_x:
            return math.log10(lo), math.log10(right)
        return lo, right

    def _on_manual(self, *_args: Any) -> None:
        self.active = False

    def _on_state_changed(self, *_args: Any) -> None:
        # pyqtgraph turned its auto-range on (the "A" button, the menu, a switch to a log
        # axis): take the view back rather than let it refit on every point.
        if any(self.vb.state["autoRange"]):
            self.vb.disableAutoRange()
            self.active = True
            self.reset()
            if self._refit is not None:
                self._refit()
