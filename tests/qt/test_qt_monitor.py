"""Following a growing run folder: the metrics tail, the sample timeline, overlaid runs."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from qt_steps import make_metrics_run

from studio.core import atomic
from studio.engine.runs import RunFolder, TrainConfig
from studio.qt.run_view import RunView
from studio.qt.run_watch import poll_run

COLOURS = {10: (255, 0, 0), 20: (0, 255, 0), 30: (0, 0, 255), 40: (255, 255, 0)}


def _write_grid(run: RunFolder, step: int) -> None:
    run.samples_dir.mkdir(exist_ok=True)
    pixels = np.zeros((12, 12, 3), np.uint8)
    pixels[:] = COLOURS[step]
    with atomic.atomic_path(run.samples_dir / f"step_{step:08d}.png") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def _pixel(view: RunView) -> tuple[int, int, int]:
    colour = view.grid.image().pixelColor(5, 5)
    return colour.red(), colour.green(), colour.blue()


def _fast_view(qtbot) -> RunView:
    view = RunView()
    qtbot.addWidget(view)
    view.watcher.set_interval(30)
    return view


def test_the_watcher_tails_a_metrics_file_another_thread_writes(qtbot, tmp_path: Path) -> None:
    run = make_metrics_run(tmp_path / "run", records=5)
    view = _fast_view(qtbot)
    view.watch(run.path)
    qtbot.waitUntil(lambda: view.plot.point_count() == 5, timeout=5000)

    def writer() -> None:  # a training process elsewhere, appending line by line
        for s in range(6, 61):
            run.append_metrics([{"step": s, "time": 0.0, "loss_d": float(s), "lr": 0.1}])
            time.sleep(0.004)

    thread = threading.Thread(target=writer)
    thread.start()
    qtbot.waitUntil(lambda: view.plot.series("loss_d")[0].size == 60, timeout=10_000)
    thread.join()
    x, y = view.plot.series("loss_d")
    assert x.tolist() == list(range(1, 61)) and y.tolist() == [float(s) for s in range(1, 61)]
    assert view.plot.series("lr")[0].size == 55

    # A resume elsewhere rewrites the file without the lines after its checkpoint: reload.
    atomic.write_text(
        run.metrics_path,
        "".join(json.dumps({"step": s, "loss_d": -1.0}) + "\n" for s in range(1, 4)),
    )
    qtbot.waitUntil(lambda: view.plot.series("loss_d")[0].size == 3, timeout=5000)
    assert view.plot.series("loss_d")[1].tolist() == [-1.0, -1.0, -1.0]
    assert "rewritten" in "\n".join(view.log_lines())
    view.stop_watching()


def test_poll_rereads_a_truncated_file_and_keeps_half_lines(tmp_path: Path) -> None:
    run = make_metrics_run(tmp_path / "run", records=3)
    first = poll_run(run.path, 0, None)
    assert first.cols["loss_d"][0].tolist() == [1.0, 2.0, 3.0] and not first.reset
    with open(run.metrics_path, "a", encoding="utf-8") as fh:
        fh.write('{"step": 4, "loss')  # a line still being written
    half = poll_run(run.path, first.offset, first.identity)
    assert half.cols == {} and half.offset == first.offset
    run.metrics_path.write_text('{"step": 1, "loss_d": 7.0}\n', encoding="utf-8")  # shrank
    again = poll_run(run.path, first.offset, first.identity)
    assert again.reset and again.cols["loss_d"][1].tolist() == [7.0]


def test_timeline_scrubs_to_the_chosen_step_and_live_snaps_to_newest(qtbot, tmp_path: Path) -> None:
    run = make_metrics_run(tmp_path / "run", records=3)
    for step in (10, 20, 30):
        _write_grid(run, step)
    view = _fast_view(qtbot)
    timeline = view.timeline
    view.watch(run.path)
    qtbot.waitUntil(lambda: timeline.current_step() == 30, timeout=5000)
    assert timeline.steps() == [10, 20, 30] and timeline.is_live()
    assert _pixel(view) == COLOURS[30] and view.grid_caption.text() == "Samples at step 30"

    timeline.slider.setValue(0)  # scrub back: decoded on the worker thread
    qtbot.waitUntil(lambda: timeline.current_step() == 10, timeout=5000)
    assert _pixel(view) == COLOURS[10] and view.grid_caption.text() == "Samples at step 10"
    assert not timeline.is_live() and not timeline.live_button.isChecked()

    _write_grid(run, 40)  # a new grid arrives while the user looks at an old one
    qtbot.waitUntil(lambda: timeline.steps() == [10, 20, 30, 40], timeout=5000)
    qtbot.wait(100)
    assert timeline.current_step() == 10 and _pixel(view) == COLOURS[10]
    timeline.live_button.click()
    qtbot.waitUntil(lambda: timeline.current_step() == 40, timeout=5000)
    assert _pixel(view) == COLOURS[40] and timeline.slider.value() == 3

    for index in (2, 0, 1, 0, 2, 1):  # a fast drag: the last position wins
        timeline.slider.setValue(index)
    qtbot.waitUntil(lambda: timeline.current_step() == 20, timeout=5000)
    qtbot.wait(100)
    assert timeline.current_step() == 20 and _pixel(view) == COLOURS[20]


def test_live_grids_from_the_job_join_the_timeline(qtbot) -> None:
    view = RunView()
    qtbot.addWidget(view)
    for step, colour in COLOURS.items():
        view.show_grid(np.full((8, 8, 3), colour, np.uint8), step)
    assert view.timeline.steps() == [10, 20, 30, 40] and _pixel(view) == COLOURS[40]
    view.timeline.show_step(20)  # in memory: shown at once, no file needed
    assert _pixel(view) == COLOURS[20] and view.grid_caption.text() == "Samples at step 20"
    view.clear()
    assert view.timeline.steps() == [] and view.grid.image().isNull()


def test_overlay_runs_add_a_curve_per_run(qtbot, studio_home: Path) -> None:
    runs = studio_home / "runs"
    mine = make_metrics_run(runs / "mine", records=10)
    other = make_metrics_run(runs / "other", records=20)
    other.append_metrics([{"step": 20, "diversity": 0.5}])
    view = RunView()
    qtbot.addWidget(view)
    view.watch(mine.path)
    qtbot.waitUntil(lambda: view.plot.point_count() == 10, timeout=5000)

    picker = view.choose_overlays()  # the run list is read off the GUI thread
    qtbot.waitUntil(lambda: picker.runs.count() > 0, timeout=15_000)
    labels = [picker.runs.item(i).text() for i in range(picker.runs.count())]
    assert len(labels) == 1 and labels[0].startswith("other")  # not the run shown
    picker.set_checked(other.path)
    picker.accept()
    qtbot.waitUntil(lambda: view.plot.overlay_runs() == ["other"], timeout=5000)
    assert view.plot.series("loss_d", "other")[0].size == 20
    assert view.plot.series("loss_d")[0].size == 10  # this run's curve is untouched
    qtbot.wait(100)
    names = [c.name() for c in view.plot.loss_plot.getPlotItem().listDataItems() if c.name()]
    assert names == ["loss_d", "loss_d · other"]
    view.apply_overlays([])
    assert view.plot.overlay_runs() == [] and view.overlaid() == {}
    view.stop_watching()


def test_an_opened_run_keeps_updating_while_a_headless_run_writes(qtbot, window, tmp_path) -> None:
    """A run folder synced from elsewhere: opened in the Train workspace, it follows the files."""
    run = make_metrics_run(tmp_path / "synced", steps=200, records=10)
    _write_grid(run, 10)
    panel = window.train_panel
    window.show_workspace(window.TRAIN)
    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000) as blocker:
        panel.open_run(run.path)
    assert blocker.args[1].ok, blocker.args[1].error
    view = panel.view
    view.watcher.set_interval(30)
    assert view.plot.point_count() == 10 and view.timeline.current_step() == 10

    run.append_metrics([{"step": s, "time": 0.0, "loss_d": 0.5} for s in range(11, 31)])
    _write_grid(run, 20)
    qtbot.waitUntil(lambda: view.plot.last_step() == 30, timeout=10_000)
    qtbot.waitUntil(lambda: view.timeline.current_step() == 20, timeout=10_000)
    assert view.plot.series("loss_d")[0].tolist() == list(range(1, 31))  # no repeats
    assert _pixel(view) == COLOURS[20]


def test_monitor_screenshot_of_a_trained_run_with_an_overlay(qtbot, app_settings, tmp_path) -> None:
    """Trains two small runs, opens one later with the other overlaid, scrubs the timeline.

    With ``STUDIO_SCREENSHOT_DIR`` set it trains longer and writes ``train_monitor.png`` there.
    """
    import os

    import pyqtgraph as pg
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    from studio.core.jobs import CancelToken, run_sync
    from studio.core.paths import runs_dir
    from studio.engine.demo import make_demo_dataset
    from studio.engine.train import train_job
    from studio.qt.main_window import MainWindow
    from studio.qt.theme import apply_theme

    docs_dir = os.environ.get("STUDIO_SCREENSHOT_DIR")
    steps = 700 if docs_dir else 12
    data = run_sync(make_demo_dataset(tmp_path / "shapes", count=240, size=32)).result
    runs = {}
    for name, lr_d in (("dcgan_base", 2e-4), ("dcgan_fast_d", 8e-4)):
        cfg = TrainConfig(
            family="gan.dcgan", data=str(data), resolution=32, batch_size=32, steps=steps,
            sample_every=max(2, steps // 10), log_every=2, checkpoint_every=10_000, samples=36,
            device="cpu", model={"latent_dim": 32, "width": 32, "lr_d": lr_d},
        )  # fmt: skip
        out = run_sync(train_job(runs_dir() / name, CancelToken(), cfg))
        assert out.ok, out.error
        runs[name] = runs_dir() / name

    app = QApplication.instance()
    saved = (app.style().name(), QPalette(app.palette()), app.styleSheet(), dict(pg.CONFIG_OPTIONS))
    apply_theme(app)
    try:
        win = MainWindow(app_settings)
        qtbot.addWidget(win)
        win.resize(1360, 860)
        win.show()
        qtbot.waitUntil(win.train_panel.families_loaded, timeout=60_000)
        win.show_workspace(win.TRAIN)
        panel = win.train_panel
        with qtbot.waitSignal(win.runner.job_finished, timeout=30_000):
            panel.open_run(runs["dcgan_base"])
        view = panel.view
        view.apply_overlays([runs["dcgan_fast_d"]])
        qtbot.waitUntil(lambda: view.plot.overlay_runs() == ["dcgan_fast_d"], timeout=10_000)
        assert {"Diagnostics", "Images/s", "Memory (MiB)"} <= set(view.plot.groups())
        view.plot.set_group("Diagnostics")
        qtbot.waitUntil(lambda: len(view.timeline.steps()) >= 5, timeout=10_000)
        middle = view.timeline.steps()[len(view.timeline.steps()) // 2]
        view.timeline.show_step(middle)  # scrubbed back: decoded off the GUI thread
        qtbot.waitUntil(lambda: view.timeline.current_step() == middle, timeout=10_000)
        qtbot.wait(300)  # the plots' redraw timer
        assert not view.timeline.is_live()
        assert view.plot.series("loss_d", "dcgan_fast_d")[0].size == steps // 2
        shot = win.grab()
        assert not shot.isNull()
        if docs_dir:
            assert shot.save(str(Path(docs_dir) / "train_monitor.png"))
        win.close()
    finally:
        style, palette, sheet, options = saved
        app.setStyleSheet(sheet)
        app.setStyle(style)
        app.setPalette(palette)
        pg.setConfigOptions(**options)


def test_a_familys_extra_images_show_in_a_tab_beside_the_samples(qtbot, tmp_path: Path) -> None:
    """An RBM run writes its learned filters as samples/filters.png (the family's
    extra_images): the run view shows them in a "Filters" tab, and follows a rewrite."""
    from helpers import make_tiny_dataset, train_tiny_run

    data = make_tiny_dataset(tmp_path / "data", n=16, size=16)
    run = train_tiny_run(tmp_path / "rbm", "ebm.rbm", data, steps=4, sample_every=2)
    filters = run / "samples" / "filters.png"
    assert filters.is_file()
    (run / "samples" / "notes.png").symlink_to(filters)  # a link is not the trainer's file
    view = _fast_view(qtbot)
    view.resize(900, 600)
    view.show()
    tabs = view.sample_tabs
    assert tabs.tabBar().isHidden()  # nothing but samples yet
    view.watch(run)
    qtbot.waitUntil(lambda: "filters" in tabs.pages, timeout=5000)
    page = tabs.pages["filters"]
    assert list(tabs.pages) == ["filters"] and tabs.tabText(tabs.indexOf(page)) == "Filters"
    qtbot.waitUntil(lambda: not page.view.image().isNull(), timeout=5000)
    with Image.open(filters) as img:
        assert (page.view.image().width(), page.view.image().height()) == img.size
    assert not tabs.tabBar().isHidden()
    tabs.setCurrentWidget(page)
    shots = Path(os.environ.get("STUDIO_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    assert view.grab().save(str(shots / "run_view_filters.png"))

    shown = page.view.generation  # the trainer rewrites it at the next sample step
    with atomic.atomic_path(filters) as tmp:
        Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp, format="PNG")
    qtbot.waitUntil(lambda: page.view.generation > shown, timeout=5000)
    assert page.view.image().width() == 30
    (run / "samples" / "weights.png").write_bytes(b"not a png")  # damaged: said, not shown
    qtbot.waitUntil(lambda: "could not be read" in _caption(tabs, "weights"), timeout=5000)
    assert tabs.pages["weights"].view.image().isNull()
    filters.unlink()  # gone from disk: its tab goes
    (run / "samples" / "weights.png").unlink()
    qtbot.waitUntil(lambda: not tabs.pages, timeout=5000)
    assert tabs.count() == 1 and tabs.tabBar().isHidden()


def _caption(tabs, name: str) -> str:
    page = tabs.pages.get(name)
    return page.caption.text() if page is not None else ""
