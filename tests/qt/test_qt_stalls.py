"""What keeps the GUI thread from stalling while a model trains (docs/performance.md): the
engine thread runs at a lower CPU priority than the GUI thread (Linux), and so do the threads
it starts (torch's OpenMP workers), so the GUI thread no longer waits for a core mid-repaint.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Generator
from pathlib import Path

import pytest

from studio.core.jobs import CancelToken, Progress, Status
from studio.core.threads import thread_nice
from studio.qt import engine_thread
from studio.qt.engine_thread import JobRunner

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")


def _run(qtbot, runner: JobRunner, factory):
    done: dict = {}
    runner.job_finished.connect(lambda h, outcome: done.setdefault(h.id, outcome))
    handle = runner.submit("probe", factory)
    qtbot.waitUntil(lambda: handle.id in done, timeout=30_000)
    outcome = done[handle.id]
    assert outcome.status is Status.FINISHED, outcome.error
    return outcome.result


def _tasks() -> dict[int, int]:
    """native thread id -> nice, for every thread of this process (Linux /proc)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = int(fields[16])  # field 19 of stat: nice
    return out


@linux_only
def test_the_engine_thread_runs_below_the_gui_thread(qtbot, runner: JobRunner) -> None:
    gui = thread_nice()
    assert gui is not None and gui + engine_thread.ENGINE_NICE <= 19
    assert engine_thread.ENGINE_NICE > 0

    def factory(token: CancelToken) -> Generator[Progress, None, tuple[int, int | None]]:
        yield Progress("work")
        return threading.get_native_id(), thread_nice()

    tid, nice = _run(qtbot, runner, factory)
    assert tid != threading.get_native_id()
    assert nice == gui + engine_thread.ENGINE_NICE == runner.engine.nice
    assert _tasks()[tid] == nice  # what the OS reports for that thread
    assert thread_nice() == gui  # the GUI thread kept its priority


@linux_only
def test_torch_workers_started_by_the_engine_inherit_its_priority(qtbot, runner) -> None:
    torch = pytest.importorskip("torch")
    gui = thread_nice()
    assert gui is not None

    def factory(token: CancelToken) -> Generator[Progress, None, dict[int, int]]:
        yield Progress("work")
        before = set(_tasks())
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            a = torch.randn(256, 256)
            for _ in range(3):
                a = torch.tanh(a @ a) + a.sum(0)  # parallel regions: OpenMP makes its workers
            after = _tasks()
        finally:
            torch.set_num_threads(threads)
        return {t: n for t, n in after.items() if t not in before}

    new = _run(qtbot, runner, factory)
    if not new:
        pytest.skip("this torch build started no worker threads for the engine thread")
    assert set(new.values()) == {gui + engine_thread.ENGINE_NICE}, new
    assert thread_nice() == gui


def test_no_priority_change_when_turned_off(
    qtbot, runner: JobRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_thread, "ENGINE_NICE", 0)
    gui = thread_nice()

    def factory(token: CancelToken) -> Generator[Progress, None, int | None]:
        yield Progress("work")
        return thread_nice()

    assert _run(qtbot, runner, factory) == gui
    assert runner.engine.nice is None
