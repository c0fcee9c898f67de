"""*Continue on another folder…*: a finished run goes on learning from new images."""

from __future__ import annotations

from pathlib import Path

from helpers import make_tiny_dataset, tiny_train_config
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox

from studio.core.jobs import CancelToken, run_sync
from studio.engine.runs import RunFolder
from studio.engine.train import train_job
from studio.qt.continue_dialog import ContinueDialog


def test_continue_a_run_on_another_folder_from_the_window(
    qtbot, window, tmp_path: Path, monkeypatch
) -> None:
    old = make_tiny_dataset(tmp_path / "old", n=16, size=16, classes=1, seed=1)
    new = make_tiny_dataset(tmp_path / "new", n=16, size=16, classes=2, seed=2)
    run = tmp_path / "run"
    cfg = tiny_train_config("gan.dcgan", old, steps=4, sample_every=2, samples=8)
    assert run_sync(train_job(run, CancelToken(), cfg), CancelToken()).ok
    window.show_workspace(window.TRAIN)
    panel = window.train_panel
    assert not panel.continue_button.isEnabled()  # no run open yet
    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000):
        panel.open_run(run)
    assert panel.continue_button.isEnabled()

    asked = []

    def answer(dialog: ContinueDialog) -> int:
        ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
        assert not ok.isEnabled()  # no folder chosen yet
        assert dialog.steps_box.value() == 4 + 4  # the run's step plus its steps setting
        dialog.folder_edit.setText(str(new))
        dialog.replay_box.setValue(0.5)
        dialog.ewc_box.setValue(20.0)
        assert ok.isEnabled()
        asked.append(dialog.request())
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(ContinueDialog, "exec", answer)
    with qtbot.waitSignal(window.runner.job_finished, timeout=60_000) as blocker:
        qtbot.mouseClick(panel.continue_button, Qt.MouseButton.LeftButton)
        assert panel.is_training() and not panel.continue_button.isEnabled()
    outcome = blocker.args[1]
    assert outcome.ok, outcome.error
    assert outcome.result.step == 8 and asked[0].replay == 0.5 and asked[0].ewc == 20.0
    config = RunFolder(run).read_config()
    assert [d["step"] for d in config["datasets"]] == [0, 4]
    assert config["continual"]["replay"] == 0.5 and config["continual"]["ewc"] == 20.0
    qtbot.wait(100)
    names = set(panel.view.plot.names())
    assert {"folder_nearest_1", "folder_nearest_2", "ewc_penalty"} <= names
    log = "\n".join(panel.view.log_lines())
    assert "Continuing on" in log and panel.continue_button.isEnabled()


def test_a_refused_folder_shows_one_sentence(qtbot, window, tmp_path: Path, monkeypatch) -> None:
    old = make_tiny_dataset(tmp_path / "old", n=8, size=16, classes=1, seed=1)
    run = tmp_path / "run"
    cfg = tiny_train_config("vae.conv", old, steps=2)
    assert run_sync(train_job(run, CancelToken(), cfg), CancelToken()).ok
    window.show_workspace(window.TRAIN)
    panel = window.train_panel
    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000):
        panel.open_run(run)
    before = (run / "config.json").read_bytes()

    def answer(dialog: ContinueDialog) -> int:
        dialog.folder_edit.setText(str(old))  # the folder it trained on
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(ContinueDialog, "exec", answer)
    with qtbot.waitSignal(window.runner.job_finished, timeout=30_000) as blocker:
        panel.choose_continue()
    assert not blocker.args[1].ok
    assert "trains on now" in panel.view.banner.text()
    assert (run / "config.json").read_bytes() == before
