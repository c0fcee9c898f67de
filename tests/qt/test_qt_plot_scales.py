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


# -- colours, log values and normalised curves (point 9) -------------------------------------


def _settle(qtbot) -> None:
    qtbot.wait(REDRAW_MS * 4)


def _pen_colour(item) -> str:
    return item.opts["pen"].color().name()


def test_curves_of_one_plot_never_share_a_colour(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    names = ["loss", "heldout_bpd", "recon", "kl", "bpd", "nll", "extra_a", "extra_b"]
    plot.add_points([(1, {name: 1.0 for name in names})])
    colours = [_pen_colour(plot.curve_items(name)[0]) for name in names]
    assert len(set(colours)) == len(names)  # (hashed, "loss" and "heldout_bpd" were both blue)
    # A new run keeps the colours its curves had, and a newcomer takes a free one.
    plot.clear(keep=["loss", "heldout_bpd"])
    plot.add_points([(1, {"loss": 1.0, "heldout_bpd": 2.0, "kl": 3.0})])
    again = [_pen_colour(plot.curve_items(n)[0]) for n in ("loss", "heldout_bpd", "kl")]
    assert again[:2] == colours[:2] and len(set(again)) == 3


def test_the_log_switch_puts_both_value_axes_on_a_log_scale(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.add_points([(s, {"loss": 10.0 ** (-s / 25), "lr": 1e-3}) for s in range(1, 101)])
    _settle(qtbot)
    plot.controls.log_box.setChecked(True)  # the user ticks Log
    _settle(qtbot)
    for p in (plot.loss_plot, plot.diag_plot):
        assert p.getPlotItem().getViewBox().state["logMode"][1]
    y0, y1 = plot.loss_plot.getPlotItem().getViewBox().viewRange()[1]
    assert y0 < -3.5 and y1 < 0.5  # 1e-4 .. 1 in log10: the small values are not squashed
    plot.set_log_values(False)
    assert not plot.controls.log_box.isChecked()
    assert not plot.loss_plot.getPlotItem().getViewBox().state["logMode"][1]


def test_a_large_component_no_longer_flattens_the_small_ones(qtbot, tmp_path) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.resize(700, 500)
    plot.show()
    rng = np.random.default_rng(0)
    steps = range(1, 201)
    plot.add_points(
        (s, {"recon": 50_000 - 100 * s + rng.normal(0, 500), "kl": 5 + s / 20 + rng.normal(0, 0.3)})
        for s in steps
    )
    _settle(qtbot)
    title = plot.loss_plot.getPlotItem().titleLabel.text
    assert "scales differ" in title and "Normalise" in title  # the plot says what helps
    plot.grab().save(str(tmp_path / "flat.png"))
    plot.set_log_values(True)  # a log axis shows both: no hint
    _settle(qtbot)
    assert plot.loss_plot.getPlotItem().titleLabel.text == "Loss"
    plot.set_log_values(False)
    plot.controls.normalise_box.setChecked(True)
    _settle(qtbot)
    plot.grab().save(str(tmp_path / "normalised.png"))
    assert "scales differ" not in plot.loss_plot.getPlotItem().titleLabel.text
    y0, y1 = plot.loss_plot.getPlotItem().getViewBox().viewRange()[1]
    assert 0.0 < y0 < 0.7 and 1.3 < y1 < 3.0  # both curves around 1, the view fits them
    for name in ("recon", "kl"):
        _x, y = plot.displayed(name)
        raw = plot.series(name)[1]
        assert np.median(y) == pytest.approx(1.0, abs=0.05)  # each over its own median
        np.testing.assert_allclose(y * np.median(np.abs(raw)), raw, rtol=1e-9)
        assert np.ptp(y) > 0.5  # the small curve's trend is visible, not a line at zero
    plot.set_normalised(False)
    _settle(qtbot)
    np.testing.assert_allclose(plot.displayed("kl")[1], plot.series("kl")[1])
