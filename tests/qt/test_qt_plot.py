"""MetricsPlot: appends only, redraws on a timer, splits losses from diagnostics."""

from __future__ import annotations

import numpy as np

from studio.qt.plot import REDRAW_MS, MetricsPlot, colour_for


def test_points_accumulate_and_redraw_once_per_tick(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    for step in range(1, 3001):  # many small batches, as the engine delivers them
        plot.add_points([(step, {"loss_d": 1.0 / step, "loss_g": 2.0, "time": 123.0})])
    calls = []
    curve = plot._curves["loss_d"]
    original = curve.setData
    curve.setData = lambda *a, **k: (calls.append(1), original(*a, **k))
    qtbot.wait(REDRAW_MS * 4)
    assert len(calls) == 1  # one redraw for 3000 appends
    x, y = plot.series("loss_d")
    assert x.tolist() == list(range(1, 3001))
    assert y[-1] == 1.0 / 3000
    assert "time" not in plot.names()  # bookkeeping fields are not plotted
    xd, yd = curve.getData()
    assert len(xd) == 3000 and xd[-1] == 3000
    qtbot.wait(REDRAW_MS * 3)
    assert len(calls) == 1  # nothing new, nothing redrawn


def test_losses_and_diagnostics_go_to_their_own_plots(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.add_points([(10, {"loss_d": 1.0, "d_real": 0.7, "diversity": 0.9, "grad_norm_d": 3.0})])
    loss_items = plot.loss_plot.getPlotItem().listDataItems()
    diag_items = plot.diag_plot.getPlotItem().listDataItems()
    assert [c.name() for c in loss_items] == ["loss_d"]
    assert {c.name() for c in diag_items} == {"d_real", "diversity", "grad_norm_d"}
    assert plot.is_curve_visible("d_real")
    assert not plot.is_curve_visible("grad_norm_d")  # off until clicked in the legend
    assert colour_for("loss_d") == colour_for("loss_d")
    assert colour_for("some_new_loss") == colour_for("some_new_loss")
    assert colour_for("loss_d") != colour_for("loss_g")


def test_history_then_live_points_continue_the_curve(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    records = [{"step": s, "time": 0.0, "loss_g": float(s)} for s in range(10, 110, 10)]
    records.append({"step": 100, "time": 0.0, "diversity": 0.5})
    plot.load_history(records)
    assert plot.last_step() == 100
    plot.truncate_after(80)  # a resume from the step-80 checkpoint drops what came after
    assert plot.series("loss_g")[0].tolist() == [10, 20, 30, 40, 50, 60, 70, 80]
    assert plot.series("diversity")[0].size == 0
    plot.add_points([(90, {"loss_g": -1.0})])
    x, y = plot.series("loss_g")
    assert x[-2:].tolist() == [80, 90] and y[-1] == -1.0
    plot.clear()
    assert plot.names() == [] and plot.point_count() == 0
    assert plot.loss_plot.getPlotItem().listDataItems() == []


def test_buffers_grow_without_losing_points(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    steps = np.arange(50_000)
    plot.add_points((int(s), {"loss": float(s) * 0.5}) for s in steps)
    x, y = plot.series("loss")
    np.testing.assert_array_equal(x, steps)
    np.testing.assert_array_equal(y, steps * 0.5)


def test_every_family_metric_lands_somewhere_sensible() -> None:
    from studio.qt.plot import hidden_at_start, is_diagnostic

    for name in ("loss", "loss_d", "recon", "kl", "bpd", "gp", "wasserstein", "commit", "mse"):
        assert not is_diagnostic(name), name  # losses, known or not, on the main plot
    for name in ("diversity", "d_real", "usage"):
        assert is_diagnostic(name) and not hidden_at_start(name), name
    for name in ("grad_norm", "grad_norm_g", "kl_dim_03", "perplexity", "logdet"):
        assert is_diagnostic(name) and hidden_at_start(name), name


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
