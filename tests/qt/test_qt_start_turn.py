"""The Start click's turn: a queued job waits for the GUI thread to finish the turn that
submitted it (and the repaint after it), never longer than the cap; the forms lock at once."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Generator

import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt
from PySide6.QtGui import QPaintEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QWidget

from studio.core.jobs import CancelToken, Progress
from studio.qt import engine_thread
from studio.qt.engine_thread import JobRunner


def _marking_job(started: threading.Event):
    def factory(token: CancelToken) -> Generator[Progress, None, str]:
        started.set()
        yield Progress("work", 1, 1)
        return "done"

    return factory


class _PaintSpy(QWidget):
    """Records whether the job's gate was already open when this widget painted."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: threading.Event | None = None
        self.gate_open_at_paint: list[bool] = []
        self.paints = 0

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        self.paints += 1
        if self.gate is not None:
            self.gate_open_at_paint.append(self.gate.is_set())


def test_a_queued_job_starts_after_the_turn_and_its_repaint(
    qtbot, runner: JobRunner, monkeypatch
) -> None:
    monkeypatch.setattr(engine_thread, "GUI_TURN_CAP_S", 10.0)  # only the gate can start it
    spy = _PaintSpy()
    qtbot.addWidget(spy)
    spy.resize(64, 64)
    spy.show()
    qtbot.waitUntil(lambda: spy.paints > 0)  # its first paint is behind it
    qtbot.wait(20)
    started = threading.Event()
    with qtbot.waitSignal(runner.job_finished, timeout=10_000):
        # One "click": the widget changes (a repaint is scheduled), then the job is submitted.
        spy.update()
        handle = runner.submit("job", _marking_job(started))
        spy.gate = handle.gui_turn
        assert handle.gui_turn is not None
        # The GUI thread is still in its turn: the engine thread holds the job back.
        assert not started.wait(0.05)
    assert spy.gate_open_at_paint and spy.gate_open_at_paint[0] is False  # painted first
    assert started.is_set() and handle.gui_turn.is_set()


def test_the_wait_for_the_gui_turn_is_capped(qtbot, runner: JobRunner, monkeypatch) -> None:
    """A GUI thread that never returns to its event loop delays a job by the cap, no more."""
    cap = 0.3
    monkeypatch.setattr(engine_thread, "GUI_TURN_CAP_S", cap)
    started = threading.Event()
    t0 = time.perf_counter()
    handle = runner.submit("job", _marking_job(started))
    assert started.wait(cap + 10.0), "the job never started"
    waited = time.perf_counter() - t0
    assert handle.gui_turn is not None and not handle.gui_turn.is_set()  # no turn has ended
    assert cap <= waited < cap + 10.0
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)


def test_a_runner_shortens_the_gil_switch_interval(qapp) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # Python's default
    try:
        runner = JobRunner()
        assert sys.getswitchinterval() == pytest.approx(engine_thread.GIL_SWITCH_INTERVAL_S)
        assert engine_thread.GIL_SWITCH_INTERVAL_S < 0.005
        assert runner.shutdown(10_000)
    finally:
        sys.setswitchinterval(old)


def test_gates_open_in_submission_order(qtbot, runner: JobRunner) -> None:
    """Two turns, one job each: the first turn's end opens only the first job's gate."""
    first = runner.submit("first", _marking_job(threading.Event()))
    QCoreApplication.sendPostedEvents(runner, 0)  # the first turn ends
    second = runner.submit("second", _marking_job(threading.Event()))
    assert first.gui_turn is not None and second.gui_turn is not None
    assert first.gui_turn.is_set() and not second.gui_turn.is_set()
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)
    assert second.gui_turn.is_set()


def test_interactive_jobs_do_not_wait(qtbot, runner: JobRunner, monkeypatch) -> None:
    monkeypatch.setattr(engine_thread, "GUI_TURN_CAP_S", 60.0)
    started = threading.Event()
    handle = runner.submit("peek", _marking_job(started), interactive=True)
    assert handle.gui_turn is None
    # Started while the GUI thread stays in this turn (a gated job would wait the minute).
    assert started.wait(20.0)
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)


def test_the_gate_event_comes_after_low_priority_events(qtbot, runner: JobRunner) -> None:
    """Widgets' UpdateRequest is a low-priority posted event: the gate opens after it."""
    seen: list[bool] = []

    class Receiver(QObject):
        gate: threading.Event | None = None

        def customEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
            seen.append(self.gate is not None and self.gate.is_set())

    receiver = Receiver()
    QCoreApplication.postEvent(
        receiver, QEvent(QEvent.Type.User), Qt.EventPriority.LowEventPriority.value
    )
    handle = runner.submit("job", _marking_job(threading.Event()))
    receiver.gate = handle.gui_turn
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)
    assert seen == [False]


def test_a_job_waits_for_ready(qtbot, runner: JobRunner, monkeypatch) -> None:
    monkeypatch.setattr(engine_thread, "GUI_TURN_CAP_S", 30.0)
    flag: list[bool] = []
    started = threading.Event()
    handle = runner.submit("job", _marking_job(started), ready=lambda: bool(flag))
    qtbot.wait(150)  # many turns of the event loop pass
    assert not started.is_set() and handle.gui_turn is not None
    assert not handle.gui_turn.is_set()
    flag.append(True)
    qtbot.waitUntil(started.is_set, timeout=10_000)
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)


def test_the_wait_for_ready_is_capped(qtbot, runner: JobRunner, monkeypatch) -> None:
    cap = 0.3
    monkeypatch.setattr(engine_thread, "GUI_TURN_CAP_S", cap)
    started = threading.Event()
    t0 = time.perf_counter()
    runner.submit("job", _marking_job(started), ready=lambda: False)
    qtbot.waitUntil(started.is_set, timeout=10_000)
    assert time.perf_counter() - t0 >= cap
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=10_000)


def test_training_starts_once_the_plot_curves_are_built(
    qtbot, trainable_window, monkeypatch
) -> None:
    monkeypatch.setattr(engine_thread, "GUI_TURN_CAP_S", 30.0)  # only ready() can open it
    win = trainable_window
    panel = win.train_panel
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    handle = panel._job
    assert handle is not None and handle.gui_turn is not None
    assert panel.view.plot.preparing()  # the first run: its curves are built turn by turn
    assert not handle.gui_turn.is_set()
    qtbot.waitUntil(handle.gui_turn.is_set, timeout=20_000)
    assert not panel.view.plot.preparing()
    with qtbot.waitSignal(win.runner.job_finished, timeout=60_000):
        panel.stop()


def test_forms_refuse_input_as_soon_as_start_is_clicked(qtbot, trainable_window) -> None:
    win = trainable_window
    panel = win.train_panel
    steps = panel.options_form.widget("steps")
    before = steps.value()
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    # Still inside the click's turn (no events processed since): everything is locked.
    assert panel.is_training()
    assert not panel.options_form.isEnabled() and not steps.isEnabled()
    assert panel.model_form is not None and not panel.model_form.isEnabled()
    assert not panel.picker.isEnabled() and not panel.start_button.isEnabled()
    assert panel.stop_button.isEnabled() and panel.pause_button.isEnabled()
    steps.setFocus()
    QTest.keyClick(steps, Qt.Key.Key_Up)
    QTest.keyClicks(steps, "7")
    assert steps.value() == before
    with qtbot.waitSignal(win.runner.job_finished, timeout=60_000):
        panel.stop()
