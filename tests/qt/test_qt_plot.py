"""MetricsPlot: appends only, redraws on a timer, raw + smoothed curves, decimation, overlays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from studio.qt.plot import BUCKETS, REDRAW_MS, MetricsPlot, colour_for, group_of
from studio.qt.series import Series, columns, ema


def _naive_ema(values, weight):
    s, k, out = 0.0, 0, []
    for v in values:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        s, k = weight * s + (1 - weight) * v, k + 1
        out.append(s / (1 - weight**k))
    return np.array(out)


# -- the numbers (no Qt) ---------------------------------------------------------------------


def test_ema_matches_the_definition_in_one_go_and_in_chunks() -> None:
    assert ema(np.array([1.0, 3.0]), 0.5)[0].tolist() == [1.0, pytest.approx(1.75 / 0.75)]
    np.testing.assert_allclose(ema(np.full(5000, 2.5), 0.99)[0], 2.5)  # debiased: no ramp-up
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 10.0, 3000)
    x[[4, 200, 2999]] = np.nan
    x[7] = np.inf
    for w in (0.0, 0.05, 0.6, 0.95, 0.999):
        want = _naive_ema(x, w)
        got, state, count = ema(x, w)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True)
        parts, s, k = [], 0.0, 0
        for chunk in np.array_split(x, 9):  # points arriving a few at a time
            out, s, k = ema(chunk, w, s, k)
            parts.append(out)
        np.testing.assert_allclose(
            np.concatenate(parts), want, rtol=1e-9, atol=1e-9, equal_nan=True
        )
        assert count == k == 2996


def test_peak_decimation_keeps_extremes_and_bounds_the_size() -> None:
    s = Series()
    rng = np.random.default_rng(1)
    y = rng.normal(size=300_000)
    y[123_457] = 50.0  # one spike must survive decimation
    s.extend(np.arange(len(y), dtype=float), y)
    x_d, y_d = s.decimated(0, s.n, 1000)
    assert len(x_d) <= 2 * 1000 + 3
    assert y_d.max() == 50.0 and y_d.min() == y.min()
    assert x_d[0] == 0 and x_d[-1] == len(y) - 1 and np.all(np.diff(x_d) >= 0)
    i0, i1 = s.visible(1000.5, 1100.2)  # zoomed in: the raw points, one either side
    x_z, y_z = s.decimated(i0, i1, 1000)
    assert x_z.tolist() == list(range(1000, 1102)) and np.array_equal(y_z, y[1000:1102])
    s.append(len(y), -80.0)  # a new point past the last complete block still shows
    assert s.decimated(0, s.n, 1000)[1].min() == -80.0


def test_columns_skip_bookkeeping_and_text() -> None:
    records = [{"step": 1, "time": 5.0, "loss": 0.5, "tag": "x", "ok": True}]
    records += [{"step": 2, "loss": math.nan}, {"step": 3, "loss": "1.0"}]  # NaN kept, text not
    cols = columns(records)
    assert set(cols) == {"loss"}
    assert cols["loss"][0].tolist() == [1.0, 2.0] and math.isnan(cols["loss"][1][1])


# -- the widget ------------------------------------------------------------------------------


def test_points_accumulate_and_redraw_once_per_tick(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    for step in range(1, 3001):  # many small batches, as the engine delivers them
        plot.add_points([(step, {"loss_d": 1.0 / step, "loss_g": 2.0, "time": 123.0})])
    calls = []
    curve = plot.curve_items("loss_d")[0]
    original = curve.setData
    curve.setData = lambda *a, **k: (calls.append(1), original(*a, **k))
    qtbot.wait(REDRAW_MS * 4)
    assert len(calls) == 1  # one redraw for 3000 appends
    x, y = plot.series("loss_d")
    assert x.tolist() == list(range(1, 3001))
    assert y[-1] == 1.0 / 3000
    assert "time" not in plot.names()  # bookkeeping fields are not plotted
    qtbot.wait(REDRAW_MS * 3)
    assert len(calls) == 1  # nothing new, nothing redrawn


def test_losses_on_top_and_one_group_below(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.add_points(
        [(10, {"loss_d": 1.0, "d_real": 0.7, "diversity": 0.9, "grad_norm_d": 3.0, "lr": 1e-3})]
    )
    qtbot.wait(REDRAW_MS * 3)
    named = lambda p: {c.name() for c in p.getPlotItem().listDataItems() if c.name()}  # noqa: E731
    assert named(plot.loss_plot) == {"loss_d"}
    assert plot.groups() == ["Diagnostics", "Gradient norm", "Learning rate"]
    assert plot.current_group() == "Diagnostics"
    assert named(plot.diag_plot) == {"d_real", "diversity"}
    assert not plot.is_curve_visible("lr")
    plot.set_group("Learning rate")
    assert named(plot.diag_plot) == {"lr"} and plot.is_curve_visible("lr")
    assert not plot.is_curve_visible("diversity")
    plot.add_points([(20, {"memory_mb": 100.0})])  # a new group does not take over the view
    assert plot.current_group() == "Learning rate" and "Memory (MiB)" in plot.groups()
    assert colour_for("loss_d") != colour_for("loss_g")
    assert colour_for("some_new_loss") == colour_for("some_new_loss")


def test_every_family_metric_lands_somewhere_sensible() -> None:
    for name in ("loss", "loss_d", "recon", "kl", "bpd", "gp", "wasserstein", "commit", "mse"):
        assert group_of(name) == "", name  # losses, known or not, on the main plot
    expected = {
        "diversity": "Diagnostics",
        "d_real": "Diagnostics",
        "grad_norm": "Gradient norm",
        "grad_norm_g": "Gradient norm",
        "lr": "Learning rate",
        "lr_g": "Learning rate",
        "images_per_s": "Images/s",
        "memory_mb": "Memory (MiB)",
        "kl_dim_03": "KL per dimension",
        "perplexity": "Codebook perplexity",
        "resolution": "Growing: resolution (px)",
        "alpha": "Growing: fade-in alpha",
    }
    for name, group in expected.items():
        assert group_of(name) == group, name
    assert group_of("lrelu_loss") == ""  # not a learning rate


def test_history_then_live_points_continue_the_curve(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    records = [{"step": s, "time": 0.0, "loss_g": float(s)} for s in range(10, 110, 10)]
    records.append({"step": 100, "time": 0.0, "diversity": 0.5})
    plot.load_history(columns(records))
    assert plot.last_step() == 100
    plot.truncate_after(80)  # a resume from the step-80 checkpoint drops what came after
    assert plot.series("loss_g")[0].tolist() == [10, 20, 30, 40, 50, 60, 70, 80]
    assert plot.series("diversity")[0].size == 0
    plot.add_points([(90, {"loss_g": -1.0})])
    x, y = plot.series("loss_g")
    assert x[-2:].tolist() == [80, 90] and y[-1] == -1.0
    plot.clear()
    assert plot.names() == [] and plot.point_count() == 0 and plot.groups() == []
    assert plot.loss_plot.getPlotItem().listDataItems() == []


def test_a_million_points_draw_as_a_few_thousand(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.resize(800, 500)
    plot.show()
    n = 1_000_000
    steps = np.arange(1, n + 1, dtype=float)
    values = np.sin(steps / 5000.0) + 0.01 * (steps % 7)
    values[654_321] = 9.0
    for chunk in np.array_split(np.arange(n), 20):  # as a watcher delivers a long history
        plot.add_columns({"loss": (steps[chunk], values[chunk])})
    qtbot.waitUntil(lambda: plot.displayed("loss")[0].size > 0, timeout=5000)
    assert plot.series("loss")[0].size == n  # every point is kept ...
    x_d, y_d = plot.displayed("loss")
    assert x_d.size <= 2 * BUCKETS + 3  # ... and what is drawn is a few thousand
    assert y_d.max() == 9.0  # the spike survives ("peak" decimation)
    smooth_item, raw_item = plot.curve_items("loss")
    assert smooth_item.xData.size <= 2 * BUCKETS + 8
    vb = plot.loss_plot.getPlotItem().getViewBox()
    vb.setXRange(500_000, 500_100, padding=0)  # zoomed in: full detail in the view
    qtbot.waitUntil(lambda: plot.displayed("loss")[0].size < 200, timeout=5000)
    x_z, y_z = plot.displayed("loss")
    assert x_z[0] <= 500_000 and x_z[-1] >= 500_100
    np.testing.assert_array_equal(y_z, values[int(x_z[0]) - 1 : int(x_z[-1])])


def test_smoothing_slider_changes_the_smoothed_curve(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    rng = np.random.default_rng(3)
    y = rng.normal(1.0, 0.5, 400)
    plot.add_points((s, {"loss": float(v)}) for s, v in enumerate(y, 1))
    np.testing.assert_allclose(plot.smoothed("loss"), _naive_ema(y, plot.smoothing()), rtol=1e-9)
    plot.smoothing_slider.setValue(90)  # dragged: applied once the slider rests
    qtbot.waitUntil(lambda: plot.smoothing() == 0.9, timeout=2000)
    smooth = plot.smoothed("loss")
    np.testing.assert_allclose(smooth, _naive_ema(y, 0.9), rtol=1e-9)
    assert np.std(smooth[50:]) < 0.5 * np.std(y[50:])  # smoother than the raw values
    qtbot.wait(REDRAW_MS * 3)
    smooth_item, raw_item = plot.curve_items("loss")
    np.testing.assert_allclose(smooth_item.yData, smooth)  # drawn: 400 points, no decimation
    np.testing.assert_array_equal(raw_item.yData, y)
    assert raw_item.isVisible()
    plot.set_smoothing(0.0)  # raw only: the faint copy hides, the main curve is the raw data
    qtbot.wait(REDRAW_MS * 3)
    assert not raw_item.isVisible() and plot.smoothing_label.text() == "0.00"
    np.testing.assert_array_equal(smooth_item.yData, y)


def test_overlay_adds_a_dashed_curve_per_run(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.add_points([(s, {"loss_d": 1.0, "diversity": 0.5}) for s in range(1, 11)])
    other = columns([{"step": s, "loss_d": 2.0, "diversity": 0.4} for s in range(1, 21)])
    assert plot.add_overlay("run_b", other) == 2
    plot.add_overlay("run_c", columns([{"step": 1, "loss_d": 3.0}]))
    qtbot.wait(REDRAW_MS * 4)
    names = [c.name() for c in plot.loss_plot.getPlotItem().listDataItems() if c.name()]
    assert names == ["loss_d", "loss_d · run_b", "loss_d · run_c"]
    diag = [c.name() for c in plot.diag_plot.getPlotItem().listDataItems() if c.name()]
    assert "diversity · run_b" in diag
    b, c = plot.curve_items("loss_d", "run_b")[0], plot.curve_items("loss_d", "run_c")[0]
    assert b.opts["pen"].color().name() != c.opts["pen"].color().name()
    assert plot.series("loss_d", "run_b")[0].size == 20
    assert plot.point_count() == 20  # overlays are not this run's points
    plot.clear(overlays=False)  # a new run: the overlays stay
    assert plot.overlay_runs() == ["run_b", "run_c"] and plot.names() == []
    plot.remove_overlay("run_b")
    names = [c.name() for c in plot.loss_plot.getPlotItem().listDataItems() if c.name()]
    assert names == ["loss_d · run_c"]


def test_prepared_curves_wait_for_their_points(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.prepare(["loss_d", "loss_g", "diversity"])
    assert plot.names() == ["loss_d", "loss_g", "diversity"]
    assert plot.point_count() == 0 and plot.last_step() is None
    plot.set_step_range(1000)
    plot.add_points([(10, {"loss_d": 0.5})])
    qtbot.wait(REDRAW_MS * 3)
    assert plot.series("loss_d")[0].tolist() == [10]
    x_range = plot.loss_plot.getPlotItem().getViewBox().viewRange()[0]
    assert x_range[1] <= 1000 * 1.05  # capped at the run's length


def test_view_follows_the_data_until_the_user_zooms(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    vb = plot.loss_plot.getPlotItem().getViewBox()
    plot.add_points([(s, {"loss": 1.0 + s / 100}) for s in range(1, 51)])
    qtbot.wait(REDRAW_MS * 3)
    (_, x1), (y0, y1) = vb.viewRange()
    assert x1 >= 50 and y0 <= 1.0 and y1 >= 1.5
    plot.add_points([(51, {"loss": 1.2})])  # inside the view: the view stays put
    qtbot.wait(REDRAW_MS * 3)
    assert vb.viewRange()[1] == [y0, y1]

    vb.sigRangeChangedManually.emit([True, True])  # the user zoomed or panned
    plot.add_points([(60, {"loss": 50.0})])
    qtbot.wait(REDRAW_MS * 3)
    assert vb.viewRange()[1] == [y0, y1]  # the user's view is left alone

    plot.loss_plot.getPlotItem().autoBtn.clicked.emit(plot.loss_plot.getPlotItem().autoBtn)
    plot.add_points([(61, {"loss": 2.0})])
    qtbot.wait(REDRAW_MS * 3)
    assert vb.viewRange()[1][1] >= 50.0  # "A" hands the view back: it fits the data again


def test_prepare_builds_one_curve_per_event_loop_turn(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.prepare(["loss_d", "loss_g", "diversity"])
    # Nothing is built inside the call (the Start button's click stays short) ...
    assert plot.curve_items("loss_d") == [] and plot.names() == ["loss_d", "loss_g", "diversity"]
    plot.add_points([(1, {"loss_g": 0.7})])  # ... but a curve whose points come first is built
    assert len(plot.curve_items("loss_g")) == 2
    qtbot.waitUntil(lambda: plot.curve_items("diversity") != [], timeout=2000)
    legend = [c.name() for c in plot.loss_plot.getPlotItem().listDataItems() if c.name()]
    assert sorted(legend) == ["loss_d", "loss_g"]
    assert plot.names() == ["loss_g", "loss_d", "diversity"]
    plot.prepare(["loss_x"])
    plot.clear(overlays=False)  # a new run before the pending curves were built
    qtbot.wait(20)
    assert plot.names() == [] and plot.curve_items("loss_x") == []


def test_peak_pairs_alternate_so_the_line_between_buckets_stays_short() -> None:
    s = Series()
    y = np.tile([0.0, 10.0], 50_000)  # every bucket spans the whole band
    s.extend(np.arange(len(y), dtype=float), y)
    _, y_d = s.decimated(0, s.n, 500)
    pairs = y_d[:-1].reshape(-1, 2)
    assert pairs[0].tolist() == [0.0, 10.0] and pairs[1].tolist() == [10.0, 0.0]
    # From one bucket to the next the line joins two maxima or two minima: no band crossings
    # between buckets, only the one vertical stroke within each.
    assert np.all(pairs[1:, 0] == pairs[:-1, 1])
    assert np.abs(np.diff(y_d[:-1])).sum() == 10.0 * len(pairs)


def test_curves_skip_pyqtgraphs_own_decimation_and_nan_checks_only_when_safe(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.add_points([(s, {"loss": float(s), "loss_d": 1.0}) for s in range(1, 50)])
    plot.add_points([(50, {"loss_d": math.nan}), (51, {"loss_d": 2.0})])
    qtbot.wait(REDRAW_MS * 3)
    smooth, raw = plot.curve_items("loss")
    for item in (smooth, raw):  # what they get is already clipped and decimated
        assert not item.opts["clipToView"] and not item.opts["autoDownsample"]
        assert item.opts["skipFiniteCheck"]
    nan_items = plot.curve_items("loss_d")
    assert all(not item.opts["skipFiniteCheck"] for item in nan_items)  # NaN: a gap, not junk
    assert np.isnan(plot.displayed("loss_d")[1]).any()
    axis = plot.loss_plot.getPlotItem().getAxis("left")
    assert axis.style["maxTickLevel"] == 1  # no third, near-invisible grid level


# -- view ranges (plot_view.py): they move rarely, and only when the data asks ---------------------
def test_round_bounds_and_value_hysteresis_rules() -> None:
    from studio.qt.plot_view import nice_ceil, step_bound, value_view

    assert [nice_ceil(v) for v in (0.7, 1.0, 1.1, 2.0, 3.0, 7.0, 11.0, 499.0)] == [
        1.0, 1.0, 2.0, 2.0, 5.0, 10.0, 20.0, 500.0
    ]  # fmt: skip
    assert step_bound(30, None) == 50.0 and step_bound(100, None) == 200.0
    assert step_bound(300, 400) == 400.0 and step_bound(500, 400) == 500.0  # capped, never short
    assert value_view(1.0, 2.0, None) == pytest.approx((0.9, 2.1))
    assert value_view(1.0, 2.0, (0.9, 2.1)) is None  # inside: hold still
    lo, hi = value_view(1.0, 3.0, (0.9, 2.1))  # crossed the top: headroom above
    assert hi - 3.0 > 1.0 - lo > 0
    assert value_view(1.0, 1.8, (0.9, 2.1)) is None  # fills 67% of the view: hold still
    assert value_view(1.0, 1.5, (0.9, 2.1)) == pytest.approx((0.95, 1.55))  # 42%: refit
    assert value_view(1.0, 1.2, (0.9, 2.1)) == pytest.approx((0.98, 1.22))  # fills 17%: refit


def _settle(qtbot) -> None:
    qtbot.wait(REDRAW_MS * 3)


def test_step_axis_holds_still_then_jumps_ahead_when_reached(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.set_step_range(10_000)
    vb = plot.loss_plot.getPlotItem().getViewBox()
    moves = []
    vb.sigXRangeChanged.connect(lambda *_: moves.append(1))
    plot.add_points([(10, {"loss": 1.0})])
    _settle(qtbot)
    x0, x1 = vb.viewRange()[0]
    assert x0 <= 0 and 20 <= x1 <= 21  # [0, 20] (+2% padding): the next round bound above 11
    moves.clear()
    for step in range(11, 21):  # several appends inside the bound: the axis holds still
        plot.add_points([(step, {"loss": 1.0})])
        _settle(qtbot)
    assert moves == [] and vb.viewRange()[0] == [x0, x1]
    plot.add_points([(21, {"loss": 1.0})])  # past the bound: one jump, ahead of the data
    _settle(qtbot)
    assert len(moves) == 1 and 50 <= vb.viewRange()[0][1] <= 51


def test_values_expand_at_once_and_shrink_only_when_the_data_shrinks_a_lot(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    vb = plot.loss_plot.getPlotItem().getViewBox()
    plot.add_points([(s, {"loss": 1.0 + 0.1 * (s % 2), "spiky": 1.0}) for s in range(1, 21)])
    _settle(qtbot)
    y0, y1 = vb.viewRange()[1]
    assert y0 < 1.0 and 1.1 < y1 < 1.5
    plot.add_points([(21, {"spiky": 5.0})])  # an outlier: the view takes it in at once
    _settle(qtbot)
    assert vb.viewRange()[1][1] > 5.0
    y_outlier = vb.viewRange()[1]
    plot.add_points([(s, {"loss": 1.05, "spiky": 1.0}) for s in range(22, 30)])
    _settle(qtbot)
    assert vb.viewRange()[1] == y_outlier  # new values inside: the view stays
    spiky = plot.curve_items("spiky")[0]  # (the smoothed curve: the legend entry)
    spiky.setVisible(False)  # (a legend click) the data now spans 1.0-1.1 of a 0.6-5.4 view
    plot._on_legend_clicked(spiky)
    _settle(qtbot)
    y0, y1 = vb.viewRange()[1]
    assert y0 < 1.0 and 1.1 < y1 < 1.5  # shrunk back around what is shown


def test_user_zoom_is_respected_until_auto_range_is_asked_for(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    item = plot.loss_plot.getPlotItem()
    vb = item.getViewBox()
    plot.add_points([(s, {"loss": 1.0}) for s in range(1, 11)])
    _settle(qtbot)
    vb.scaleBy((0.5, 0.5))  # as the mouse wheel does ...
    vb.sigRangeChangedManually.emit([True, True])  # ... and says so
    zoomed = vb.viewRange()
    plot.add_points([(s, {"loss": 9.0}) for s in range(11, 200)])
    _settle(qtbot)
    assert vb.viewRange() == zoomed  # the user's view is left alone
    item.autoBtnClicked()  # "A": pyqtgraph turns its auto-range on; the view is ours again
    assert not any(vb.state["autoRange"])  # (not pyqtgraph's: it would refit on every point)
    (x0, x1), (y0, y1) = vb.viewRange()
    assert x0 <= 1 and x1 >= 199 and y0 < 1.0 and y1 > 9.0  # refitted at once


def test_a_loaded_run_is_fitted_exactly_then_follows_when_it_grows(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    records = [{"step": s, "time": 0.0, "loss": 2.0 - s / 1000} for s in range(10, 1010, 10)]
    plot.load_history(columns(records))
    plot.set_step_range(5000)  # a run stopped at step 1000 of 5000
    _settle(qtbot)
    vb = plot.loss_plot.getPlotItem().getViewBox()
    x0, x1 = vb.viewRange()[0]
    assert x0 == pytest.approx(-20) and x1 == pytest.approx(1020)  # 0-1000, 2% padding
    plot.add_points([(1010, {"loss": 1.0})])  # it trains on: room ahead again
    _settle(qtbot)
    assert vb.viewRange()[0][1] >= 2000
    plot.fit_to_data()  # it ended
    assert vb.viewRange()[0][1] == pytest.approx(1010 * 1.02, rel=1e-3)


def test_log_axes_and_the_lower_group_are_fitted(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.add_points(
        [(s, {"loss": 10.0 ** (-s / 25), "lr": 1e-3, "images_per_s": 0.0}) for s in range(1, 101)]
    )
    _settle(qtbot)
    item = plot.loss_plot.getPlotItem()
    item.setLogMode(x=True, y=True)  # (the plot's context menu)
    _settle(qtbot)
    (x0, x1), (y0, y1) = item.getViewBox().viewRange()  # log10 coordinates
    assert x0 <= 0.0 and 2.0 <= x1 <= 2.5  # steps 1-100 (a round bound ahead)
    assert y0 < -4.0 and -0.1 < y1 < 0.5  # 1e-4 .. 1: every value, none squashed
    plot.set_group("Images/s")  # a group whose only values are 0, on a log axis: positives only
    plot.diag_plot.getPlotItem().setLogMode(y=True)
    _settle(qtbot)
    plot.set_group("Learning rate")
    _settle(qtbot)
    y0, y1 = plot.diag_plot.getPlotItem().getViewBox().viewRange()[1]
    assert y0 < -3.0 < y1  # log10(1e-3), fitted for the group now shown
