"""Live plot repaint cost as a run's history grows to a million points.

Appends ``--points`` steps (three metrics each: two losses on the top plot, one diagnostic
below) in chunks, as the engine or the run watcher delivers them, and after every chunk times
one full update on the GUI thread: our redraw (clip to view, decimation, smoothing of the new
points) plus the repaint (events processed offscreen). The same is done for a naive plot that
hands pyqtgraph the whole arrays every time (its own clip-to-view and peak downsampling on),
which is what the decimation of the stored arrays saves. Also times a smoothing-slider change
at the full size (one EMA pass over every point). Prints p50/p99/max per size band.

    QT_QPA_PLATFORM=offscreen python benchmarks/plot_points.py
    QT_QPA_PLATFORM=offscreen python benchmarks/plot_points.py --points 200000 --chunk 1000
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=2000, help="steps appended per update")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from studio.qt.plot import MetricsPlot
    from studio.qt.theme import apply_theme

    apply_theme(app)
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


if __name__ == "__main__":
    main()
