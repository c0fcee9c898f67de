"""The Prompt workspace while a run trains on the same engine thread: the model list, library
edits and the history never wait for the training (they run between its steps); a generation,
which cannot share the device, is queued explicitly: it says what it waits for, and Cancel
takes it off the queue at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from test_qt_canvas_support import engine

from studio.core.jobs import CancelToken, Progress
from studio.engine import live
from studio.qt.canvas import CanvasWorkspace
from studio.qt.prompt import PromptWorkspace

LEFT = Qt.MouseButton.LeftButton


class FakeTraining:
    """A long job that registers as a training run (step of 10,000) and ends when released."""

    def __init__(self, run: Path) -> None:
        self.run, self.release, self.step = run, threading.Event(), 0

    def job(self, token: CancelToken) -> Generator[Progress, None, str]:
        entry = live.register(self.run, object(), token)
        entry.total = 10_000
        try:
            while not self.release.is_set() and not token.cancelled:
                time.sleep(0.01)
                self.step += 1
                entry.step = self.step
                yield Progress("train", self.step, 10_000)
        finally:
            live.unregister(self.run)
        return "trained"


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    from prompt_fixtures import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("prompt_models") / "tiny-sd")


def test_prompt_workspace_works_while_a_run_trains(qtbot, app_settings, tiny_sd, tmp_path) -> None:
    from studio.engine.prompt.library import ModelLibrary

    ModelLibrary().add(tiny_sd, name="tiny-sd")
    training = FakeTraining(tmp_path / "run")
    with engine() as runner:
        train = runner.submit("Train", training.job)
        qtbot.waitUntil(lambda: training.step > 3, timeout=10_000)
        canvas = CanvasWorkspace(runner, app_settings)
        ws = PromptWorkspace(runner, app_settings, canvas)
        qtbot.addWidget(canvas)
        qtbot.addWidget(ws)
        ws.resize(1200, 760)
        try:
            # The first show lists the models and reads the history between training steps.
            with qtbot.waitSignal(ws.model_list.models_loaded, timeout=20_000):
                ws.show()
            qtbot.waitUntil(lambda: ws.history.loaded, timeout=20_000)
            assert not train.token.cancelled and live.is_live(tmp_path / "run")
            ml = ws.model_list
            for button in (ml.add_folder_button, ml.add_file_button, ml.refresh_button):
                assert button.isEnabled(), button.text()
            assert ws.history.refresh_button.isEnabled()
            assert ws.history.status.text() != "Reading the history…"
            # A library edit does not wait either: Refresh lists again while training goes on.
            with qtbot.waitSignal(ml.models_loaded, timeout=20_000):
                qtbot.mouseClick(ml.refresh_button, LEFT)
            assert ml.current() is not None and live.is_live(tmp_path / "run")

            # A generation cannot share the device: it waits, says so, and Cancel drops it.
            ws.params.set_values({"steps": 2, "width": 16, "height": 16, "prompt": "a circle"})
            qtbot.mouseClick(ws.generate_button, LEFT)
            assert ws.running and ws.cancel_button.isEnabled()
            qtbot.waitUntil(lambda: "(step " in ws.status_label.text(), timeout=5_000)
            text = ws.status_label.text()
            assert text.startswith("Waiting for training to finish (step ")
            assert "of 10,000) — it will start then" in text
            ws.grab().save(str(tmp_path / "prompt_waiting.png"))
            qtbot.mouseClick(ws.cancel_button, LEFT)
            qtbot.waitUntil(lambda: not ws.running, timeout=5_000)  # not when training ends
            assert live.is_live(tmp_path / "run") and not train.token.cancelled
            assert "Cancelled" in ws.status_label.text()

            # The X/Y grid, the same: it says what it waits for, and Cancel drops it at once.
            dialog = ws.open_xy_dialog()
            qtbot.addWidget(dialog)
            dialog.set_axes(("seed", "1, 2"), ("guidance", "1, 4"))
            assert dialog.render_grid()
            assert "4 images. Waiting for training to finish (step " in dialog.status.text()
            dialog.cancel()
            qtbot.waitUntil(lambda: not dialog.running, timeout=5_000)
            assert live.is_live(tmp_path / "run")
            dialog.close()
        finally:
            training.release.set()
            ws.shutdown()
            canvas.shutdown()
