"""The engine thread: coalesced progress, ordering, cancel, pause, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import pytest
from PySide6.QtCore import Qt

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress, Status
from studio.qt.engine_thread import JobRunner, live_engine_threads


class Recorder:
    """Collects what a JobRunner emits, in order."""

    def __init__(self, runner: JobRunner) -> None:
        self.events: list[tuple[str, object]] = []
        self.progress: list[Progress] = []
        self.points: list[tuple[int, dict]] = []
        self.images: list[object] = []
        self.kept: list[Progress] = []
        self.outcomes: dict[int, object] = {}
        runner.job_started.connect(lambda h: self.events.append(("started", h.id)))
        runner.job_progress.connect(self._on_progress)
        runner.job_events.connect(self._on_events)
        runner.job_finished.connect(self._on_finished)

    def _on_progress(self, handle, progress, image, points) -> None:
        self.events.append(("progress", progress.step))
        self.progress.append(progress)
        self.points.extend(points)
        if image is not None:
            self.images.append(image)

    def _on_events(self, handle, reports) -> None:
        self.kept.extend(reports)

    def _on_finished(self, handle, outcome) -> None:
        self.events.append(("finished", handle.id))
        self.outcomes[handle.id] = outcome


def _wait_finished(qtbot, rec: Recorder, job_id: int, timeout: int = 20_000):
    qtbot.waitUntil(lambda: job_id in rec.outcomes, timeout=timeout)
    return rec.outcomes[job_id]


def test_progress_is_coalesced_but_nothing_is_lost(qtbot, runner: JobRunner) -> None:
    n = 10_000
    wakeups = []
    # Count the engine's wake-up signals where they are emitted, on the engine thread.
    runner.engine.progress_ready.connect(
        lambda job_id: wakeups.append(job_id), Qt.ConnectionType.DirectConnection
    )

    def factory(token: CancelToken) -> Generator[Progress, None, str]:
        for i in range(n):
            if i % 2000 == 0:
                time.sleep(0.02)  # a few pauses, so several deliveries happen
            yield Progress("train", i, n, metrics={"loss": float(i)}, message=f"m{i}")
        return "done"

    rec = Recorder(runner)
    handle = runner.submit("fast", factory)
    outcome = _wait_finished(qtbot, rec, handle.id)
    assert outcome.status is Status.FINISHED and outcome.result == "done"
    assert 1 <= len(wakeups) < n // 20, f"{len(wakeups)} wake-ups for {n} reports"
    assert 1 <= len(rec.progress) <= len(wakeups)
    assert rec.progress[-1].step == n - 1  # the last report is always delivered
    assert [s for s, _ in rec.points] == list(range(n))  # every metric point, in order
    assert rec.points[-1][1] == {"loss": float(n - 1)}


def test_finished_comes_after_the_last_progress(qtbot, runner: JobRunner) -> None:
    def factory(token: CancelToken) -> Generator[Progress, None, None]:
        for i in range(500):
            yield Progress("train", i, 500, image=[i] if i % 100 == 0 else None)

    rec = Recorder(runner)
    handle = runner.submit("ordered", factory)
    _wait_finished(qtbot, rec, handle.id)
    kinds = [kind for kind, _ in rec.events]
    assert kinds[0] == "started"
    assert kinds[-1] == "finished"
    assert kinds.count("finished") == 1
    assert rec.events[-2] == ("progress", 499)
    assert rec.images[-1] == [400]  # the newest image is kept when reports are dropped


def test_kept_reports_arrive_one_by_one_and_info_sticks(qtbot, runner: JobRunner) -> None:
    def factory(token: CancelToken) -> Generator[Progress, None, None]:
        for i in range(3000):
            info = {"images_per_s": float(i)} if i % 10 == 0 else {}
            message = f"checkpoint {i}" if i % 100 == 0 else ""
            yield Progress("train", i, 3000, info=info, message=message)

    rec = Recorder(runner)
    handle = runner.submit("kept", factory, keep=lambda p: bool(p.message))
    _wait_finished(qtbot, rec, handle.id)
    assert [p.message for p in rec.kept] == [f"checkpoint {i}" for i in range(0, 3000, 100)]
    # The last report carries no info of its own; the newest non-empty one fills it in.
    assert rec.progress[-1].step == 2999
    assert rec.progress[-1].info == {"images_per_s": 2990.0}


def test_cancel_stops_at_the_next_yield(qtbot, runner: JobRunner) -> None:
    closed = threading.Event()

    def factory(token: CancelToken) -> Generator[Progress, None, str]:
        try:
            i = 0
            while True:
                time.sleep(0.002)
                yield Progress("train", i)
                i += 1
        finally:
            closed.set()

    rec = Recorder(runner)
    handle = runner.submit("forever", factory)
    qtbot.waitUntil(lambda: bool(rec.progress), timeout=10_000)
    handle.token.cancel()
    outcome = _wait_finished(qtbot, rec, handle.id, timeout=5_000)
    assert outcome.status is Status.CANCELLED
    assert outcome.result is None
    assert closed.is_set()


def test_failures_become_outcomes_and_the_thread_lives_on(qtbot, runner: JobRunner) -> None:
    def failing(token: CancelToken) -> Generator[Progress, None, None]:
        yield Progress("train", 0)
        raise StudioError("The folder is empty.")

    def bad_factory(token: CancelToken) -> Generator[Progress, None, None]:
        raise ValueError("bad settings")

    def fine(token: CancelToken) -> Generator[Progress, None, int]:
        yield Progress("train", 0)
        return 42

    rec = Recorder(runner)
    first = runner.submit("failing", failing)
    second = runner.submit("bad factory", bad_factory)
    third = runner.submit("fine", fine)
    assert _wait_finished(qtbot, rec, first.id).error == "The folder is empty."
    outcome = _wait_finished(qtbot, rec, second.id)
    assert outcome.status is Status.FAILED and "bad settings" in outcome.error
    assert _wait_finished(qtbot, rec, third.id).result == 42


def _pausable(started: threading.Event):
    """Like training: waits while paused, ends early (keeping its work) when stopped."""

    def factory(token: CancelToken) -> Generator[Progress, None, str]:
        step = 0
        while True:
            if token.stop_requested:
                return f"stopped at {step}"
            if token.paused:
                yield Progress("paused", step)
                started.set()
                token.wait_while_paused()
                continue
            step += 1
            time.sleep(0.001)
            yield Progress("train", step)

    return factory


def test_shutdown_stops_a_job_blocked_in_pause(qtbot, runner: JobRunner) -> None:
    paused = threading.Event()
    rec = Recorder(runner)
    handle = runner.submit("pausable", _pausable(paused))
    qtbot.waitUntil(lambda: bool(rec.progress), timeout=10_000)
    handle.token.pause()
    assert paused.wait(5)
    queued = runner.submit("queued", _pausable(threading.Event()))
    t0 = time.monotonic()
    assert runner.shutdown(10_000, grace_ms=5_000)
    assert time.monotonic() - t0 < 3, "a graceful stop should not need the grace period"
    assert not runner.engine.isRunning()
    qtbot.waitUntil(lambda: queued.id in rec.outcomes, timeout=5_000)
    outcome = rec.outcomes[handle.id]
    assert outcome.status is Status.FINISHED and outcome.result.startswith("stopped at")
    assert rec.outcomes[queued.id].status is Status.CANCELLED  # never started
    assert ("started", queued.id) not in rec.events
    with pytest.raises(RuntimeError):
        runner.submit("too late", _pausable(threading.Event()))


def test_shutdown_cancels_a_job_that_ignores_stop(qtbot, runner: JobRunner) -> None:
    def stubborn(token: CancelToken) -> Generator[Progress, None, None]:
        while True:  # never looks at stop_requested; run_sync still checks cancel
            time.sleep(0.005)
            yield Progress("train", 0)

    rec = Recorder(runner)
    handle = runner.submit("stubborn", stubborn)
    qtbot.waitUntil(lambda: bool(rec.progress), timeout=10_000)
    t0 = time.monotonic()
    assert runner.shutdown(5_000, grace_ms=300)
    assert 0.25 < time.monotonic() - t0 < 3
    qtbot.waitUntil(lambda: handle.id in rec.outcomes, timeout=5_000)
    assert rec.outcomes[handle.id].status is Status.CANCELLED


def test_live_threads_are_tracked(qapp) -> None:
    runner = JobRunner()
    assert runner.engine in live_engine_threads()
    assert not runner.engine.isRunning()  # started by the first job, not before
    assert runner.shutdown(1000)
