"""Runs by name: Rename… writes the name into config.json (the folder keeps its name), the
recent-runs menus read "name — family, dataset, step N", and a recent run picked while the
models still load opens once they are loaded."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtWidgets import QInputDialog


def fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    config = {
        "family": "gan.dcgan",
        "train": {"family": "gan.dcgan", "steps": 60, "data": "/data/shapes"},
        "model": {"latent_dim": 8},
        "dataset": {"path": "/data/shapes"},
        "extra": {"kept": [1, 2]},
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "metrics.jsonl").write_text('{"step": 10, "time": 0, "loss_d": 1.0}\n')
    return folder


def test_a_recent_run_picked_while_models_load_opens_once_they_are_loaded(
    qtbot, app_settings, tmp_path
) -> None:
    from studio.qt.main_window import MainWindow

    run = fake_run(tmp_path / "vae-conv-1")
    win = MainWindow(app_settings)
    qtbot.addWidget(win)
    win.close_timeout_ms = 20_000
    panel = win.train_panel
    assert not panel.families_loaded()  # the listing job's answer has not arrived yet
    win._open_recent_run(str(run))
    assert "once the models are loaded" in panel.view.run_label.text()
    qtbot.waitUntil(lambda: panel.run_path == run, timeout=60_000)
    assert panel.picker.current_key() == "gan.dcgan"
    assert panel.model_form.values()["latent_dim"] == 8


def test_rename_names_the_run_in_its_config_and_the_menus(
    qtbot, window, tmp_path, monkeypatch
) -> None:
    from studio.qt.run_names import run_labels

    run = fake_run(tmp_path / "gan-dcgan-20260101")
    panel = window.train_panel
    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000):
        panel.open_run(run)
    assert panel.rename_button.isEnabled()
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("  Blue   shapes ", True))
    with qtbot.waitSignal(run_labels().changed, timeout=10_000):
        panel.rename_button.rename()
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["name"] == "Blue shapes"
    assert config["extra"] == {"kept": [1, 2]} and config["model"] == {"latent_dim": 8}
    assert run.is_dir() and (run / "config.json").is_file()  # the folder keeps its name
    assert panel.view.run_label.text() == "Blue shapes  (gan-dcgan-20260101)"
    menu = window.recent_runs_menu
    menu.aboutToShow.emit()
    texts = [a.text() for a in menu.actions()]
    assert "Blue shapes — DCGAN, shapes, step 0" in texts
    panel.recent_menu.aboutToShow.emit()
    assert "Blue shapes — DCGAN, shapes, step 0" in [a.text() for a in panel.recent_menu.actions()]
    header = window.latent_workspace.header  # Explore's menu too
    header.fill_recent_menu()
    assert "Blue shapes — DCGAN, shapes, step 0" in [a.text() for a in header.recent_menu.actions()]
    window.grab().save(str(tmp_path / "renamed.png"))
