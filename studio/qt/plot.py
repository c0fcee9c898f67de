"""Live metric plots: losses on top, diagnostics (diversity, D's outputs) below.

Points are appended to growing numpy buffers and the curves are redrawn from a timer at most
~30 times a second, and only when something changed: feeding a plot on every message floods
the event loop (pyqtgraph issues 1398, 3332). Clicking a legend entry hides or shows its curve.

The view ranges are kept here rather than by pyqtgraph's auto-range: that one refits on every
new point, which rebuilds the axes and paints each plot twice (about 15 ms a redraw against 3
measured offscreen, enough to stall the window). Ours changes only when the data leaves the
view. Zooming or panning with the mouse hands the view to the user; the "A" button hands it
back.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QSplitter, QVBoxLayout, QWidget

REDRAW_MS = 33
STAGGER_MS = 8  # the second plot repaints this much later, in its own event-loop turn
# Fixed colours for the names we know, so a loss keeps its colour across runs and families.
KNOWN_COLOURS: dict[str, str] = {
    "loss_d": "#e8704a",
    "loss_g": "#4aa3e8",
    "loss": "#4aa3e8",
    "recon": "#5cc97a",
    "kl": "#d9b84a",
    "nll": "#b77fe0",
    "bpd": "#b77fe0",
    "r1": "#a0a0a0",
    "diversity": "#5cc97a",
    "d_real": "#e8c14a",
    "d_fake": "#c77fe0",
    "grad_norm_d": "#e89a8a",
    "grad_norm_g": "#8ac4e8",
}
PALETTE = ("#4aa3e8", "#e8704a", "#5cc97a", "#d9b84a", "#b77fe0", "#4ad9d0", "#e87ab4", "#c0c0c0")
# The lower plot: values that are not losses, each on a scale of its own. Those whose scale
# would flatten the others (gradient norms, per-dimension KL, codebook counts) start hidden;
# a click on the legend shows them. Any other name is taken for a loss.
DIAGNOSTICS = frozenset({"diversity", "d_real", "d_fake", "usage"})
HIDDEN_AT_START = ("grad_norm", "kl_dim_", "perplexity", "restarts", "logdet")
NON_METRICS = frozenset({"step", "time"})


def colour_for(name: str) -> str:
    """The curve colour of a metric: fixed for known names, hashed (stable) for the rest."""
    return KNOWN_COLOURS.get(name) or PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def is_diagnostic(name: str) -> bool:
    return name in DIAGNOSTICS or name.startswith(HIDDEN_AT_START)


def hidden_at_start(name: str) -> bool:
    return name.startswith(HIDDEN_AT_START)


class _Series:
    """A growing (step, value) buffer: amortised O(1) append, no per-point Python objects."""

    def __init__(self, capacity: int = 1024) -> None:
        self.x = np.empty(capacity, dtype=np.float64)
        self.y = np.empty(capacity, dtype=np.float64)
        self.n = 0
        self.lo, self.hi = math.inf, -math.inf  # finite y bounds, kept up to date

    def append(self, x: float, y: float) -> None:
        if self.n == len(self.x):
            self.x = np.resize(self.x, 2 * len(self.x))
            self.y = np.resize(self.y, 2 * len(self.y))
        self.x[self.n] = x
        self.y[self.n] = y
        self.n += 1
        if math.isfinite(y):
            self.lo, self.hi = min(self.lo, y), max(self.hi, y)

    def truncate_after(self, step: float) -> None:
        keep = int(np.searchsorted(self.x[: self.n], step, side="right"))
        # Steps are appended in order, except right after a resume; fall back to a scan.
        if keep < self.n and np.any(self.x[keep : self.n] <= step):
            mask = self.x[: self.n] <= step
            kept = int(mask.sum())
            self.x[:kept], self.y[:kept] = self.x[: self.n][mask], self.y[: self.n][mask]
            keep = kept
        self.n = keep
        finite = self.y[:keep][np.isfinite(self.y[:keep])]
        self.lo = float(finite.min()) if finite.size else math.inf
        self.hi = float(finite.max()) if finite.size else -math.inf

    def bounds(self) -> tuple[float, float, float, float] | None:
        """``(x_min, x_max, y_min, y_max)`` of the finite points, or None."""
        if self.n == 0 or self.lo > self.hi:
            return None
        return float(self.x[: self.n].min()), float(self.x[: self.n].max()), self.lo, self.hi


class _ViewKeeper:
    """Sets one plot's view range, and only when the data leaves it (see the module doc)."""

    Y_PAD = 0.15  # headroom above and below, so a slowly drifting loss rarely moves the view

    def __init__(self, widget: pg.PlotWidget) -> None:
        item = widget.getPlotItem()
        self.vb = item.getViewBox()
        self.vb.disableAutoRange()
        self.active = True
        self.total: float | None = None
        self._x: tuple[float, float] | None = None
        self._y: tuple[float, float] | None = None
        self.vb.sigRangeChangedManually.connect(self._on_manual)
        item.autoBtn.clicked.connect(self._on_auto_button)

    def reset(self) -> None:
        self._x = self._y = None

    def fit(self, bounds: tuple[float, float, float, float] | None) -> None:
        if not self.active or bounds is None:
            return
        x_lo, x_hi, y_lo, y_hi = bounds
        if self._x is None or x_hi > self._x[1] or x_lo < self._x[0]:
            # Double when the data reaches the edge (rarely: log-many times),
            # capped at the run's length when it is known.
            right = max(x_hi * 2.0, x_hi + 10.0)
            if self.total:
                right = max(min(right, self.total), x_hi)
            want_x = (min(0.0, x_lo), right)
        else:
            want_x = self._x
        if want_x != self._x:
            self._x = want_x
            self.vb.setXRange(*want_x, padding=0.02)
        span = y_hi - y_lo or abs(y_hi) or 1.0
        cur = self._y
        if cur is None or y_lo < cur[0] or y_hi > cur[1] or cur[1] - cur[0] > 4 * span:
            self._y = (y_lo - self.Y_PAD * span, y_hi + self.Y_PAD * span)
            self.vb.setYRange(*self._y, padding=0)

    def _on_manual(self, *_args: Any) -> None:
        self.active = False

    def _on_auto_button(self, *_args: Any) -> None:
        # pyqtgraph has just switched its own auto-range on; take the view back instead.
        self.vb.disableAutoRange()
        self.active = True
        self.reset()


