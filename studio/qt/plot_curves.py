"""The curve store of the live plots: every curve's points and pyqtgraph items, by metric and run.

A curve is one metric of one run: ``(name, None)`` for the run being shown (a faint raw curve
and a smoothed one, in a colour no other curve of its plot has), ``(name, label)`` for an overlaid run (one dashed
curve in the run's colour; the order in which runs were overlaid is their colour, and a run's
metrics in one group differ by dash pattern). :class:`CurveStore` takes the points as they
arrive, queues the curves :meth:`CurveStore.queue` announces so they can be built one at a time,
and answers what is held; :meth:`Curve.draw` hands pyqtgraph the clipped, decimated points.
:meth:`CurveStore.clear` can keep the shown run's curves that a new run logs too (emptied, see
:func:`reusable`): building a curve and its legend entry is the dear part.
Which plot shows a curve, and when it is redrawn, is the widget's business (``plot.py``): the
store tells it of each new curve through ``on_created`` and returns the keys whose data changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor

from studio.qt.plot_parts import RUN_DASHES, RUN_PALETTE, group_of, pick_colour
from studio.qt.series import NON_METRICS, Series, metric_value

Key = tuple[str, str | None]  # (metric name, None or an overlaid run's label)
Columns = Mapping[str, tuple[np.ndarray, np.ndarray]]

RAW_ALPHA = 70
# pyqtgraph's own clip-to-view and peak downsampling redo, on every setData and view change,
# what Curve.draw has already done (the points handed over are clipped and at most ~2 per
# pixel). Read when a plot or a curve is built (benchmarks/plot_points.py turns it on).
PYQTGRAPH_DECIMATION = False


@dataclass
class Curve:
    name: str
    run: str | None  # None: the run being shown; else the label of an overlaid run
    group: str
    series: Series
    smooth: pg.PlotDataItem  # named: the legend entry
    raw: pg.PlotDataItem | None  # faint; overlays have none
    attached: bool = False  # its items are in a plot
    colour: str = ""  # the shown run's curves: distinct within the plot (pick_colour)

    @property
    def key(self) -> Key:
        return self.name, self.run

    def items(self) -> list[pg.PlotDataItem]:
        return [i for i in (self.smooth, self.raw) if i is not None]

    def reset(self) -> None:
        """Forget the points (a new run takes the curve over): empty series, empty items."""
        self.series = Series()
        for item in self.items():
            item.setData([], [])

    def draw(
        self, x_range: tuple[float, float], buckets: int, weight: float, scale: float = 1.0
    ) -> None:
        """Hand the items the points inside ``x_range``, decimated to ``buckets`` min/max
        pairs; the raw values faint under the EMA of ``weight`` (raw only when it is 0);
        every value divided by ``scale`` (the Normalise view)."""
        series = self.series
        i0, i1 = series.visible(*x_range)
        if self.raw is None or weight <= 0:
            if self.raw is None and weight > 0:
                _set_data(self.smooth, series.smoothed_decimated(i0, i1, buckets, weight), scale)
            else:
                _set_data(self.smooth, series.decimated(i0, i1, buckets), scale)
            return
        _set_data(self.raw, series.decimated(i0, i1, buckets), scale)
        _set_data(self.smooth, series.smoothed_decimated(i0, i1, buckets, weight), scale)

    def displayed(self, weight: float) -> tuple[np.ndarray, np.ndarray]:
        """What the curve item holds (decimated raw values; smoothed for overlays)."""
        item = self.raw if self.raw is not None and weight > 0 else self.smooth
        xs, ys = item.xData, item.yData
        return (np.empty(0), np.empty(0)) if xs is None else (np.asarray(xs), np.asarray(ys))


def reusable(old: Iterable[str], new: Iterable[str]) -> set[str]:
    """Which of a run's curves (``old``, in the order they were built) a run logging ``new``
    (in legend order) can take over as they are: in each group, the names both lists start
    with, so each legend keeps the order a fresh build would give it."""
    new = list(dict.fromkeys(new))
    keep: set[str] = set()
    for group in {group_of(n) for n in new}:
        mine = [n for n in old if group_of(n) == group]
        for a, b in zip(mine, [n for n in new if group_of(n) == group]):
            if a != b:
                break
            keep.add(a)
    return keep


def _set_data(item: pg.PlotDataItem, xy: tuple[np.ndarray, np.ndarray], scale: float) -> None:
    """Hand a curve its points (values divided by ``scale``); pyqtgraph's checks for NaN
    are skipped when there are none (one check here instead of several in pyqtgraph's path
    building and bounds)."""
    x, y = xy
    if scale != 1.0:
        y = y / scale
    item.setData(x, y, skipFiniteCheck=bool(np.isfinite(y).all()))


class CurveStore:
    """The curves of one metrics plot, the overlaid runs in order, and the queued names."""

    def __init__(self, on_created: Callable[[Curve], None]) -> None:
        self.curves: dict[Key, Curve] = {}
        self.runs: list[str] = []  # overlaid runs, in order (their colour index)
        self.pending: list[str] = []  # names queued to be built, one at a time
        self._on_created = on_created

    # -- the run being shown -----------------------------------------------------------------
    def append_points(self, points: Iterable[tuple[int, Mapping[str, Any]]]) -> set[Key]:
        """Append ``(step, {name: value})`` points (non-numeric values are skipped); returns
        the keys of the curves that grew."""
        changed: set[Key] = set()
        for step, metrics in points:
            for name, value in metrics.items():
                y = metric_value(name, value)
                if y is None:
                    continue
                self.curve(name, None).series.append(float(step), y)
                changed.add((name, None))
        return changed

    def extend(self, cols: Columns, run: str | None = None) -> int:
        """Append whole arrays per name to ``run``'s curves (an overlay joins the runs if new);
        returns the number of points appended."""
        if run is not None and run not in self.runs:
            self.runs.append(run)
        count = 0
        for name, (xs, ys) in cols.items():
            self.curve(name, run).series.extend(xs, ys)
            count += len(xs)
        return count

    def truncate_after(self, step: int) -> set[Key]:
        """Drop the shown run's points past ``step``; returns the keys of the curves that shrank."""
        changed: set[Key] = set()
        for key, curve in self.curves.items():
            if curve.run is None:
                before = curve.series.n
                curve.series.truncate_after(step)
                if curve.series.n != before:
                    changed.add(key)
        return changed

    def queue(self, names: Iterable[str]) -> bool:
        """Queue curves to build before their first points; True if any are waiting."""
        for name in names:
            known = name in self.pending or (name, None) in self.curves
            if name not in NON_METRICS and not known:
                self.pending.append(name)
        return bool(self.pending)

    def build_next(self) -> bool:
        """Build the first queued curve; True if more are waiting."""
        if self.pending:
            self.curve(self.pending[0], None)  # (takes it off the list)
        return bool(self.pending)

    # -- overlaid runs ---------------------------------------------------------------------
    def restart_run(self, run: str) -> list[Curve]:
        """Drop ``run``'s curves, keeping its place (and so its colour) if it has one, else
        giving it the next; returns the curves dropped."""
        place = self.runs.index(run) if run in self.runs else len(self.runs)
        dropped = self.remove_run(run)
        self.runs.insert(place, run)
        return dropped

    def remove_run(self, run: str) -> list[Curve]:
        dropped = [self.curves.pop(k) for k in [k for k in self.curves if k[1] == run]]
        if run in self.runs:
            self.runs.remove(run)
        return dropped

    def clear(self, overlays: bool = True, keep: Iterable[str] = ()) -> list[Curve]:
        """Drop the shown run's curves (and the overlays' too, with ``overlays``); returns the
        curves dropped. The shown run's curves that :func:`reusable` allows for the names in
        ``keep`` stay, emptied (:meth:`Curve.reset`)."""
        self.pending.clear()
        kept = reusable([n for n, run in self.curves if run is None], keep)
        dropped = []
        for key, curve in list(self.curves.items()):
            if curve.run is None and curve.name in kept:
                curve.reset()
            elif overlays or curve.run is None:
                dropped.append(self.curves.pop(key))
        if overlays:
            self.runs.clear()
        return dropped

    # -- curves ----------------------------------------------------------------------------
    def get(self, name: str, run: str | None = None) -> Curve | None:
        return self.curves.get((name, run))

    def curve(self, name: str, run: str | None) -> Curve:
        """The curve of ``name`` in ``run``, built (and announced) on first use."""
        curve = self.curves.get((name, run))
        if curve is not None:
            return curve
        group = group_of(name)
        if run is None:
            if name in self.pending:
                self.pending.remove(name)
            taken = [c.colour for c in self.curves.values() if c.run is None and c.group == group]
            name_colour = pick_colour(name, taken)
            colour = QColor(name_colour)
            smooth = pg.PlotDataItem(name=name, pen=pg.mkPen(colour, width=1))
            faint = QColor(colour)
            faint.setAlpha(RAW_ALPHA)
            raw = pg.PlotDataItem(pen=pg.mkPen(faint, width=1))
        else:
            index = self.runs.index(run) if run in self.runs else 0
            siblings = sum(1 for c in self.curves.values() if c.run == run and c.group == group)
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
        curve = self.curves[(name, run)] = Curve(name, run, group, Series(), smooth, raw)
        if run is None:
            curve.colour = name_colour
        self._on_created(curve)
        return curve

    # -- reading ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The shown run's curves, including those queued to be built."""
        return [name for name, run in self.curves if run is None] + self.pending

    def series(self, name: str, run: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the steps and values held for ``name`` (empty if unknown)."""
        curve = self.curves.get((name, run))
        if curve is None:
            return np.empty(0), np.empty(0)
        s = curve.series
        return s.x[: s.n].copy(), s.y[: s.n].copy()

    def point_count(self) -> int:
        return sum(c.series.n for c in self.curves.values() if c.run is None)

    def last_step(self) -> int | None:
        steps = [
            c.series.x[c.series.n - 1] for c in self.curves.values() if c.run is None and c.series.n
        ]
        return int(max(steps)) if steps else None
