"""Live plot repaint cost as a run's history grows to a million points.

Appends ``--points`` steps (three metrics each: two losses on the top plot, one diagnostic
below) in chunks, as the engine or the run watcher delivers them, and after every chunk times
one full update on the GUI thread: our redraw (clip to view, decimation, smoothing of the new
points) plus the repaint (events processed offscreen). The same is done for a naive plot that
hands pyqtgraph the whole arrays every time (its own clip-to-view and peak downsampling on),
which is what the decimation of the stored arrays saves. Also times a smoothing-slider change
at the full size (one EMA pass over every point). Prints p50/p99/max per size band.

A second table (``--paint``) is the GUI thread's CPU time per plot update during live appends,
"before" (min/max pairs in one order, pyqtgraph's three grid levels and its own clip-to-view
and downsampling: the plot as it was) and "after" (the defaults of ``studio.qt.plot``) side by side
in one run, the two plots taking turns: a run's history of N steps of six GAN-like metrics
(three losses on top, three diagnostics below, noisy), then live appends of 10 steps at a time,
each followed by one plot's redraw and repaint as the app's timer does it. CPU time
(``time.thread_time``), not wall time: on a shared machine the wall clock mostly measures the
wait for a core. Also: an update whose data leaves the view (the y axis is rebuilt), the first
paint after the plots are shown again (switching workspace), and a resize. And "live appends
as in training": a run from its first step, the views following the data as they do while a
model trains (``set_step_range``, 10 steps per update, losses falling), "before" with the
view-range keeper as it was (x doubled when reached, y refitted with 15% padding), with the share
of updates that rebuilt an axis.

    QT_QPA_PLATFORM=offscreen python benchmarks/plot_points.py
    QT_QPA_PLATFORM=offscreen python benchmarks/plot_points.py --points 200000 --chunk 1000
    QT_QPA_PLATFORM=offscreen python benchmarks/plot_points.py --paint --sizes 10000 1000000
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _stats(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"{np.percentile(a, 50):6.2f} | {np.percentile(a, 99):6.2f} | {a.max():6.2f}"


class NaivePlot:
    """Two pyqtgraph plots fed the full arrays (pyqtgraph's clip-to-view + peak downsampling)."""

    def __init__(self) -> None:
        import pyqtgraph as pg

        self.widget = pg.GraphicsLayoutWidget()
        self.curves = {}
        top, bottom = self.widget.addPlot(row=0, col=0), self.widget.addPlot(row=1, col=0)
        for plot, names in ((top, ("loss_d", "loss_g")), (bottom, ("diversity",))):
            plot.setClipToView(True)
            plot.setDownsampling(auto=True, mode="peak")
            for name in names:
                self.curves[name] = plot.plot(pen=pg.mkPen("#4aa3e8", width=1))
        self.x = {n: np.empty(0) for n in self.curves}
        self.y = {n: np.empty(0) for n in self.curves}

    def add(self, cols: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        for name, (xs, ys) in cols.items():
            self.x[name] = np.concatenate([self.x[name], xs])
            self.y[name] = np.concatenate([self.y[name], ys])
            self.curves[name].setData(self.x[name], self.y[name])


class OldViewKeeper:
    """The view-range keeper as it was (for "before"): the step axis doubled when the data
    reached it; y refitted with 15% padding when the data left it or filled under a quarter."""

    def __init__(self, widget, refit=None) -> None:
        item = widget.getPlotItem()
        self.vb = item.getViewBox()
        self.vb.disableAutoRange()
        self.active, self.total, self.exact = True, None, False
        self._x = self._y = None
        self.vb.sigRangeChangedManually.connect(lambda *_: setattr(self, "active", False))

    def reset(self) -> None:
        self._x = self._y = None

    def fit_exactly(self) -> None:
        self.reset()

    def log_mode(self) -> tuple[bool, bool]:
        return False, False

    def fit(self, bounds) -> None:
        if not self.active or bounds is None:
            return
        x_lo, x_hi, y_lo, y_hi = bounds
        if self._x is None or x_hi > self._x[1] or x_lo < self._x[0]:
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
            self._y = (y_lo - 0.15 * span, y_hi + 0.15 * span)
            self.vb.setYRange(*self._y, padding=0)


# The plot as it was: min/max pairs all in one order, pyqtgraph's three grid levels, its own
# clip-to-view and downsampling on every curve, and the old view-range keeper.
BEFORE = {
    ("studio.qt.series", "ALTERNATE_PEAKS"): False,
    ("studio.qt.plot_controls", "GRID_TICK_LEVELS"): 2,
    ("studio.qt.plot_curves", "PYQTGRAPH_DECIMATION"): True,
    ("studio.qt.plot", "ViewKeeper"): OldViewKeeper,
}
PAINT_METRICS = {  # name: (level, noise): losses on top, diagnostics below
    "loss_d": (0.6, 0.15),
    "loss_g": (2.2, 0.8),
    "r1": (0.05, 0.03),
    "d_real": (0.6, 0.1),
    "d_fake": (0.4, 0.1),
    "diversity": (0.8, 0.03),
}


def _paint_metrics(rng: np.random.Generator, steps: np.ndarray) -> dict:
    drift = np.exp(-steps / 3e4)
    return {
        name: (steps, level * (1 + 0.3 * drift) + rng.normal(0, noise, len(steps)))
        for name, (level, noise) in PAINT_METRICS.items()
    }


def _training_metrics(rng: np.random.Generator, steps: np.ndarray, total: int) -> dict:
    """A GAN's logged values over a run: losses falling fast at first, then noisy plateaus."""
    t = steps / total
    out = {
        name: (steps, level * (1 + 2.0 * np.exp(-8 * t)) + rng.normal(0, noise, len(steps)))
        for name, (level, noise) in PAINT_METRICS.items()
    }
    out["images_per_s"] = (steps, 300 + rng.normal(0, 30, len(steps)))
    return out


def paint_table(app, sizes: list[int], ticks: int) -> None:
    """GUI-thread CPU per plot update, before vs after, at each history size (one run)."""
    import importlib

    import pyqtgraph as pg

    from studio.qt.plot import MetricsPlot

    rebuilds = [0]  # axis pictures regenerated (pyqtgraph caches an axis until its range moves)
    generate = pg.AxisItem.generateDrawSpecs

    def counted(self, painter):
        rebuilds[0] += 1
        return generate(self, painter)

    pg.AxisItem.generateDrawSpecs = counted

    after = {key: getattr(importlib.import_module(key[0]), key[1]) for key in BEFORE}

    def use(options: dict) -> None:
        for (module, name), value in options.items():
            setattr(importlib.import_module(module), name, value)

    def make(options: dict) -> MetricsPlot:
        use(options)  # (the plot constants are read when the plot and its curves are built)
        plot = MetricsPlot()
        plot.resize(900, 600)
        plot.show()
        return plot

    def update(plot: MetricsPlot) -> float:
        """One timer tick of the app (one plot's redraw) plus the paint; GUI CPU ms."""
        use(BEFORE if plot is plots.get("before") else after)  # (the decimation order)
        t0 = time.thread_time()
        plot._on_redraw()
        plot._timer.stop()
        app.processEvents()
        return (time.thread_time() - t0) * 1000

    def drain(plot: MetricsPlot) -> None:
        for _ in range(4):
            update(plot)

    print()
    print(
        "GUI-thread CPU per plot update during live appends (900x600 px, 6 metrics, 10 steps "
        f"per append, {ticks} updates per size; before/after take turns):"
    )
    print()
    print(
        "| steps held | case | before p50 / p90 / max ms | after p50 / p90 / max ms | p50 ratio |"
    )
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    cases: dict[str, dict[str, list[float]]] = {}

    def record(case: str, kind: str, ms: float) -> None:
        cases.setdefault(case, {"before": [], "after": []})[kind].append(ms)

    def table(n_text: str) -> None:
        for case, by_kind in cases.items():
            b, a = np.asarray(by_kind["before"]), np.asarray(by_kind["after"])
            cells = [
                f"{np.percentile(v, 50):.1f} / {np.percentile(v, 90):.1f} / {v.max():.1f}"
                for v in (b, a)
            ]
            ratio = np.percentile(b, 50) / max(np.percentile(a, 50), 1e-9)
            print(f"| {n_text} | {case} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")

    # Live appends as in training: from the first step, 10 steps per update, views following.
    total = 10 * max(ticks, 1) * 5  # the run's length: the updates timed are its first fifth...
    plots = {}
    for kind, options in (("before", BEFORE), ("after", after)):
        plots[kind] = make(options)
        plots[kind].prepare(list(PAINT_METRICS))
        plots[kind].set_step_range(total)
    use(after)
    for _ in range(len(PAINT_METRICS) + 2):
        app.processEvents()
    rebuilt = {"before": 0, "after": 0}
    cases.clear()
    for step in range(10, total + 1, 10):  # ... and the whole run counts axis rebuilds
        new = _training_metrics(rng, np.arange(step - 9.0, step + 1), total)
        for kind, plot in plots.items():
            plot.add_columns(new)
            plot._timer.stop()
            before = rebuilds[0]
            ms = [update(plot), update(plot)]
            rebuilt[kind] += rebuilds[0] > before
            if step <= total // 5:
                for value in ms:
                    record("live appends as in training", kind, value)
    table(f"0-{total // 5:,}")
    updates = total // 10
    print(
        f"| (whole run of {total:,} steps) | updates that rebuilt an axis | "
        f"{rebuilt['before']} of {updates} | {rebuilt['after']} of {updates} | |"
    )
    for plot in plots.values():
        plot.close()
        plot.deleteLater()
    app.processEvents()

    for n in sizes:
        plots = {}
        for kind, options in (("before", BEFORE), ("after", after)):
            plots[kind] = make(options)
            history = _paint_metrics(np.random.default_rng(n), np.arange(1.0, n + 1))
            plots[kind].set_step_range(2 * n)
            plots[kind].load_history(history)
        use(after)
        app.processEvents()
        for plot in plots.values():
            drain(plot)
        cases.clear()
        step = n
        for i in range(ticks):
            new = _paint_metrics(rng, np.arange(step + 1.0, step + 11))
            step += 10
            # Now and then a value leaves the view (just past its top or bottom, in turns):
            # the y axis is rebuilt.
            spike = i % 10 == 9
            for kind, plot in plots.items():
                if spike:  # (just outside each plot's own view: their views differ)
                    lo, hi = plot.loss_plot.getPlotItem().getViewBox().viewRange()[1]
                    new["loss_g"][1][-1] = (
                        hi + 0.02 * (hi - lo) if i % 20 == 9 else lo - 0.02 * (hi - lo)
                    )
                plot.add_columns(new)
                plot._timer.stop()
                # Two updates: the app's timer redraws one plot per turn.
                ms = [update(plot), update(plot)]
                record("axes change" if spike else "live update", kind, max(ms) if spike else ms[0])
                if not spike:
                    record("live update", kind, ms[1])
        for kind, plot in plots.items():
            for _ in range(3):
                plot.hide()
                app.processEvents()
                t0 = time.thread_time()
                plot.show()
                app.processEvents()
                record("shown again", kind, (time.thread_time() - t0) * 1000)
            for width in (901, 900, 899):
                t0 = time.thread_time()
                plot.resize(width, 600)
                app.processEvents()
                record("resized", kind, (time.thread_time() - t0) * 1000)
                plot._timer.stop()  # (the redraw for the new width: not part of this case)
                plot._dirty.clear()
        table(f"{n:,}")
        if os.environ.get("PLOT_POINTS_GRAB"):  # look at what was measured
            for kind, plot in plots.items():
                plot.grab().save(os.path.join(os.environ["PLOT_POINTS_GRAB"], f"{kind}_{n}.png"))
        for plot in plots.values():
            plot.close()
            plot.deleteLater()
        app.processEvents()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=2000, help="steps appended per update")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--paint", action="store_true", help="only the GUI-CPU-per-repaint table (before/after)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--ticks", type=int, default=60, help="live updates per size (--paint)")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from studio.qt.plot import MetricsPlot
    from studio.qt.theme import apply_theme

    apply_theme(app)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()}, load average {os.getloadavg()[0]:.1f}; Qt offscreen"
    )
    if args.paint:
        paint_table(app, args.sizes, args.ticks)
        return
    rng = np.random.default_rng(0)
    steps = np.arange(1, args.points + 1, dtype=np.float64)
    loss_d = 0.7 + 0.3 * np.exp(-steps / 2e5) + rng.normal(0, 0.05, args.points)
    loss_g = 2.0 - 0.5 * np.exp(-steps / 2e5) + rng.normal(0, 0.2, args.points)
    diversity = 0.8 + rng.normal(0, 0.02, args.points)
    chunks = np.array_split(np.arange(args.points), max(1, args.points // args.chunk))
    bands = [b for b in (10_000, 100_000, 1_000_000, args.points) if b <= args.points]
    bands = sorted(set(bands))

    def run(kind: str) -> dict[int, list[float]]:
        if kind == "studio":
            plot = MetricsPlot()
            widget = plot
        else:
            naive = NaivePlot()
            widget = naive.widget
        widget.resize(900, 600)
        widget.show()
        app.processEvents()
        times: dict[int, list[float]] = {b: [] for b in bands}
        held = 0
        for idx in chunks:
            cols = {
                "loss_d": (steps[idx], loss_d[idx]),
                "loss_g": (steps[idx], loss_g[idx]),
                "diversity": (steps[idx], diversity[idx]),
            }
            t0 = time.perf_counter()
            if kind == "studio":
                plot.add_columns(cols)
                plot._timer.stop()  # time the timer's work now, not 33 ms later
                for _ in range(4):  # one plot per turn: drain both (and a view change)
                    plot._on_redraw()
                    plot._timer.stop()
            else:
                naive.add(cols)
            app.processEvents()  # the paint events
            ms = (time.perf_counter() - t0) * 1000
            held += len(idx)
            band = next(b for b in bands if held <= b)
            times[band].append(ms)
        if kind == "studio":
            t0 = time.perf_counter()
            plot.set_smoothing(0.95)
            for _ in range(4):
                plot._on_redraw()
                plot._timer.stop()
            app.processEvents()
            times[-1] = [(time.perf_counter() - t0) * 1000]
            drawn = max(len(i.xData) for n in plot.names() for i in plot.curve_items(n))
            times[-2] = [float(drawn)]
        widget.close()
        return times

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}; "
        f"Qt offscreen; {args.points:,} steps x 3 metrics in chunks of {args.chunk:,}"
    )
    studio = run("studio")
    naive = None if args.skip_naive else run("naive")
    print()
    print("| points held (per metric) | studio p50 / p99 / max ms | naive p50 / p99 / max ms |")
    print("|---|---|---|")
    lo = 0
    for band in bands:
        n_text = _stats(naive[band]) if naive and naive[band] else "-"
        print(f"| {lo:,}-{band:,} | {_stats(studio[band])} | {n_text} |")
        lo = band
    print()
    print(f"most points handed to pyqtgraph per curve (studio): {int(studio[-2][0]):,}")
    print(f"smoothing slider change at {args.points:,} points: {studio[-1][0]:.1f} ms")
    paint_table(app, args.sizes, args.ticks)


if __name__ == "__main__":
    main()
