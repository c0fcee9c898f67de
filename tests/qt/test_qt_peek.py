"""Peek while training: interactive jobs between a long job's steps, and the Train
workspace's Peek box (while training and while paused)."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import pytest
from PySide6.QtCore import Qt

from studio.core.jobs import CancelToken, Progress, Status
from studio.qt.engine_thread import JobRunner


class Steps:
    """A long job that counts its steps and ends when released."""

    def __init__(self) -> None:
        self.step = 0
        self.release = threading.Event()
        self.thread: int | None = None

    def job(self, token: CancelToken) -> Generator[Progress, None, str]:
        self.thread = threading.get_ident()
        while not self.release.is_set():
            time.sleep(0.003)
            self.step += 1
            yield Progress("train", self.step)
        return "long"


def _recorder(runner: JobRunner) -> tuple[list[tuple[str, int]], dict[int, object]]:
    events: list[tuple[str, int]] = []
    outcomes: dict[int, object] = {}
    runner.job_started.connect(lambda h: events.append(("started", h.id)))
    runner.job_progress.connect(lambda h, p, i, pts: events.append(("progress", h.id)))

    def finished(handle, outcome) -> None:
        events.append(("finished", handle.id))
        outcomes[handle.id] = outcome

    runner.job_finished.connect(finished)
    return events, outcomes


def test_interactive_job_runs_between_steps_and_finishes_first(qtbot, runner) -> None:
    events, outcomes = _recorder(runner)
    long = Steps()
    seen: dict[str, object] = {}

    def short(token: CancelToken) -> Generator[Progress, None, str]:
        seen["thread"], seen["step_at_start"] = threading.get_ident(), long.step
        for i in range(3):
            time.sleep(0.02)
            yield Progress("work", i + 1, 3, message=f"peek {i + 1}")
        seen["step_at_end"] = long.step  # the long job did not move meanwhile
        return "short"

    long_handle = runner.submit("Train", long.job)
    qtbot.waitUntil(lambda: long.step > 5, timeout=10_000)
    queued = runner.submit("queued", lambda token: iter(()))  # an ordinary job still waits
    short_handle = runner.submit("Peek", short, interactive=True)
    qtbot.waitUntil(lambda: short_handle.id in outcomes, timeout=10_000)

    assert outcomes[short_handle.id].status is Status.FINISHED
    assert outcomes[short_handle.id].result == "short"
    assert long_handle.id not in outcomes and queued.id not in outcomes
    assert seen["thread"] == long.thread  # on the engine thread, not a second one
    assert seen["step_at_start"] == seen["step_at_end"]
    assert ("started", short_handle.id) in events and ("progress", short_handle.id) in events
    assert events.index(("started", short_handle.id)) < events.index(("progress", short_handle.id))
    assert runner.engine.running_job() is long_handle

    step = long.step
    qtbot.waitUntil(lambda: long.step > step + 5, timeout=10_000)  # training went on
    long.release.set()
    qtbot.waitUntil(lambda: queued.id in outcomes, timeout=10_000)
    order = [job for kind, job in events if kind == "finished"]
    assert order == [short_handle.id, long_handle.id, queued.id]


def test_interactive_job_runs_when_idle_and_can_be_cancelled(qtbot, runner) -> None:
    _, outcomes = _recorder(runner)

    def short(token: CancelToken) -> Generator[Progress, None, int]:
        yield Progress("work")
        return 7

    handle = runner.submit("Peek", short, interactive=True)
    qtbot.waitUntil(lambda: handle.id in outcomes, timeout=10_000)
    assert outcomes[handle.id].result == 7

    long = Steps()
    long_handle = runner.submit("Train", long.job)
    qtbot.waitUntil(lambda: long.step > 2, timeout=10_000)
    started = threading.Event()

    def slow(token: CancelToken) -> Generator[Progress, None, int]:
        started.set()
        for i in range(10_000):
            time.sleep(0.002)
            yield Progress("work", i)
        return 1

    slow_handle = runner.submit("Slow peek", slow, interactive=True)
    qtbot.waitUntil(started.is_set, timeout=10_000)
    slow_handle.token.cancel()
    qtbot.waitUntil(lambda: slow_handle.id in outcomes, timeout=10_000)
    assert outcomes[slow_handle.id].status is Status.CANCELLED
    step = long.step
    qtbot.waitUntil(lambda: long.step > step + 3, timeout=10_000)
    long.release.set()
    qtbot.waitUntil(lambda: long_handle.id in outcomes, timeout=10_000)
    assert outcomes[long_handle.id].result == "long"


def test_peek_box_samples_while_training_and_while_paused(qtbot, trainable_window) -> None:
    win = trainable_window
    panel = win.train_panel
    peek = panel.peek_panel
    peek.count_spin.setValue(4)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.view.plot.point_count() >= 4, timeout=60_000)
    assert peek.sample_button.isEnabled()

    with qtbot.waitSignal(peek.peeked, timeout=30_000) as blocker:
        qtbot.mouseClick(peek.sample_button, Qt.MouseButton.LeftButton)
    result = blocker.args[0]
    assert result.live and result.images.shape[0] == 4
    assert peek.grid.image().width() > result.images.shape[2]  # a grid is on show
    assert "current weights at step" in peek.caption.text()
    assert panel.is_training()
    points = panel.view.plot.point_count()
    qtbot.waitUntil(lambda: panel.view.plot.point_count() > points + 3, timeout=30_000)
    qtbot.waitUntil(lambda: "Interleaved work: " in peek.cost_label.text(), timeout=30_000)

    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "paused" in panel.view.status_label.text(), timeout=20_000)
    peek.seed_spin.setValue(5)
    with qtbot.waitSignal(peek.peeked, timeout=30_000) as blocker:
        qtbot.mouseClick(peek.sample_button, Qt.MouseButton.LeftButton)
    paused = blocker.args[0]
    assert paused.live and paused.seed == 5
    assert panel.is_paused()  # the peek did not resume training

    qtbot.mouseClick(panel.resume_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(win.runner.job_finished, timeout=60_000) as done:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    assert done.args[1].status is Status.FINISHED
    # Training over: a peek now reads the saved model.
    with qtbot.waitSignal(peek.peeked, timeout=30_000) as blocker:
        peek.sample()
    assert not blocker.args[0].live


def test_explore_decodes_a_training_run_with_its_live_weights(qtbot, app_settings, tmp_path):
    from helpers import make_tiny_dataset, train_tiny_run
    from qt_steps import small_latent_workspace

    from studio.engine import live
    from studio.qt import engine_jobs

    data = make_tiny_dataset(tmp_path / "data", n=16, size=16)
    run = train_tiny_run(tmp_path / "run", "vae.conv", data)
    runner = JobRunner()
    ws = small_latent_workspace(qtbot, app_settings, runner)
    try:
        ws.open_run(run)
        qtbot.waitUntil(lambda: ws.directions_ready() and ws.image is not None, timeout=30_000)
        qtbot.waitUntil(lambda: not ws.jobs.is_busy(), timeout=10_000)
        saved_decodes = ws.jobs.decode_count

        train = runner.submit("Resume", engine_jobs.train_resume(run, 100_000, "cpu"))
        qtbot.waitUntil(lambda: live.is_live(run), timeout=30_000)
        for value in (100, 150, 200):  # a quick drag: latest wins
            ws.slider_panel.sliders[0].setValue(value)
        qtbot.waitUntil(
            lambda: ws.displayed_request == ws.last_request and not ws.jobs.is_busy(),
            timeout=30_000,
        )
        assert 1 <= ws.jobs.live_decode_count <= 3
        assert ws.jobs.decode_count == saved_decodes  # the saved copy was not used
        assert ws.image is not None and ws.image.shape == (16, 16, 3)
        assert runner.engine.running_job() is train  # training went on
        with qtbot.waitSignal(runner.job_finished, timeout=60_000):
            train.token.stop()
    finally:
        ws.shutdown()
        runner.shutdown(10_000)


def test_every_interactive_job_between_steps_is_charged_by_kind(qtbot, runner, tmp_path) -> None:
    """A quarter of the run went to Explore and Canvas jobs between steps: the cost line says
    so, by kind (it said "0.0% of training time": only Peek jobs were meant, and only the
    last log interval's share was shown)."""
    from studio.engine import live
    from studio.qt.job_calls import JobCalls
    from studio.qt.peek_panel import format_cost

    _, outcomes = _recorder(runner)
    reports: list[dict] = []

    def training(token: CancelToken) -> Generator[Progress, None, str]:
        entry = live.register(tmp_path / "run", object(), token)
        try:
            for step in range(1, 10_000):
                time.sleep(0.01)
                yield Progress("train", step)
                if step % 5 == 0:
                    reports.append(entry.info(step))
                if len(reports) > 1 and entry.by_kind.get("Canvas"):
                    break
        finally:
            live.unregister(tmp_path / "run")
        reports.append(entry.info())
        return "trained"

    def busy(seconds: float):
        def job(token: CancelToken) -> Generator[Progress, None, None]:
            time.sleep(seconds)
            yield Progress("work")

        return job

    long_handle = runner.submit("Train", training)
    qtbot.waitUntil(lambda: bool(reports), timeout=10_000)
    explore, canvas = JobCalls(runner, kind="Explore"), JobCalls(runner, kind="Canvas")
    explore.submit("Decode", busy(0.3), interactive=True)
    canvas.submit("Inpaint", busy(0.2), interactive=True)
    qtbot.waitUntil(lambda: long_handle.id in outcomes, timeout=20_000)
    info = reports[-1]
    kinds = info["peek_kinds"]
    assert set(kinds) == {"Explore", "Canvas"}
    assert kinds["Explore"] > kinds["Canvas"] > 0
    assert info["peek_cost"] == pytest.approx(kinds["Explore"] + kinds["Canvas"])
    text = format_cost(info)
    assert text.startswith("Interleaved work: ") and "of training time (Explore " in text
    assert text.index("Explore") < text.index("Canvas")


def test_the_cost_line_names_each_kind_and_its_share() -> None:
    from studio.qt.peek_panel import format_cost

    info = {"peek_cost": 0.24, "peek_s": 31.0, "peek_kinds": {"Canvas": 0.09, "Explore": 0.15}}
    assert format_cost(info) == (
        "Interleaved work: 24% of training time (Explore 15%, Canvas 9%; 31.0 s so far)"
    )
    assert format_cost({"peek_cost": 0.0004, "peek_s": 0.01, "peek_kinds": {"Peek": 0.0004}}) == (
        "Interleaved work: <0.1% of training time (Peek <0.1%; 0.0 s so far)"
    )
    assert format_cost({}) == ""
