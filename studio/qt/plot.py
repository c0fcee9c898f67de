"""Live metric plots: the losses together on top, every other metric in a plot below.

Every logged name gets a faint raw curve and a smoothed one (TensorBoard's debiased EMA; the
slider sets its weight). Points are appended to growing numpy buffers (``series.py``) and the
curves are redrawn from a timer at most ~30 times a second, and only when something changed:
feeding a plot on every message floods the event loop (pyqtgraph issues 1398, 3332). What is
handed to pyqtgraph is already clipped to the view and decimated to min/max buckets (at most a
few thousand points however long the run), so pyqtgraph's own clip-to-view and downsampling
are off. Clicking a legend entry hides or shows its curve.

The lower plot shows one group at a time (diagnostics, gradient norm, learning rate, images/s,
memory, ...), chosen in a selector: each has a scale of its own. Other runs can be overlaid
(dashed, one colour per run) on both plots.

The view ranges are kept here rather than by pyqtgraph's auto-range: that one refits on every
new point, which rebuilds the axes and paints each plot twice (about 15 ms a redraw against 3
measured offscreen, enough to stall the window). Ours changes only when the data leaves the
view. Zooming or panning with the mouse hands the view to the user; the "A" button hands it
back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.qt.plot_parts import (
    DIAGNOSTICS_GROUP,
    LOSSES,
    RUN_DASHES,
    RUN_PALETTE,
    ViewKeeper,
    colour_for,
    group_of,
    is_diagnostic,
)
from studio.qt.series import NON_METRICS, Series

__all__ = ["MetricsPlot", "colour_for", "group_of", "is_diagnostic"]

REDRAW_MS = 33
STAGGER_MS = 8  # the second plot repaints this much later, in its own event-loop turn
SMOOTHING_DEBOUNCE_MS = 120  # a slider drag recomputes the smoothing once it pauses
BUCKETS = 1500  # at most 2 points (min and max) per bucket are drawn per curve ...
MIN_BUCKETS = 256  # ... and about one bucket per pixel of the plot's width
DEFAULT_SMOOTHING = 0.6
RAW_ALPHA = 70
# A repaint's cost is mostly stroking the curves and, when an axis changes, its grid lines
# (benchmarks/plot_points.py --paint; docs/performance.md). The grid keeps two tick levels:
# pyqtgraph's third adds ~40 near-invisible lines (alpha 5-12) per axis, most of an axis's
# redraw. The benchmark sets these constants back to compare.
GRID_TICK_LEVELS = 1  # pyqtgraph's maxTickLevel: 0 major, 1 minor, 2 the faint third level
# pyqtgraph's own clip-to-view and peak downsampling redo, on every setData and view change,
# what _draw has already done (the points handed over are clipped and at most ~2 per pixel).
PYQTGRAPH_DECIMATION = False


@dataclass
class _Curve:
    name: str
    run: str | None  # None: the run being shown; else the label of an overlaid run
    group: str
    series: Series
    smooth: pg.PlotDataItem  # named: the legend entry
    raw: pg.PlotDataItem | None  # faint; overlays have none
    attached: bool = False  # its items are in a plot


class MetricsPlot(QWidget):
    """Losses on top, one selectable group below, fed with ``(step, {name: value})`` points.

    ``overlay_requested`` fires when the user presses "Overlay runs…" (the run view answers).
    """

    overlay_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._curves: dict[tuple[str, str | None], _Curve] = {}
        self._dirty: set[tuple[str, str | None]] = set()
        self._groups: list[str] = []  # lower-plot groups in order of appearance
        self._group = ""  # the one shown below
        self._group_chosen = False  # the user picked it: new groups do not take over
        self._runs: list[str] = []  # overlaid runs, in order (their colour index)
        self._weight = DEFAULT_SMOOTHING
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_redraw)
        self._smooth_timer = QTimer(self)
        self._smooth_timer.setSingleShot(True)
        self._smooth_timer.setInterval(SMOOTHING_DEBOUNCE_MS)
        self._smooth_timer.timeout.connect(self._on_smoothing_settled)
        self._pending: list[str] = []  # names prepare() will build, one per event-loop turn
        self._prepare_timer = QTimer(self)
        self._prepare_timer.setSingleShot(True)
        self._prepare_timer.setInterval(0)
        self._prepare_timer.timeout.connect(self._prepare_next)

        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(round(self._weight * 100))
        self.smoothing_slider.setMaximumWidth(140)
        self.smoothing_slider.setToolTip(
            "Weight of the moving average drawn over the faint raw values (0: raw only)"
        )
        self.smoothing_label = QLabel(f"{self._weight:.2f}")
        self.smoothing_label.setMinimumWidth(30)
        self.smoothing_slider.valueChanged.connect(self._on_smoothing_moved)
        self.group_box = QComboBox()
        self.group_box.setToolTip("What the lower plot shows")
        self.group_box.setMinimumContentsLength(12)
        self.group_box.currentTextChanged.connect(self._on_group_picked)
        self.overlay_button = QPushButton("Overlay runs…")
        self.overlay_button.setToolTip("Draw other runs' metrics of the same names for comparison")
        self.overlay_button.clicked.connect(self.overlay_requested)
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 0, 4, 0)
        bar.addWidget(QLabel("Smoothing"))
        bar.addWidget(self.smoothing_slider)
        bar.addWidget(self.smoothing_label)
        bar.addSpacing(12)
        bar.addWidget(QLabel("Below:"))
        bar.addWidget(self.group_box)
        bar.addStretch(1)
        bar.addWidget(self.overlay_button)

        self.loss_plot = self._make_plot("Loss")
        self.diag_plot = self._make_plot("")
        self._views = {id(p): ViewKeeper(p) for p in (self.loss_plot, self.diag_plot)}
        self._next_plot = self.loss_plot
        for plot in (self.loss_plot, self.diag_plot):
            item = plot.getPlotItem()
            item.legend.sigSampleClicked.connect(self._on_legend_clicked)
            item.legend.setVisible(False)  # an empty legend is an odd little box
            item.getViewBox().sigXRangeChanged.connect(lambda *_a, p=plot: self._on_view_moved(p))
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.loss_plot)
        splitter.addWidget(self.diag_plot)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(splitter, 1)

    @staticmethod
    def _make_plot(title: str) -> pg.PlotWidget:
        widget = pg.PlotWidget()
        widget.setMinimumHeight(90)
        item = widget.getPlotItem()
        item.setTitle(title, size="9pt")
        if PYQTGRAPH_DECIMATION:  # (PlotItem.addItem hands these to every curve)
            item.setClipToView(True)
            item.setDownsampling(auto=True, mode="peak")
        item.showGrid(x=True, y=True, alpha=0.15)
        item.setLabel("bottom", "step")
        for axis in item.axes.values():
            # Axes change rarely (the view range is ours), but painting their grid lines and
            # text is the dearest part of a repaint; a pixmap cache replays it, invalidated on
            # change.
            axis["item"].setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            axis["item"].setStyle(maxTickLevel=GRID_TICK_LEVELS)
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
                if name in NON_METRICS or isinstance(value, (str, bool)) or value is None:
                    continue
                try:
                    y = float(value)
                except (TypeError, ValueError):
                    continue
                self._curve(name, None).series.append(float(step), y)
                self._dirty.add((name, None))
        self._schedule()

    def add_columns(self, cols: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Append whole arrays per name (``series.columns`` of a batch of records)."""
        for name, (xs, ys) in cols.items():
            self._curve(name, None).series.extend(xs, ys)
            self._dirty.add((name, None))
        self._schedule()

    def prepare(self, names: Iterable[str]) -> None:
        """Create the curves (and legend entries) for ``names`` before their first points.

        Building a curve and its legend entry costs ~8 ms: all of them at once when the user
        presses Start stalled the window for 50-150 ms, and in the middle of training they
        would be a visible hitch. So they are built one per turn of the event loop, in order;
        a curve whose points arrive first is built on the spot.
        """
        for name in names:
            known = name in self._pending or (name, None) in self._curves
            if name not in NON_METRICS and not known:
                self._pending.append(name)
        if self._pending:
            self._prepare_timer.start()

    def _prepare_next(self) -> None:
        if self._pending:
            self._curve(self._pending[0], None)  # (takes it off the list)
        if self._pending:
            self._prepare_timer.start()

    def load_history(self, cols: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Replace the plot with a run's stored metrics, as ``series.columns`` made off the GUI
        thread (overlays stay)."""
        self.clear(overlays=False)
        self.add_columns(cols)

    def set_step_range(self, total: int | None) -> None:
        """The run's length: the step axis grows with the data but never past ``total``."""
        for view in self._views.values():
            view.total = float(total) if total else None
            view.reset()
        for plot in (self.loss_plot, self.diag_plot):
            self._fit(plot)

    def truncate_after(self, step: int) -> None:
        """Drop points past ``step`` (a resumed run re-trains from its last checkpoint)."""
        for key, curve in self._curves.items():
            if curve.run is None:
                before = curve.series.n
                curve.series.truncate_after(step)
                if curve.series.n != before:
                    self._dirty.add(key)
        self._schedule()

    def set_smoothing(self, weight: float) -> None:
        """EMA weight in [0, 0.99]; 0 draws the raw values only."""
        weight = min(max(float(weight), 0.0), 0.99)
        self.smoothing_slider.setValue(round(weight * 100))  # label follows
        self._apply_smoothing(weight)

    def smoothing(self) -> float:
        return self._weight

    def set_group(self, group: str) -> None:
        """Show ``group`` in the lower plot (one of :meth:`groups`)."""
        if group in self._groups:
            self.group_box.setCurrentText(group)  # -> _on_group_picked

    def clear(self, overlays: bool = True) -> None:
        self._pending.clear()
        for key in [k for k, c in self._curves.items() if overlays or c.run is None]:
            self._remove(key)
        if overlays:
            self._runs.clear()
        if not any(c.group == self._group for c in self._curves.values()):
            self._group_chosen = False
        self._sync_groups()
        for view in self._views.values():
            view.reset()

    # -- overlays --------------------------------------------------------------------------
    def add_overlay(self, run: str, cols: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> int:
        """Draw another run's metrics (dashed, in the run's colour); returns the curve count.

        Replaces what was drawn for ``run`` (a rewritten file: its whole history again); a run
        already overlaid keeps its place, so its colour stays.
        """
        place = self._runs.index(run) if run in self._runs else len(self._runs)
        self.remove_overlay(run)
        self._runs.insert(place, run)
        self.extend_overlay(run, cols)
        return len(cols)

    def extend_overlay(self, run: str, cols: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> int:
        """Append new points to an overlaid run's curves (a run that is still training); the
        curves redraw on the next timer tick. Returns the number of points appended."""
        if run not in self._runs:
            self._runs.append(run)
        count = 0
        for name, (xs, ys) in cols.items():
            self._curve(name, run).series.extend(xs, ys)
            self._dirty.add((name, run))
            count += len(xs)
        self._schedule()
        return count

    def remove_overlay(self, run: str) -> None:
        for key in [k for k in self._curves if k[1] == run]:
            self._remove(key)
        if run in self._runs:
            self._runs.remove(run)
        self._sync_groups()

    def overlay_runs(self) -> list[str]:
        return list(self._runs)

    # -- reading (tests, status) -------------------------------------------------------------
    def names(self) -> list[str]:
        """This run's curves, including those :meth:`prepare` has yet to build."""
        return [name for name, run in self._curves if run is None] + self._pending

    def groups(self) -> list[str]:
        return list(self._groups)

    def current_group(self) -> str:
        return self._group

    def series(self, name: str, run: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the steps and values held for ``name`` (empty if unknown)."""
        curve = self._curves.get((name, run))
        if curve is None:
            return np.empty(0), np.empty(0)
        s = curve.series
        return s.x[: s.n].copy(), s.y[: s.n].copy()

    def smoothed(self, name: str, run: str | None = None) -> np.ndarray:
        curve = self._curves.get((name, run))
        return np.empty(0) if curve is None else curve.series.smoothed(self._weight).copy()

    def displayed(self, name: str, run: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """What the curve item holds (decimated raw values; smoothed for overlays)."""
        curve = self._curves.get((name, run))
        if curve is None:
            return np.empty(0), np.empty(0)
        item = curve.raw if curve.raw is not None and self._weight > 0 else curve.smooth
        xs, ys = item.xData, item.yData
        return (np.empty(0), np.empty(0)) if xs is None else (np.asarray(xs), np.asarray(ys))

    def curve_items(self, name: str, run: str | None = None) -> list[pg.PlotDataItem]:
        curve = self._curves.get((name, run))
        return [] if curve is None else [i for i in (curve.smooth, curve.raw) if i is not None]

    def point_count(self) -> int:
        return sum(c.series.n for c in self._curves.values() if c.run is None)

    def last_step(self) -> int | None:
        steps = [
            c.series.x[c.series.n - 1]
            for c in self._curves.values()
            if c.run is None and c.series.n
        ]
        return int(max(steps)) if steps else None

    def is_curve_visible(self, name: str, run: str | None = None) -> bool:
        curve = self._curves.get((name, run))
        return curve is not None and curve.smooth.isVisible() and self._on_screen(curve)

    # -- curves ----------------------------------------------------------------------------
    def _curve(self, name: str, run: str | None) -> _Curve:
        curve = self._curves.get((name, run))
        if curve is not None:
            return curve
        group = group_of(name)
        if run is None:
            if name in self._pending:
                self._pending.remove(name)
            colour = QColor(colour_for(name))
            smooth = pg.PlotDataItem(name=name, pen=pg.mkPen(colour, width=1))
            faint = QColor(colour)
            faint.setAlpha(RAW_ALPHA)
            raw = pg.PlotDataItem(pen=pg.mkPen(faint, width=1))
        else:
            index = self._runs.index(run) if run in self._runs else 0
            siblings = sum(1 for c in self._curves.values() if c.run == run and c.group == group)
            pen = pg.mkPen(
                RUN_PALETTE[index % len(RUN_PALETTE)],
                width=1,
                style=RUN_DASHES[siblings % len(RUN_DASHES)],
            )
            smooth, raw = pg.PlotDataItem(name=f"{name} · {run}", pen=pen), None
        for item in (smooth, raw):
            if item is not None and PYQTGRAPH_DECIMATION:
                item.setClipToView(True)
                item.setDownsampling(auto=True, method="peak")
        curve = self._curves[(name, run)] = _Curve(name, run, group, Series(), smooth, raw)
        if group != LOSSES and group not in self._groups:
            self._groups.append(group)
            self._sync_groups()
        if self._on_screen(curve):
            self._attach(curve)
        return curve

    def _on_screen(self, curve: _Curve) -> bool:
        return curve.group == LOSSES or curve.group == self._group

    def _attach(self, curve: _Curve) -> None:
        if curve.attached:
            return
        curve.attached = True
        item = self._plot_of(curve).getPlotItem()
        item.legend.setVisible(True)
        if curve.raw is not None:
            item.addItem(curve.raw)  # first: the smoothed curve is drawn over it
            curve.raw.setVisible(self._weight > 0 and curve.smooth.isVisible())
        item.addItem(curve.smooth)
        self._dirty.add((curve.name, curve.run))

    def _detach(self, curve: _Curve) -> None:
        if not curve.attached:
            return
        curve.attached = False
        item = self._plot_of(curve).getPlotItem()
        for it in (curve.smooth, curve.raw):
            if it is not None:
                item.removeItem(it)  # also takes it out of the legend
        item.legend.setVisible(bool(item.listDataItems()))

    def _remove(self, key: tuple[str, str | None]) -> None:
        curve = self._curves.pop(key)
        self._dirty.discard(key)
        self._detach(curve)

    def _plot_of(self, curve: _Curve) -> pg.PlotWidget:
        return self.loss_plot if curve.group == LOSSES else self.diag_plot

    def _sync_groups(self) -> None:
        """Keep the selector's entries (and the shown group) in line with the curves."""
        present = {c.group for c in self._curves.values()}
        self._groups = [g for g in self._groups if g in present]
        if self._group not in self._groups or not self._group_chosen:
            wanted = DIAGNOSTICS_GROUP if DIAGNOSTICS_GROUP in self._groups else ""
            wanted = wanted or (self._groups[0] if self._groups else "")
        else:
            wanted = self._group
        self.group_box.blockSignals(True)
        self.group_box.clear()
        self.group_box.addItems(self._groups)
        self.group_box.setCurrentText(wanted)
        self.group_box.blockSignals(False)
        self.group_box.setEnabled(bool(self._groups))
        if wanted != self._group:
            self._show_group(wanted)

    def _show_group(self, group: str) -> None:
        for curve in self._curves.values():
            if curve.group == self._group and curve.group != LOSSES:
                self._detach(curve)
        self._group = group
        self.diag_plot.getPlotItem().setTitle(group, size="9pt")
        for curve in self._curves.values():
            if curve.group == group and group != LOSSES:
                self._attach(curve)
        self._views[id(self.diag_plot)].reset()
        self._schedule()

    # -- slots -----------------------------------------------------------------------------
    def _on_group_picked(self, group: str) -> None:
        if group and group != self._group:
            self._group_chosen = True
            self._show_group(group)

    def _on_smoothing_moved(self, value: int) -> None:
        self.smoothing_label.setText(f"{value / 100:.2f}")
        self._smooth_timer.start()

    def _on_smoothing_settled(self) -> None:
        self._apply_smoothing(self.smoothing_slider.value() / 100)

    def _apply_smoothing(self, weight: float) -> None:
        self._smooth_timer.stop()
        if weight == self._weight:
            return
        self._weight = weight
        for key, curve in self._curves.items():
            if curve.raw is not None:
                curve.raw.setVisible(weight > 0 and curve.smooth.isVisible())
            if self._on_screen(curve):
                self._dirty.add(key)
        self._schedule()

    def _on_legend_clicked(self, item: Any) -> None:
        for curve in self._curves.values():
            if curve.smooth is item:
                if curve.raw is not None:
                    curve.raw.setVisible(self._weight > 0 and item.isVisible())
                self._fit(self._plot_of(curve))
                return

    def _on_view_moved(self, plot: pg.PlotWidget) -> None:
        # Zooming in shows more detail: the decimation depends on the visible range.
        for key, curve in self._curves.items():
            if self._on_screen(curve) and self._plot_of(curve) is plot and curve.series.n:
                self._dirty.add(key)
        self._schedule()

    # -- drawing ---------------------------------------------------------------------------
    def _schedule(self) -> None:
        if self._dirty and not self._timer.isActive():
            self._timer.start(REDRAW_MS)

    def _fit(self, plot: pg.PlotWidget) -> None:
        """Fit ``plot``'s view to its visible curves (if the data left the view)."""
        bounds = [
            b
            for c in self._curves.values()
            if self._on_screen(c)
            and self._plot_of(c) is plot
            and c.smooth.isVisible()
            and (b := c.series.bounds()) is not None
        ]
        if bounds:
            merged = (
                min(b[0] for b in bounds),
                max(b[1] for b in bounds),
                min(b[2] for b in bounds),
                max(b[3] for b in bounds),
            )
            self._views[id(plot)].fit(merged)

    def _draw(self, curve: _Curve, x_range: tuple[float, float], buckets: int) -> None:
        series = curve.series
        i0, i1 = series.visible(*x_range)
        if curve.raw is None or self._weight <= 0:
            if curve.raw is None and self._weight > 0:
                _set_data(curve.smooth, series.smoothed_decimated(i0, i1, buckets, self._weight))
            else:
                _set_data(curve.smooth, series.decimated(i0, i1, buckets))
            return
        _set_data(curve.raw, series.decimated(i0, i1, buckets))
        _set_data(curve.smooth, series.smoothed_decimated(i0, i1, buckets, self._weight))

    def _on_redraw(self) -> None:
        # One plot per turn of the event loop: each repaint costs a few milliseconds (more
        # when an axis changes), and both in one turn add up to a stall the user can feel.
        stale = [
            k for k in self._dirty if k not in self._curves or not self._on_screen(self._curves[k])
        ]
        self._dirty.difference_update(stale)
        if not self._dirty:
            return
        by_plot: dict[int, list[_Curve]] = {}
        for key in self._dirty:
            curve = self._curves[key]
            by_plot.setdefault(id(self._plot_of(curve)), []).append(curve)
        plot = (
            self._next_plot
            if id(self._next_plot) in by_plot
            else self._plot_of(by_plot[next(iter(by_plot))][0])
        )
        self._fit(plot)  # first: what is drawn depends on the visible range
        vb = plot.getPlotItem().getViewBox()
        x_range = tuple(vb.viewRange()[0])
        buckets = int(min(BUCKETS, max(MIN_BUCKETS, vb.width())))
        for curve in by_plot[id(plot)]:
            self._dirty.discard((curve.name, curve.run))
            self._draw(curve, x_range, buckets)  # type: ignore[arg-type]
        self._next_plot = self.diag_plot if plot is self.loss_plot else self.loss_plot
        if self._dirty:
            self._timer.start(STAGGER_MS)


def _set_data(item: pg.PlotDataItem, xy: tuple[np.ndarray, np.ndarray]) -> None:
    """Hand a curve its points; pyqtgraph's checks for NaN are skipped when there are none
    (one check here instead of several in pyqtgraph's path building and bounds)."""
    x, y = xy
    item.setData(x, y, skipFiniteCheck=bool(np.isfinite(y).all()))
