"""Training from the window: live plots and samples, pause, resume, stop, close, reopen."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from qt_steps import configure_tiny_dcgan, load_dataset

from studio.core.jobs import Status
from studio.engine.checkpoint import latest_checkpoint
from studio.engine.runs import RunFolder


def _checkpoint_step(run: Path) -> int | None:
    latest = latest_checkpoint(run / "state")
    return int(latest.name.removeprefix("step_")) if latest else None


def test_train_pause_resume_stop(qtbot, trainable_window) -> None:
    win = trainable_window
    panel = win.train_panel
    plot, grid = panel.view.plot, panel.view.grid
    assert panel.start_button.isEnabled()
    assert not panel.pause_button.isEnabled() and not panel.stop_button.isEnabled()

    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert panel.is_training()
    assert not panel.start_button.isEnabled() and not panel.open_button.isEnabled()
    assert panel.stop_button.isEnabled() and panel.pause_button.isEnabled()
    run = panel.run_path
    assert run is not None and run.parent == Path(os.environ["STUDIO_HOME"]) / "runs"

    qtbot.waitUntil(lambda: plot.point_count() >= 10, timeout=60_000)
    assert {"loss_d", "loss_g"} <= set(plot.names())
    qtbot.waitUntil(lambda: grid.generation >= 2, timeout=30_000)  # the grid changes
    first = grid.image().copy()
    qtbot.waitUntil(lambda: grid.image() != first, timeout=30_000)
    assert grid.image().width() > 32  # a grid of samples, not one image
    assert "Step" in panel.view.status_label.text()

    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "paused" in panel.view.status_label.text(), timeout=20_000)
    assert panel.resume_button.isEnabled() and not panel.pause_button.isEnabled()
    qtbot.wait(150)  # let reports already on their way arrive
    frozen = plot.point_count()
    qtbot.wait(400)
    assert plot.point_count() == frozen  # nothing trains while paused

    qtbot.mouseClick(panel.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: plot.point_count() > frozen + 4, timeout=30_000)

    with qtbot.waitSignal(win.runner.job_finished, timeout=60_000) as blocker:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
        assert not panel.stop_button.isEnabled()
    outcome = blocker.args[1]
    assert outcome.status is Status.FINISHED and outcome.result.stopped_early
    step = outcome.result.step
    assert _checkpoint_step(run) == step  # stopping kept the work
    assert (run / "model" / "model.safetensors").is_file()
    log = "\n".join(panel.view.log_lines())
    assert f"Checkpoint saved at step {step}" in log
    assert f"Stopped at step {step:,}" in log
    assert panel.start_button.isEnabled() and panel.resume_button.isEnabled()
    assert not panel.stop_button.isEnabled()
    assert win.settings.recent_runs()[0] == str(run)


def test_closing_the_window_mid_training_saves_and_exits_cleanly(qtbot, trainable_window) -> None:
    win = trainable_window
    panel = win.train_panel
    panel.start()
    run = panel.run_path
    qtbot.waitUntil(lambda: panel.view.plot.point_count() >= 4, timeout=60_000)
    assert win.close()
    assert not win.isVisible()
    assert not win.runner.engine.isRunning()  # no thread left behind
    step = _checkpoint_step(run)
    assert step is not None and step > 0
    records, _ = RunFolder(run).read_metrics()
    assert max(r["step"] for r in records) <= step


def test_closing_mid_training_asks_first_and_no_keeps_training(
    qtbot, trainable_window, monkeypatch
) -> None:
    from PySide6.QtWidgets import QMessageBox

    win = trainable_window
    panel = win.train_panel
    asked: list[str] = []
    answers = iter([QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes])

    def question(_parent, _title, text, *_a, **_k):
        asked.append(text)
        return next(answers)

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    win.ask_before_quitting = True  # (conftest turns the question off for every other test)
    panel.start()
    run = panel.run_path
    qtbot.waitUntil(lambda: panel.view.plot.point_count() >= 2, timeout=60_000)
    assert not win.close()  # "No": the window stays and the run goes on
    assert asked == ["Training is running: stop it (a checkpoint is saved) and quit?"]
    assert win.isVisible() and panel.is_training()
    assert win.close()  # "Yes": stopped with a checkpoint, then closed
    assert len(asked) == 2 and not win.runner.engine.isRunning()
    assert _checkpoint_step(run)


def test_reopen_a_run_and_resume_it(qtbot, window, tiny_dataset: Path) -> None:
    assert load_dataset(qtbot, window, tiny_dataset) == 32
    window.show_workspace(window.TRAIN)
    configure_tiny_dcgan(window, steps=20, sample_every=10, log_every=2)
    panel = window.train_panel
    panel.options_form.set_values({"lr_schedule": "cosine", "warmup_steps": 4, "precision": "fp32"})
    with qtbot.waitSignal(window.runner.job_finished, timeout=60_000) as blocker:
        panel.start()
    assert blocker.args[1].ok and not blocker.args[1].result.stopped_early
    run = panel.run_path
    train = RunFolder(run).read_config()["train"]  # the form's options reached the trainer
    assert train["lr_schedule"] == "cosine" and train["warmup_steps"] == 4
    assert train["precision"] == "fp32"
    lrs = [r[k] for r in RunFolder(run).read_metrics()[0] for k in r if k.startswith("lr")]
    assert lrs and lrs[-1] < max(lrs)  # warmed up, then decayed
    panel.view.clear()  # forget what the live run showed
    assert panel.view.plot.point_count() == 0

    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000):
        panel.open_run(run)
    plot = panel.view.plot
    stored, _ = RunFolder(run).read_metrics()
    x, y = plot.series("loss_g")
    expected = [(r["step"], r["loss_g"]) for r in stored if "loss_g" in r]
    assert list(zip(x.tolist(), y.tolist())) == expected
    assert plot.last_step() == 20
    assert panel.view.grid.generation >= 1  # the newest stored sample grid is shown
    assert panel.view.grid_caption.text() == "Samples at step 20"
    assert "Step 20 / 20 (finished)" in panel.view.status_label.text()
    assert panel.picker.current_key() == "gan.dcgan"
    assert panel.model_form.values()["latent_dim"] == 8  # the run's own settings

    panel.resume()  # Steps still says 20: nothing to do, and the panel says so
    assert "Raise Steps" in panel.view.banner.text() and not panel.is_training()

    panel.options_form.set_values({"steps": 40})
    with qtbot.waitSignal(window.runner.job_finished, timeout=60_000) as blocker:
        qtbot.mouseClick(panel.resume_button, Qt.MouseButton.LeftButton)
    assert blocker.args[1].ok, blocker.args[1].error
    qtbot.wait(100)
    x2, _ = plot.series("loss_g")
    assert x2[: len(x)].tolist() == x.tolist()  # the stored history is kept ...
    assert x2[-1] == 40 and np.all(np.diff(x2) > 0)  # ... and continued, without repeats
    assert _checkpoint_step(run) == 40
    # The smoothing starts afresh where the resumed run continues: its first point is raw.
    _x2, y2 = plot.series("loss_g")
    resumed = len(x)
    assert plot.smoothed("loss_g")[resumed] == pytest.approx(y2[resumed], rel=1e-9)


def test_opening_a_folder_that_is_not_a_run(qtbot, window, tmp_path: Path) -> None:
    panel = window.train_panel
    window.show_workspace(window.TRAIN)
    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000) as blocker:
        panel.open_run(tmp_path)
    assert not blocker.args[1].ok
    assert "not a Studio run folder" in panel.view.banner.text()
    assert panel.run_path is None and not panel.resume_button.isEnabled()


def test_training_on_a_gpu_first_unloads_prompt_models(monkeypatch) -> None:
    from studio.engine.prompt import cache as gen
    from studio.qt import engine_jobs

    cache = gen.PipelineCache(max_models=2)
    monkeypatch.setattr(gen, "_default_cache", cache)
    cache.put(("/models/sd15", "txt2img", "cuda:0", "fp16", False), object())
    assert list(engine_jobs._make_room_for_training("cpu")) == []
    (report,) = list(engine_jobs._make_room_for_training("auto"))
    assert "Unloaded sd15" in report.message and len(cache) == 0


def _fake_gan_run(folder: Path, loss_d: float, d_real: float) -> Path:
    import json

    folder.mkdir(parents=True)
    config = {"family": "gan.dcgan", "train": {"family": "gan.dcgan", "steps": 60}, "model": {}}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    lines = [
        {"step": s, "time": 0.0, "loss_d": loss_d, "loss_g": 7.0, "d_real": d_real, "d_fake": 0.0}
        for s in range(10, 70, 10)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def test_a_gan_whose_discriminator_has_won_gets_advice(qtbot, window, tmp_path: Path) -> None:
    panel = window.train_panel
    window.show_workspace(window.TRAIN)
    won = _fake_gan_run(tmp_path / "won", loss_d=0.01, d_real=0.99)
    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000) as blocker:
        panel.open_run(won)
    assert blocker.args[1].ok, blocker.args[1].error
    assert panel.diagnosis.isVisibleTo(panel)
    text = panel.diagnosis.text()
    assert "discriminator has won" in text and "learning rate" in text
    window.grab().save(os.path.join(os.environ.get("TMPDIR", "/tmp"), "train_diagnosis.png"))

    healthy = _fake_gan_run(tmp_path / "healthy", loss_d=1.2, d_real=0.6)
    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000):
        panel.open_run(healthy)
    assert not panel.diagnosis.isVisibleTo(panel) and panel.diagnosis.text() == ""
    # While training: the points the job delivers are checked as they come.
    points = [(s, {"loss_d": 0.02, "d_real": 0.97}) for s in range(70, 120, 10)]
    panel.diagnosis.add_points(points)
    assert "discriminator has won" in panel.diagnosis.text()