class MetricsPlot(QWidget):
    """Two stacked plots fed with ``(step, {name: value})`` points."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._series: dict[str, _Series] = {}
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._dirty: set[str] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_redraw)

        self.loss_plot = self._make_plot("Loss")
        self.diag_plot = self._make_plot("Diagnostics")
        self._views = {id(p): _ViewKeeper(p) for p in (self.loss_plot, self.diag_plot)}
        self._next_plot = self.loss_plot
        for plot in (self.loss_plot, self.diag_plot):
            legend = plot.getPlotItem().legend
            legend.sigSampleClicked.connect(lambda *_a, p=plot: self._fit(p))
            legend.setVisible(False)  # an empty legend is an odd little box
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.loss_plot)
        splitter.addWidget(self.diag_plot)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    @staticmethod
    def _make_plot(title: str) -> pg.PlotWidget:
        widget = pg.PlotWidget()
        widget.setMinimumHeight(90)
        item = widget.getPlotItem()
        item.setTitle(title, size="9pt")
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        item.showGrid(x=True, y=True, alpha=0.15)
        item.setLabel("bottom", "step")
        # A translucent box, so the legend stays readable where it covers a curve.
        item.addLegend(
            offset=(-8, 8),
            labelTextSize="8pt",
            verSpacing=-6,
            brush=pg.mkBrush(20, 22, 26, 210),
            pen=pg.mkPen(60, 64, 72),
        )
        return widget

    # -- feeding ---------------------------------------------------------------------------
    def add_points(self, points: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Append points; the curves redraw on the next timer tick."""
        for step, metrics in points:
            for name, value in metrics.items():
                if name in NON_METRICS:
                    continue
                try:
                    y = float(value)
                except (TypeError, ValueError):
                    continue
                series = self._series.get(name)
                if series is None:
                    series = self._series[name] = _Series()
                    self._add_curve(name)
                series.append(float(step), y)
                self._dirty.add(name)
        if self._dirty and not self._timer.isActive():
            self._timer.start(REDRAW_MS)

    def prepare(self, names: Iterable[str]) -> None:
        """Create the curves (and legend entries) for ``names`` before their first points.

        Building curves and legends costs tens of milliseconds; done when the user presses
        Start, it is not felt, whereas in the middle of training it is a visible hitch.
        """
        for name in names:
            if name not in self._series and name not in NON_METRICS:
                self._series[name] = _Series()
                self._add_curve(name)

    def load_history(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace the plot with a run's stored ``metrics.jsonl`` records."""
        self.clear()
        self.add_points((int(r.get("step", 0)), r) for r in records if isinstance(r, Mapping))

    def set_step_range(self, total: int | None) -> None:
        """The run's length: the step axis grows with the data but never past ``total``."""
        for view in self._views.values():
            view.total = float(total) if total else None
            view.reset()
        for plot in (self.loss_plot, self.diag_plot):
            self._fit(plot)

    def truncate_after(self, step: int) -> None:
        """Drop points past ``step`` (a resumed run re-trains from its last checkpoint)."""
        for name, series in self._series.items():
            before = series.n
            series.truncate_after(step)
            if series.n != before:
                self._dirty.add(name)
        if self._dirty and not self._timer.isActive():
            self._timer.start(REDRAW_MS)

    def clear(self) -> None:
        for name, curve in self._curves.items():
            item = self._plot_of(name).getPlotItem()
            item.removeItem(curve)  # also takes it out of the legend
            item.legend.setVisible(False)
        self._series.clear()
        self._curves.clear()
        self._dirty.clear()
        for view in self._views.values():
            view.reset()

    # -- reading (tests, status) -------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._series)

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the steps and values held for ``name`` (empty if unknown)."""
        s = self._series.get(name)
        if s is None:
            return np.empty(0), np.empty(0)
        return s.x[: s.n].copy(), s.y[: s.n].copy()

    def point_count(self) -> int:
        return sum(s.n for s in self._series.values())

    def last_step(self) -> int | None:
        steps = [s.x[s.n - 1] for s in self._series.values() if s.n]
        return int(max(steps)) if steps else None

    def is_curve_visible(self, name: str) -> bool:
        curve = self._curves.get(name)
        return curve is not None and curve.isVisible()

    # -- drawing ---------------------------------------------------------------------------
    def _add_curve(self, name: str) -> None:
        item = self._plot_of(name).getPlotItem()
        item.legend.setVisible(True)
        curve = item.plot(name=name, pen=pg.mkPen(colour_for(name), width=1))
        if hidden_at_start(name):
            curve.setVisible(False)
        self._curves[name] = curve

    def _plot_of(self, name: str) -> pg.PlotWidget:
        return self.diag_plot if is_diagnostic(name) else self.loss_plot

    def _fit(self, plot: pg.PlotWidget) -> None:
        """Fit ``plot``'s view to its visible curves (if the data left the view)."""
        bounds = [
            b
            for name, series in self._series.items()
            if self._plot_of(name) is plot
            and self._curves[name].isVisible()
            and (b := series.bounds()) is not None
        ]
        if bounds:
            merged = (
                min(b[0] for b in bounds),
                max(b[1] for b in bounds),
                min(b[2] for b in bounds),
                max(b[3] for b in bounds),
            )
            self._views[id(plot)].fit(merged)

    def _on_redraw(self) -> None:
        # One plot per turn of the event loop: each repaint costs a few milliseconds (more
        # when an axis changes), and both in one turn add up to a stall the user can feel.
        by_plot: dict[int, list[str]] = {}
        for name in self._dirty:
            by_plot.setdefault(id(self._plot_of(name)), []).append(name)
        if not by_plot:
            return
        plot = (
            self._next_plot
            if id(self._next_plot) in by_plot
            else self._plot_of(next(iter(self._dirty)))
        )
        for name in by_plot[id(plot)]:
            self._dirty.discard(name)
            series, curve = self._series.get(name), self._curves.get(name)
            if series is None or curve is None:
                continue
            # Views, not copies: appends write past the end of every view handed out, and a
            # full buffer is reallocated, so a drawn curve never changes under pyqtgraph.
            curve.setData(series.x[: series.n], series.y[: series.n])
        self._fit(plot)
        self._next_plot = self.diag_plot if plot is self.loss_plot else self.loss_plot
        if self._dirty:
            self._timer.start(STAGGER_MS)
