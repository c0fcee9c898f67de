"""While a JobRunner's engine thread runs, Python's garbage collector runs on the GUI thread
only (studio.core.gcpolicy, studio.qt.gui_gc): a collection on the engine thread could destroy
Qt wrappers there and deadlock the two threads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator

from PySide6.QtCore import QObject

from studio.core import gcpolicy
from studio.core.jobs import CancelToken, Progress, Status
from studio.qt.engine_thread import JobRunner


class QtCycle(QObject):
    """A Qt wrapper in a reference cycle (like a widget whose slot holds it), recording the
    thread that destroyed it."""

    freed_on: list[int] = []

    def __init__(self) -> None:
        super().__init__()
        self.me = self

    def __del__(self) -> None:
        QtCycle.freed_on.append(threading.get_ident())


def test_garbage_dropped_on_the_engine_thread_is_collected_on_the_gui_thread(qtbot):
    assert gc.isenabled()
    QtCycle.freed_on = []
    runner = JobRunner()
    try:
        assert not gc.isenabled() and gcpolicy.owner() == threading.get_ident()
        gui = threading.get_ident()
        made = QtCycle()  # made on the GUI thread, dropped on the engine thread
        box = [made]
        del made

        def factory(token: CancelToken) -> Generator[Progress, None, tuple[int, bool]]:
            box.clear()  # the last reference goes here: only the collector can free it
            for _ in range(20 * gc.get_threshold()[0]):  # enough to trigger collections
                [].append([])
            asked = gcpolicy.collect(timeout_s=10)  # as free_memory() does after an OOM
            yield Progress("work", 1, 1)
            return threading.get_ident(), asked

        done: list = []
        runner.job_finished.connect(lambda handle, outcome: done.append(outcome))
        runner.submit("garbage", factory)
        qtbot.waitUntil(lambda: bool(done), timeout=20_000)
        assert done[0].status is Status.FINISHED, done[0].error
        engine, asked = done[0].result
        assert asked is True and engine != gui
        assert QtCycle.freed_on == [gui]
    finally:
        assert runner.shutdown(10_000)
    assert gc.isenabled() and gcpolicy.owner() is None  # back as it was
