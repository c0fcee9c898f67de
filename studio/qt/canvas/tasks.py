"""Short file work off the GUI thread: decoding an opened image, writing autosaves and saves.

The engine thread may be busy training for hours, so file work that the user is waiting on
(or that must happen on time, like an autosave) runs on a small private ``QThreadPool``
instead. A task is a plain callable that touches no widget and no live document; its result
comes back to the GUI thread through a queued signal only.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from studio.core.errors import StudioError

Done = Callable[[Any], None]
Failed = Callable[[str], None]


class _Relay(QObject):
    """Carries one task's outcome across threads (emitted on the worker, queued to the GUI)."""

    settled = Signal(int, bool, object)  # task id, ok, result or error text


class _Task(QRunnable):
    def __init__(self, task_id: int, fn: Callable[[], Any], relay: _Relay) -> None:
        super().__init__()
        self._id, self._fn, self._relay = task_id, fn, relay

    def run(self) -> None:
        try:
            result = self._fn()
        except StudioError as err:  # written for the user already
            self._relay.settled.emit(self._id, False, str(err))
        except OSError as err:
            self._relay.settled.emit(self._id, False, f"{err.strerror or err}: {err.filename}")
        except Exception as err:  # noqa: BLE001 - a worker must report, never die silently
            traceback.print_exc()
            self._relay.settled.emit(self._id, False, f"{type(err).__name__}: {err}")
        else:
            self._relay.settled.emit(self._id, True, result)


class TaskPool(QObject):
    """Runs callables on its own threads and calls back on the GUI thread.

    ``max_threads`` 1 keeps writes to one file in order. Callbacks are dropped if the pool
    (and so its owner) is deleted first, so a late result never reaches a dead widget.
    """

    def __init__(self, parent: QObject | None = None, *, max_threads: int = 1) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._relay = _Relay(self)
        self._relay.settled.connect(self._on_settled)
        self._ids = itertools.count(1)
        self._callbacks: dict[int, tuple[Done | None, Failed | None]] = {}

    def submit(
        self, fn: Callable[[], Any], on_done: Done | None = None, on_failed: Failed | None = None
    ) -> int:
        task_id = next(self._ids)
        self._callbacks[task_id] = (on_done, on_failed)
        self._pool.start(_Task(task_id, fn, self._relay))
        return task_id

    def busy(self) -> bool:
        return bool(self._callbacks)

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until every task ran (their callbacks come later, from the event loop)."""
        return self._pool.waitForDone(timeout_ms)

    @Slot(int, bool, object)
    def _on_settled(self, task_id: int, ok: bool, payload: Any) -> None:
        on_done, on_failed = self._callbacks.pop(task_id, (None, None))
        if ok and on_done is not None:
            on_done(payload)
        elif not ok and on_failed is not None:
            on_failed(str(payload))
