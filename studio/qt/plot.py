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
(dashed, one colour per run) on both plots. *Log* puts both value axes on a log scale;
*Normalise* draws each curve over its median, and a plot whose curves differ over 100x in size
says so in its title.

The view ranges are kept by ``plot_view.ViewKeeper`` rather than by pyqtgraph's auto-range:
that one refits on every new point, which rebuilds the axes (an update where an axis changes
costs about twice one where none does). Ours moves only when the data reaches a round bound
ahead of it (steps) or leaves it (values), and fits a run loaded from disk exactly. Zooming or
panning with the mouse hands the view to the user; the "A" button hands it back.

Repaints are kept to one plot per turn of the event loop (a full plot repaint costs 5-15 ms of
GUI CPU): the redraw timer draws one plot per tick, ``fit_to_data``/``set_step_range`` move the
lower view a turn after the top one, and a plot being shown (a workspace switch) paints its
background only until the rest of the page has painted, then the two plots paint a turn apart.
A new run (``clear`` with ``keep``, as Start does) takes over the last run's curves of the same
names, emptied, with their legend entries and the lower plot's group and title, rather than
rebuilding them.

This module is the widget: which plot shows which curve, the group selection and the redraw
timer. The curves themselves (points, pens, drawing, the overlaid runs' order) are in
``plot_curves.py``, the bar above the plots and the plot setup in ``plot_controls.py``, and
colours and groups in ``plot_parts.py``, the view ranges in ``plot_view.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QPainter, QShowEvent
from PySide6.QtWidgets import QSplitter, QVBoxLayout, QWidget

from studio.qt.plot_controls import PlotControls, make_plot, measure_tick_text
from studio.qt.plot_curves import Columns, Curve, CurveStore, Key
from studio.qt.plot_parts import (
    DIAGNOSTICS_GROUP,
    LOSSES,
    colour_for,
    group_of,
    is_diagnostic,
    plot_title,
)
from studio.qt.plot_view import ViewKeeper

__all__ = ["MetricsPlot", "colour_for", "group_of", "is_diagnostic"]

REDRAW_MS = 33
STAGGER_MS = 8  # the second plot repaints this much later, in its own event-loop turn
BUCKETS = 1500  # at most 2 points (min and max) per bucket are drawn per curve ...
MIN_BUCKETS = 256  # ... and about one bucket per pixel of the plot's width
DEFAULT_SMOOTHING = 0.6


class MetricsPlot(QWidget):
    """Losses on top, one selectable group below, fed with ``(step, {name: value})`` points.

    ``overlay_requested`` fires when the user presses "Overlay runs…" (the run view answers).
    """

    overlay_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store = CurveStore(self._on_curve_created)
        self._curves = self._store.curves  # (the same dict, read here often)
        self._dirty: set[Key] = set()  # curves to redraw
        self._groups: list[str] = []  # lower-plot groups in order of appearance
        self._group = ""  # the one shown below
        self._group_chosen = False  # the user picked it: new groups do not take over
        self._weight = DEFAULT_SMOOTHING
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_redraw)
        self._prepare_timer = QTimer(self)
        self._prepare_timer.setSingleShot(True)
        self._prepare_timer.setInterval(0)
        self._prepare_timer.timeout.connect(self._prepare_next)
        self._fit_timer = QTimer(self)
        self._fit_timer.setSingleShot(True)
        self._fit_timer.timeout.connect(lambda: self._fit(self.diag_plot))
        # Shown: the plots paint one per turn of the event loop, after the rest (showEvent).
        self._unveil_timer = QTimer(self)
        self._unveil_timer.setSingleShot(True)
        self._unveil_timer.timeout.connect(self._unveil_next)
        self._held: list[pg.PlotWidget] = []  # plots whose paint waits (showEvent)

        self.controls = PlotControls(self._weight)
        self.controls.smoothing_settled.connect(self._apply_smoothing)
        self.controls.group_picked.connect(self._on_group_picked)
        self.controls.overlay_requested.connect(self.overlay_requested)
        self.controls.log_toggled.connect(self.set_log_values)
        self.controls.normalise_toggled.connect(self.set_normalised)
        self._normalised = False  # each curve drawn over its median (Series.scale)
        # (the bar's widgets are reachable as the plot's own, as they always were)
        self.smoothing_slider = self.controls.smoothing_slider
        self.smoothing_label = self.controls.smoothing_label
        self.group_box = self.controls.group_box
        self.overlay_button = self.controls.overlay_button

        self.loss_plot = make_plot("Loss")
        self.diag_plot = make_plot("")
        self._views = {
            id(p): ViewKeeper(p, lambda p=p: self._fit(p)) for p in (self.loss_plot, self.diag_plot)
        }
        self._next_plot = self.loss_plot
        self._titles = {id(self.loss_plot): "Loss", id(self.diag_plot): ""}  # (+ scale hint)
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
        layout.addWidget(self.controls)
        layout.addWidget(splitter, 1)

    # -- showing ---------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        # A plot's first paint after it is shown costs 5-15 ms of GUI CPU (the axes' tick text
        # and grid are redrawn at the new size): together with the rest of a workspace being
        # shown, one turn of the event loop long enough to feel. So the plots hold their
        # paint until the turn after the rest has painted, then paint one per turn.
        super().showEvent(event)
        if event.spontaneous():
            return  # (the window restored: everything repaints anyway)
        for plot in (self.loss_plot, self.diag_plot):
            if plot not in self._held:
                self._held.append(plot)
                plot.viewport().installEventFilter(self)
        self._unveil_timer.start(STAGGER_MS)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        # A held plot paints its background only (not the pixels left by the previous page).
        if event.type() == QEvent.Type.Paint:
            for plot in self._held:
                if watched is plot.viewport():
                    painter = QPainter(plot.viewport())
                    painter.fillRect(event.rect(), plot.backgroundBrush())
                    painter.end()
                    return True
        return super().eventFilter(watched, event)

    def _unveil_next(self) -> None:
        if self._held:
            plot = self._held.pop(0)
            plot.viewport().removeEventFilter(self)
            plot.viewport().update()
        if self._held:
            self._unveil_timer.start(STAGGER_MS)

    # -- feeding ---------------------------------------------------------------------------
    def add_points(self, points: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Append points; the curves redraw on the next timer tick."""
        self._dirty.update(self._store.append_points(points))
        self._schedule()

    def add_columns(self, cols: Columns) -> None:
        """Append whole arrays per name (``series.columns`` of a batch of records)."""
        self._store.extend(cols)
        self._dirty.update((name, None) for name in cols)
        self._schedule()

    def prepare(self, names: Iterable[str]) -> None:
        """Create the curves (and legend entries) for ``names`` before their first points.

        Building a curve and its legend entry costs ~8 ms: all of them at once when the user
        presses Start stalled the window for 50-150 ms, and in the middle of training they
        would be a visible hitch. So they are built one per turn of the event loop, in order;
        a curve whose points arrive first is built on the spot.
        """
        if self._store.queue(names):
            self._prepare_timer.start()

    def preparing(self) -> bool:
        """Whether curves queued by :meth:`prepare` are still waiting to be built."""
        return bool(self._store.pending)

    def _prepare_next(self) -> None:
        if self._store.build_next():
            self._prepare_timer.start()

    def load_history(self, cols: Columns) -> None:
        """Replace the plot with a run's stored metrics, as ``series.columns`` made off the GUI
        thread (overlays stay). The view fits them exactly (until the run grows)."""
        self.clear(overlays=False)
        for view in self._views.values():
            view.fit_exactly()
        self.add_columns(cols)

    def fit_to_data(self) -> None:
        """Fit both views to their data exactly (a run that has ended: no room ahead)."""
        for view in self._views.values():
            view.fit_exactly()
        self._fit_both()

    def set_step_range(self, total: int | None) -> None:
        """The run's length: the step axis grows with the data but never past ``total``."""
        for view in self._views.values():
            view.total = float(total) if total else None
            view.reset()
        self._fit_both()

    def _fit_both(self) -> None:
        # The top plot now, the lower one in a later turn of the event loop: two plots whose
        # view moves repaint in full, and both in one turn add up to a stall (as in _on_redraw).
        self._fit(self.loss_plot)
        self._fit_timer.start(STAGGER_MS)

    def truncate_after(self, step: int) -> None:
        """Drop points past ``step`` (a resumed run re-trains from its last checkpoint)."""
        self._dirty.update(self._store.truncate_after(step))
        self._schedule()

    def set_smoothing(self, weight: float) -> None:
        """EMA weight in [0, 0.99]; 0 draws the raw values only."""
        weight = min(max(float(weight), 0.0), 0.99)
        self.controls.set_smoothing(weight)
        self._apply_smoothing(weight)

    def smoothing(self) -> float:
        return self._weight

    def set_log_values(self, on: bool) -> None:
        """A logarithmic value axis on both plots (the bar's Log switch; the views refit)."""
        for plot in (self.loss_plot, self.diag_plot):
            plot.getPlotItem().setLogMode(y=bool(on))
        self.controls.show_switches(bool(on), self._normalised)

    def set_normalised(self, on: bool) -> None:
        """Draw each curve divided by its median (the bar's Normalise switch)."""
        self._normalised = bool(on)
        self.controls.show_switches(self.controls.log_box.isChecked(), self._normalised)
        self._dirty.update(k for k, c in self._curves.items() if self._on_screen(c))
        self.set_step_range(next(iter(self._views.values())).total)  # (refits both views)
        self._schedule()

    def _scale_of(self, curve: Curve) -> float:
        return curve.series.scale() if self._normalised else 1.0

    def set_group(self, group: str) -> None:
        """Show ``group`` in the lower plot (one of :meth:`groups`)."""
        if group in self._groups:
            self.group_box.setCurrentText(group)  # -> _on_group_picked

    def clear(self, overlays: bool = True, keep: Sequence[str] = ()) -> None:
        """Empty the plot (the overlaid runs too, with ``overlays``).

        ``keep``: the metrics a new run will log, in legend order. The shown run's curves of
        those names are kept, emptied, with their items and legend entries (building a curve
        and its legend entry costs several ms; removing one, about one), and with them the
        lower plot's group and title: a new run of the same model rebuilds nothing.
        """
        self._forget(self._store.clear(overlays, keep))
        for curve in self._curves.values():
            if curve.run is None and not curve.smooth.isVisible():  # hidden from the legend
                curve.smooth.setVisible(True)  # a new run starts with every curve shown
                for sample, _label in self._plot_of(curve).getPlotItem().legend.items:
                    sample.update()  # (its eye icon)
            if curve.run is None and curve.raw is not None:
                curve.raw.setVisible(self._weight > 0)
        if keep:  # the lower plot's groups in the new run's order
            order = {g: i for i, g in enumerate(dict.fromkeys(group_of(n) for n in keep))}
            self._groups.sort(key=lambda g: order.get(g, len(order)))
        if not any(c.group == self._group for c in self._curves.values()):
            self._group_chosen = False
        self._sync_groups()
        for view in self._views.values():
            view.exact = False
            view.reset()

    # -- overlays --------------------------------------------------------------------------
    def add_overlay(self, run: str, cols: Columns) -> int:
        """Draw another run's metrics (dashed, in the run's colour); returns the curve count.

        Replaces what was drawn for ``run`` (a rewritten file: its whole history again); a run
        already overlaid keeps its place, so its colour stays.
        """
        self._forget(self._store.restart_run(run))
        self._sync_groups()
        self.extend_overlay(run, cols)
        return len(cols)

    def extend_overlay(self, run: str, cols: Columns) -> int:
        """Append new points to an overlaid run's curves (a run that is still training); the
        curves redraw on the next timer tick. Returns the number of points appended."""
        count = self._store.extend(cols, run)
        self._dirty.update((name, run) for name in cols)
        self._schedule()
        return count

    def remove_overlay(self, run: str) -> None:
        self._forget(self._store.remove_run(run))
        self._sync_groups()

    def overlay_runs(self) -> list[str]:
        return list(self._store.runs)

    # -- reading (tests, status) -------------------------------------------------------------
    def names(self) -> list[str]:
        """This run's curves, including those :meth:`prepare` has yet to build."""
        return self._store.names()

    def groups(self) -> list[str]:
        return list(self._groups)

    def current_group(self) -> str:
        return self._group

    def series(self, name: str, run: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the steps and values held for ``name`` (empty if unknown)."""
        return self._store.series(name, run)

    def smoothed(self, name: str, run: str | None = None) -> np.ndarray:
        curve = self._store.get(name, run)
        return np.empty(0) if curve is None else curve.series.smoothed(self._weight).copy()

    def displayed(self, name: str, run: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """What the curve item holds (decimated raw values; smoothed for overlays)."""
        curve = self._store.get(name, run)
        return (np.empty(0), np.empty(0)) if curve is None else curve.displayed(self._weight)

    def curve_items(self, name: str, run: str | None = None) -> list[pg.PlotDataItem]:
        curve = self._store.get(name, run)
        return [] if curve is None else curve.items()

    def point_count(self) -> int:
        return self._store.point_count()

    def last_step(self) -> int | None:
        return self._store.last_step()

    def is_curve_visible(self, name: str, run: str | None = None) -> bool:
        curve = self._store.get(name, run)
        return curve is not None and curve.smooth.isVisible() and self._on_screen(curve)

    # -- which plot shows a curve --------------------------------------------------------------
    def _on_curve_created(self, curve: Curve) -> None:
        if curve.group != LOSSES and curve.group not in self._groups:
            self._groups.append(curve.group)
            self._sync_groups()
        if self._on_screen(curve):
            self._attach(curve)

    def _on_screen(self, curve: Curve) -> bool:
        return curve.group == LOSSES or curve.group == self._group

    def _attach(self, curve: Curve) -> None:
        if curve.attached:
            return
        curve.attached = True
        item = self._plot_of(curve).getPlotItem()
        item.legend.setVisible(True)
        if curve.raw is not None:
            item.addItem(curve.raw)  # first: the smoothed curve is drawn over it
            curve.raw.setVisible(self._weight > 0 and curve.smooth.isVisible())
        item.addItem(curve.smooth)
        self._dirty.add(curve.key)

    def _detach(self, curve: Curve) -> None:
        if not curve.attached:
            return
        curve.attached = False
        item = self._plot_of(curve).getPlotItem()
        for it in curve.items():
            item.removeItem(it)  # also takes it out of the legend
        item.legend.setVisible(bool(item.listDataItems()))

    def _forget(self, dropped: list[Curve]) -> None:
        """Take curves the store has dropped out of their plot and the redraw queue."""
        for curve in dropped:
            self._dirty.discard(curve.key)
            self._detach(curve)

    def _plot_of(self, curve: Curve) -> pg.PlotWidget:
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
        self.controls.show_groups(self._groups, wanted)
        if wanted != self._group:
            self._show_group(wanted)

    def _show_group(self, group: str) -> None:
        for curve in self._curves.values():
            if curve.group == self._group and curve.group != LOSSES:
                self._detach(curve)
        self._group = group
        self.diag_plot.getPlotItem().setTitle(group, size="9pt")
        self._titles[id(self.diag_plot)] = group
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

    def _apply_smoothing(self, weight: float) -> None:
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
        """Fit ``plot``'s view to its visible curves (if the data asks for it)."""
        view = self._views[id(plot)]
        shown = [
            (c, (b[0], b[1], b[2] / k, b[3] / k))  # (values over the Normalise scale)
            for c in self._curves.values()
            if self._on_screen(c)
            and self._plot_of(c) is plot
            and c.smooth.isVisible()
            and (b := c.series.bounds()) is not None
            and (k := self._scale_of(c))
        ]
        base = "Loss" if plot is self.loss_plot else self._group
        scales = [c.series.scale() for c, _ in shown]
        title = plot_title(base, self._normalised, scales, view.log_mode()[1])
        if self._titles.get(id(plot)) != title:  # (a new title re-lays the plot out)
            self._titles[id(plot)] = title
            plot.getPlotItem().setTitle(title, size="9pt")
        if not shown:
            return
        y_lo = min(b[2] for _, b in shown)
        if y_lo <= 0 and view.log_mode()[1]:
            # A log axis shows the positive values only: their minimum (a pass over the
            # points, only while a log axis shows a curve that goes to 0 or below).
            positive = [
                float(ys[ys > 0].min()) / self._scale_of(c)
                for c, _ in shown
                if ((ys := c.series.y[: c.series.n]) > 0).any()
            ]
            y_lo = min(positive) if positive else 0.0
        x_lo, x_hi = min(b[0] for _, b in shown), max(b[1] for _, b in shown)
        y_range = view.vb.viewRange()[1]
        view.fit((x_lo, x_hi, y_lo, max(b[3] for _, b in shown)))
        if view.vb.viewRange()[1] != y_range:  # new value labels: size their axis now
            measure_tick_text(plot.getPlotItem())

    def _on_redraw(self) -> None:
        # One plot per turn of the event loop: each repaint costs a few milliseconds (more
        # when an axis changes), and both in one turn add up to a stall the user can feel.
        stale = [
            k for k in self._dirty if k not in self._curves or not self._on_screen(self._curves[k])
        ]
        self._dirty.difference_update(stale)
        if not self._dirty:
            return
        by_plot: dict[int, list[Curve]] = {}
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
        if self._views[id(plot)].log_mode()[0]:  # (a log step axis: the view is in log10)
            x_range = tuple(10.0**v for v in x_range)
        buckets = int(min(BUCKETS, max(MIN_BUCKETS, vb.width())))
        for curve in by_plot[id(plot)]:
            self._dirty.discard(curve.key)
            curve.draw(x_range, buckets, self._weight, self._scale_of(curve))  # type: ignore[arg-type]
        self._next_plot = self.diag_plot if plot is self.loss_plot else self.loss_plot
        if self._dirty:
            self._timer.start(STAGGER_MS)
