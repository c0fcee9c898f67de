"""Live plots that stay readable (issue 16): smoothing restarts at a resume and after gaps,
distinct colours within a plot, a log value axis, and a normalised view for curves whose
scales differ by orders of magnitude."""

from __future__ import annotations

import numpy as np
import pytest

from studio.qt.plot import REDRAW_MS, MetricsPlot
from studio.qt.series import Series

# -- smoothing restarts (point 7) -----------------------------------------------------------


def _steps(a: int, b: int, every: int = 10) -> np.ndarray:
    return np.arange(a, b + 1, every, dtype=float)


def test_smoothing_restarts_where_a_resumed_run_continues() -> None:
    s = Series()
    s.extend(_steps(10, 300), np.full(30, 36_000.0))  # before the Stop
    first = s.smoothed(0.9).copy()
    s.truncate_after(300)  # Resume from the step-300 checkpoint ...
    s.extend(_steps(310, 400), np.full(10, 60_600.0))  # ... where the loss is another
    smooth = s.smoothed(0.9).copy()
    np.testing.assert_allclose(smooth[:30], first, rtol=1e-12)  # the old stretch is kept
    assert smooth[30] == pytest.approx(
        60_600.0, rel=1e-12
    )  # a fresh EMA starts at the raw value (was ~38k)
    np.testing.assert_allclose(smooth[30:], 60_600.0)
    # The same numbers whether computed as the points came or in one pass (a new weight).
    s.smoothed(0.5)
    np.testing.assert_allclose(s.smoothed(0.9), smooth, rtol=1e-12)


def test_smoothing_restarts_after_a_gap_in_the_steps_only() -> None:
    s = Series()
    xs = np.concatenate([_steps(10, 200), _steps(2000, 2200)])  # 1,800 steps missing
    ys = np.concatenate([np.full(20, 1.0), np.full(21, 100.0)])
    s.extend(xs[:25], ys[:25])  # arriving in two parts: the gap is found either way
    s.smoothed(0.95)
    s.extend(xs[25:], ys[25:])
    smooth = s.smoothed(0.95)
    assert s.smoothing_restarts(0, s.n) == [20]
    assert smooth[20] == pytest.approx(100.0, rel=1e-12) and smooth[19] == pytest.approx(1.0)
    steady = Series()  # an even log interval (and a doubled one) never restarts
    steady.extend(np.concatenate([_steps(10, 500), _steps(520, 1000, 20)]), np.ones(74))
    assert steady.smoothing_restarts(0, steady.n) == []


def test_the_plot_draws_a_resumed_runs_smoothing_from_the_raw_values(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.set_smoothing(0.9)
    plot.add_points((int(x), {"loss": 36_000.0}) for x in _steps(10, 350))
    plot.truncate_after(300)  # Stop at 350, Resume from the checkpoint at 300
    plot.add_points((int(x), {"loss": 60_600.0}) for x in _steps(310, 400))
    qtbot.wait(REDRAW_MS * 3)
    x, y = plot.series("loss")
    assert x[30] == 310
    smooth_item, _raw = plot.curve_items("loss")
    drawn = dict(zip(smooth_item.xData.tolist(), smooth_item.yData.tolist()))
    assert drawn[310.0] == pytest.approx(60_600.0, rel=1e-12) and drawn[300.0] == pytest.approx(
        36_000.0
    )
