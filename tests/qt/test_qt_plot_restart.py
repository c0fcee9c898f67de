"""The metrics plot across runs and workspace switches: a new run reuses the last run's curves
(items, legend entries, the lower plot's group and title) instead of rebuilding them, and the
plots' paints are spread over event-loop turns (docs/performance.md, "GUI stalls")."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from qt_steps import configure_tiny_dcgan

from studio.qt.plot import REDRAW_MS, STAGGER_MS, MetricsPlot
from studio.qt.plot_curves import reusable

NAMES = ["loss_d", "loss_g", "d_real", "grad_norm_d", "diversity", "images_per_s"]


def _run(plot: MetricsPlot, steps: range, offset: float = 0.0) -> None:
    plot.add_points([(s, {n: offset + s / 100 + i for i, n in enumerate(NAMES)}) for s in steps])


def _legend(plot: MetricsPlot, which: str = "loss") -> list[str]:
    item = getattr(plot, f"{which}_plot").getPlotItem()
    return [label.text for _sample, label in item.legend.items]


def test_a_new_run_reuses_the_curves_and_shows_its_own_points_only(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.prepare(NAMES)
    _run(plot, range(10, 210, 10))
    qtbot.wait(REDRAW_MS * 3)
    items = {n: plot.curve_items(n) for n in NAMES}
    assert all(len(v) == 2 for v in items.values())
    assert len(plot.displayed("loss_d")[0]) == 20

    plot.clear(overlays=False, keep=NAMES)  # Start again with the same model
    assert plot.names() == NAMES and plot.point_count() == 0
    for name in NAMES:
        assert plot.curve_items(name) == items[name]  # the same pyqtgraph items
        assert len(plot.displayed(name)[0]) == 0  # nothing of the old run left on screen
    assert _legend(plot) == ["loss_d", "loss_g"]
    plot.prepare(NAMES)  # nothing left to build
    assert not plot._store.pending

    _run(plot, range(5, 25, 5), offset=100.0)
    qtbot.wait(REDRAW_MS * 3)
    steps, values = plot.series("loss_g")
    assert steps.tolist() == [5, 10, 15, 20] and values.min() > 100
    assert plot.displayed("loss_g")[0].max() == 20  # drawn: the new run's points only


def test_the_lower_plots_group_and_title_survive_a_restart(qtbot, monkeypatch) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    _run(plot, range(10, 60, 10))
    plot.set_group("Gradient norm")
    titles: list[str] = []
    item = plot.diag_plot.getPlotItem()
    monkeypatch.setattr(item, "setTitle", lambda text=None, **_kw: titles.append(text))

    plot.clear(overlays=False, keep=NAMES)
    _run(plot, range(10, 30, 10))
    qtbot.wait(REDRAW_MS * 3)
    assert plot.current_group() == "Gradient norm" and plot.group_box.currentText() == (
        "Gradient norm"
    )
    assert titles == []  # never switched away and back
    assert plot.curve_items("grad_norm_d")[0].isVisible()

    plot.clear(overlays=False)  # no new run's names (a run being opened): everything goes
    assert plot.names() == [] and plot.current_group() == ""


def test_curves_the_new_run_does_not_log_go_and_the_legends_keep_a_fresh_order(qtbot) -> None:
    assert reusable(["loss_d", "loss_g", "d_real"], ["loss_d", "loss_x", "d_real"]) == {
        "loss_d",
        "d_real",
    }
    assert reusable(["loss_d", "loss_g"], ["loss_g", "loss_d"]) == set()  # order differs
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.prepare(["loss_d", "loss_g", "d_real"])
    _run(plot, range(10, 30, 10))
    kept = plot.curve_items("loss_g")
    new = ["loss_g", "loss_x", "d_real"]
    plot.clear(overlays=False, keep=new)  # (as Start does: clear, then prepare)
    plot.prepare(new)
    assert plot.names() == ["d_real", "loss_g", "loss_x"]  # d_real kept, the others queued
    qtbot.waitUntil(lambda: not plot._store.pending, timeout=2000)
    assert plot.curve_items("loss_d") == []  # not logged by the new run: gone
    assert plot.curve_items("loss_g") != kept  # "loss_x" comes first in the new legend...
    assert _legend(plot) == ["loss_g", "loss_x"]  # ... so loss_g was rebuilt after it


def test_a_curve_hidden_from_the_legend_is_shown_again_in_a_new_run(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    _run(plot, range(10, 30, 10))
    smooth, raw = plot.curve_items("loss_d")
    smooth.setVisible(False)  # (a legend click)
    plot._on_legend_clicked(smooth)
    assert not raw.isVisible()
    plot.clear(overlays=False, keep=NAMES)
    assert plot.curve_items("loss_d") == [smooth, raw]
    assert smooth.isVisible() and raw.isVisible() and plot.is_curve_visible("loss_d")


def test_shown_plots_paint_one_per_turn_after_the_rest(qtbot, monkeypatch) -> None:
    from pyqtgraph.widgets.GraphicsView import GraphicsView

    painted: list[object] = []
    original = GraphicsView.paintEvent

    def spy(view, event):
        painted.append(view)
        return original(view, event)

    monkeypatch.setattr(GraphicsView, "paintEvent", spy)
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.resize(600, 500)
    plot.show()
    qtbot.waitExposed(plot)
    assert plot._held == [plot.loss_plot, plot.diag_plot]
    assert painted == []  # the frame painted without them (their background only)
    qtbot.waitUntil(lambda: not plot._held, timeout=2000)
    qtbot.wait(STAGGER_MS * 4)
    # Each plot painted once, the top one first: its axes were sized before it was shown,
    # so no second paint after measuring the tick labels.
    assert painted == [plot.loss_plot, plot.diag_plot]


def test_fitting_both_views_moves_one_plot_per_turn(qtbot) -> None:
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    _run(plot, range(10, 110, 10))
    plot.set_group("Diagnostics")
    qtbot.wait(REDRAW_MS * 3)
    moved: list[str] = []
    for name in ("loss", "diag"):
        vb = getattr(plot, f"{name}_plot").getPlotItem().getViewBox()
        vb.sigXRangeChanged.connect(lambda *_a, n=name: moved.append(n))
    plot.fit_to_data()  # the run ended: both views fit their data exactly
    assert moved == ["loss"]
    qtbot.waitUntil(lambda: moved == ["loss", "diag"], timeout=1000)
    assert plot.diag_plot.getPlotItem().getViewBox().viewRange()[0][1] == pytest.approx(
        100 * 1.02, rel=1e-3
    )


def test_a_second_start_reuses_the_first_runs_curves(qtbot, trainable_window) -> None:
    win = trainable_window
    panel = win.train_panel
    plot = panel.view.plot
    configure_tiny_dcgan(win, steps=6, log_every=2, sample_every=6)
    with qtbot.waitSignal(win.runner.job_finished, timeout=60_000):
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    first_run = panel.run_path
    assert plot.series("loss_d")[0].tolist() == [2, 4, 6]
    plot.set_group("Gradient norm")
    items = {n: plot.curve_items(n) for n in ("loss_d", "loss_g", "d_real", "images_per_s")}

    configure_tiny_dcgan(win, steps=4, log_every=2, sample_every=4)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert panel.is_training() and not panel.start_button.isEnabled()  # at once
    assert panel.run_path != first_run
    for name, before in items.items():
        assert plot.curve_items(name) == before  # reused, not rebuilt
    assert plot.point_count() == 0  # the first run's points are gone at once
    assert plot.current_group() == "Gradient norm"
    with qtbot.waitSignal(win.runner.job_finished, timeout=60_000):
        pass
    assert plot.series("loss_d")[0].tolist() == [2, 4]  # the second run's only


def test_wider_value_labels_resize_the_axis_before_the_paint_not_after(qtbot, monkeypatch) -> None:
    from pyqtgraph.widgets.GraphicsView import GraphicsView

    painted: list[tuple[object, bool]] = []  # (plot, most of its viewport?)
    original = GraphicsView.paintEvent

    def spy(view, event):
        r, v = event.rect(), view.viewport().rect()
        painted.append((view, r.width() * r.height() > 0.5 * v.width() * v.height()))
        return original(view, event)

    monkeypatch.setattr(GraphicsView, "paintEvent", spy)
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.resize(600, 500)
    plot.show()
    plot.add_points([(s, {"loss": 0.5}) for s in range(1, 11)])
    qtbot.waitUntil(lambda: not plot._held, timeout=2000)
    qtbot.wait(REDRAW_MS * 3)
    axis = plot.loss_plot.getPlotItem().getAxis("left")
    narrow = axis.width()
    painted.clear()
    plot.add_points([(11, {"loss": 123_456.0})])  # much wider value labels
    qtbot.wait(REDRAW_MS * 4)
    assert axis.width() > narrow + 10
    # One full paint, already at the new layout (then at most the curves' area again: they
    # are redrawn for the narrower view); not a paint, a relayout and a second full paint.
    assert [p for p, large in painted if large] == [plot.loss_plot]
    assert {p for p, _ in painted} == {plot.loss_plot}


def test_a_new_run_is_announced_once_it_trains_not_in_the_start_click(
    qtbot, trainable_window
) -> None:
    win = trainable_window
    panel = win.train_panel
    configure_tiny_dcgan(win, steps=4, log_every=2, sample_every=4)
    announced: list[str] = []
    panel.run_changed.connect(announced.append)
    with qtbot.waitSignal(win.runner.job_finished, timeout=60_000):
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        assert announced == []  # its folder is still empty: nothing for the Canvas to read
    assert panel.run_path is not None and announced == [str(panel.run_path)]
    inpaint = win.canvas.inpaint_panel
    qtbot.waitUntil(lambda: not inpaint.family_label.text().startswith("Reading"), timeout=20_000)
    assert inpaint.banner.text() == ""  # the Canvas took the run, no "not a run folder" error
    assert "DCGAN" in inpaint.family_label.text()
