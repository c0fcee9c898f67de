"""A restart gives back what the artist left: folder, resolution, family and settings, layout,
each workspace's last state; and the Train header says which dataset Start will use."""

from __future__ import annotations

from PIL import Image
from qt_steps import load_dataset, make_metrics_run

from studio.qt.settings import AppSettings


def _restart(qtbot, old, *, wait_families: bool = True):
    """Close ``old`` (it saves its settings) and build a new window on the same QSettings."""
    from studio.qt.main_window import MainWindow

    assert old.close()
    win = MainWindow(AppSettings())
    qtbot.addWidget(win)
    win.close_timeout_ms = 20_000
    win.show()
    if wait_families:
        qtbot.waitUntil(win.train_panel.families_loaded, timeout=60_000)
    return win


def _vertical_splitter(widget):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QSplitter

    found = widget.findChildren(QSplitter)
    return next(s for s in found if s.orientation() == Qt.Orientation.Vertical)


def test_the_train_header_names_the_dataset_start_will_use(qtbot, window, tiny_dataset) -> None:
    panel = window.train_panel
    assert "none chosen" in panel.dataset_label.text()
    assert "Start needs a folder" in panel.dataset_label.text()
    assert load_dataset(qtbot, window, tiny_dataset) == 32
    assert panel.dataset_label.text() == "Dataset: tiny · 32 images · 32 px"
    assert panel.dataset_label.toolTip() == str(tiny_dataset)
    window.dataset_panel.resolution_combo.setCurrentIndex(1)  # 64 px
    assert panel.dataset_label.text() == "Dataset: tiny · 32 images · 64 px"
    window.show_workspace(window.TRAIN)
    window.grab().save(str(tiny_dataset.parent / "train_header.png"))


def test_a_restart_gives_back_every_choice(qtbot, window, tiny_dataset, tmp_path) -> None:
    # What the artist chose before closing.
    assert load_dataset(qtbot, window, tiny_dataset) == 32
    data = window.dataset_panel
    data.resolution_combo.setCurrentIndex(1)  # 64 px
    data.flip_check.setChecked(False)
    train = window.train_panel
    assert train.picker.set_current_key("gan.dcgan")
    train.model_form.set_values({"latent_dim": 8, "width": 8})
    train.options_form.set_values({"steps": 123, "batch_size": 8})
    picture = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(picture)
    window.canvas.open_image(picture)
    qtbot.waitUntil(lambda: window.canvas.document is not None, timeout=20_000)
    run = make_metrics_run(tmp_path / "runs" / "compared", records=3)
    window.compare_panel.add_run(run.path)
    window._compare_loaded = True  # (the Compare page was looked at: its runs are kept)
    window.settings.set_explore_run(run.path)  # (as a run explored and closed leaves it)
    window.show_workspace(window.TRAIN)
    split = _vertical_splitter(train)  # the run view's samples over its log
    before, total = split.sizes()[0], sum(split.sizes())
    split.setSizes([total // 2, total - total // 2])
    top = split.sizes()[0]
    assert abs(top - before) > 60  # a real change from the default

    win = _restart(qtbot, window)

    assert win.stack.currentIndex() == win.TRAIN
    assert win.dataset_panel.folder == str(tiny_dataset)  # rescanned on the scan lane
    qtbot.waitUntil(lambda: win.dataset_panel.n_images == 32, timeout=30_000)
    assert win.dataset_panel.resolution == 64
    assert not win.dataset_panel.flip
    panel = win.train_panel
    assert panel.dataset_label.text() == "Dataset: tiny · 32 images · 64 px"
    assert panel.start_button.isEnabled()
    assert panel.picker.current_key() == "gan.dcgan"
    assert panel.model_form.values()["latent_dim"] == 8
    assert panel.model_form.values()["width"] == 8
    assert panel.options_form.values()["steps"] == 123
    assert panel.options_form.values()["batch_size"] == 8
    split = _vertical_splitter(panel)
    qtbot.waitUntil(lambda: abs(split.sizes()[0] - top) <= 20, timeout=5_000)
    qtbot.waitUntil(lambda: win.canvas.document is not None, timeout=20_000)
    assert win.canvas.document.source_path == str(picture)
    win.show_workspace(win.COMPARE)
    assert win.compare_panel.runs() == [run.path]
    explored: list = []
    win.latent_workspace.set_run = explored.append  # (loading a model is Explore's own test)
    win.show_workspace(win.EXPLORE)
    assert explored == [run.path]


def test_what_is_gone_is_reported_not_crashed_on(qtbot, app_settings, tmp_path) -> None:
    from studio.qt.main_window import MainWindow

    gone = tmp_path / "photos-on-a-usb-stick"
    app_settings.set_last_folder(gone)
    app_settings.set_last_canvas_image(tmp_path / "gone.png")
    app_settings.set_compare_runs([str(tmp_path / "runs" / "deleted-run")])
    app_settings.set_explore_run(tmp_path / "runs" / "explored-run")
    app_settings.set_workspace(99)  # from a version with more workspaces
    app_settings.sync()
    win = MainWindow(AppSettings())
    qtbot.addWidget(win)
    win.close_timeout_ms = 20_000
    win.show()
    data = win.dataset_panel
    assert win.stack.currentIndex() == win.DATASET
    assert not data.is_busy()  # no scan of a missing folder
    assert data.folder_label.text() == f"Last used: {gone} (not found)"
    assert "no longer exists" in data.banner.text()
    assert data.rescan_button.isVisible()
    assert "none chosen" in win.train_panel.dataset_label.text()
    qtbot.waitUntil(lambda: "no longer there" in win.canvas.banner.text(), timeout=5_000)
    assert win.canvas.document is None
    win.show_workspace(win.EXPLORE)
    assert "explored-run" in win.latent_workspace.banner.text()
    win.show_workspace(win.COMPARE)
    assert "deleted-run" in win.compare_panel.banner.text()
    # Once the folder is back, Scan scans it.
    (gone / "a").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(gone / "a" / f"{i}.png")
    with qtbot.waitSignal(data.dataset_changed, timeout=30_000) as blocker:
        data.rescan_button.click()
    assert blocker.args == [str(gone), 3]
    assert not data.rescan_button.isVisible()


def test_settings_saved_by_another_version_are_ignored_where_they_no_longer_fit(
    qtbot, app_settings
) -> None:
    app_settings.set_last_family("gan.dcgan")
    app_settings.set_family_settings("gan.dcgan", {"latent_dim": "lots", "width": 8, "gone": 1})
    app_settings.set_train_options({"steps": 77, "batch_size": 2.5})
    app_settings.sync()
    from studio.qt.main_window import MainWindow

    win = MainWindow(AppSettings())
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(win.train_panel.families_loaded, timeout=60_000)
    panel = win.train_panel
    assert panel.picker.current_key() == "gan.dcgan"
    values = panel.model_form.values()
    assert values["width"] == 8
    assert isinstance(values["latent_dim"], int)  # the default, not "lots"
    assert panel.options_form.values()["steps"] == 77
    assert isinstance(panel.options_form.values()["batch_size"], int)
