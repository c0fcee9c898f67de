"""The latent explorer's own worker thread: latest-wins decodes between small jobs.

The shared engine thread may be training for minutes, so the explorer cannot queue its decodes
behind it. This QThread owns one :class:`~studio.engine.latent.LatentSpace` (a model loaded for
the explorer alone) and serves two kinds of request:

- **decodes** (a slider moved): only the newest pending one is kept. A request replaces the one
  waiting, so a fast drag never builds a backlog: at most one decode runs and one waits;
- **tasks** (load a run, find directions, encode, project, make a strip, fit a slider): job
  generators run one after another through :func:`studio.core.jobs.run_sync`. Between two steps
  of a task the worker serves a waiting decode, so the sliders stay live while a GAN projects.

Results cross to the GUI as queued signals carrying QImages (safe to build off the GUI thread)
and plain values. Progress is coalesced to ``max_rate_hz`` per task, the last report always
delivered before ``task_done``. The worker never touches a widget.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shiboken6
from PySide6.QtCore import QObject, QThread, Signal

from studio.core.jobs import CancelToken, Outcome, Progress, Status, run_sync
from studio.qt.imaging import numpy_to_qimage

_LIVE: weakref.WeakSet[LatentWorker] = weakref.WeakSet()
_ORPHANS: list[LatentWorker] = []  # did not stop in time: kept referenced, never deleted running


def live_latent_workers() -> list[LatentWorker]:
    """Every LatentWorker object still alive (running or not); for tests."""
    return [w for w in list(_LIVE) if shiboken6.isValid(w)]


class WorkerContext:
    """What a task may use on the worker thread: the loaded space (None before a load)."""

    def __init__(self) -> None:
        self.space: Any = None  # studio.engine.latent.LatentSpace, typed loosely: lazy torch


TaskFactory = Callable[[WorkerContext, CancelToken], Generator[Progress, None, Any]]


@dataclass(eq=False)
class TaskHandle:
    id: int
    name: str
    token: CancelToken


@dataclass(frozen=True)
class DecodeResult:
    """A decoded latent: the request it answers, the image, and the decode time in ms."""

    request: int
    image: Any  # QImage
    array: np.ndarray
    decode_ms: float
    live: bool = False  # decoded with a training run's current weights (live_decode)
    step: int | None = None  # their training step, when live


class LatentWorker(QThread):
    """Latest-wins decodes and step-wise tasks on one thread (see the module notes)."""

    decoded = Signal(object)  # DecodeResult
    task_started = Signal(object)  # TaskHandle
    task_progress = Signal(object, object)  # TaskHandle, Progress
    task_done = Signal(object, object)  # TaskHandle, Outcome

    def __init__(self, parent: QObject | None = None, *, max_rate_hz: float = 30.0) -> None:
        super().__init__(parent)
        self.setObjectName("studio-latent")
        self.context = WorkerContext()
        self._cond = threading.Condition()
        self._decode: tuple[int, np.ndarray] | None = None  # the newest pending request only
        self._tasks: collections.deque[tuple[TaskHandle, TaskFactory]] = collections.deque()
        self._current: TaskHandle | None = None
        self._ids = itertools.count(1)
        self._requests = itertools.count(1)
        self._closed = False
        self._interval = 1.0 / max_rate_hz
        self.decode_count = 0  # decodes actually run (the benchmark and tests read it)
        self.requested_count = 0
        _LIVE.add(self)

    # -- GUI side ----------------------------------------------------------------------------
    def request_decode(self, z: np.ndarray) -> int:
        """Ask for ``z`` to be decoded; replaces any request still waiting. Returns its id."""
        z = np.array(z, np.float32, copy=True)  # the GUI may keep editing its own array
        with self._cond:
            if self._closed:
                return 0
            request = next(self._requests)
            self.requested_count += 1
            self._decode = (request, z)
            self._cond.notify()
        self._ensure_running()
        return request

    def next_request_id(self) -> int:
        """A decode request id from this worker's sequence, for decodes served elsewhere
        (:mod:`studio.qt.latent.live_decode`), so newer answers still win."""
        with self._cond:
            return next(self._requests)

    def submit(self, name: str, factory: TaskFactory) -> TaskHandle:
        """Queue a task; tasks run in order, one at a time."""
        handle = TaskHandle(next(self._ids), name, CancelToken())
        with self._cond:
            if self._closed:
                raise RuntimeError("the latent worker has been shut down")
            self._tasks.append((handle, factory))
            self._cond.notify()
        self._ensure_running()
        return handle

    def cancel_all(self) -> None:
        """Cancel the running task and drop the queued ones (each still reports done)."""
        with self._cond:
            handles = [h for h, _ in self._tasks]
            if self._current is not None:
                handles.append(self._current)
        for handle in handles:
            handle.token.cancel()

    def is_busy(self) -> bool:
        with self._cond:
            return bool(self._tasks) or self._current is not None or self._decode is not None

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel everything and stop the thread; return whether it stopped in time. Never
        terminates the thread: a step in progress (a model loading) is waited for."""
        with self._cond:
            self._closed = True
            self._decode = None
            self._cond.notify()
        self.cancel_all()
        stopped = self.wait(timeout_ms) if self.isRunning() else True
        if not stopped and self not in _ORPHANS:
            self.setParent(None)  # outlive the widget that owned it rather than crash
            _ORPHANS.append(self)
        return stopped

    def _ensure_running(self) -> None:
        if not self.isRunning() and not self._closed:
            self.start()

    # -- worker side -------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and self._decode is None and not self._tasks:
                    self._cond.wait()
                if self._closed and not self._tasks:
                    break
                task = None if self._decode is not None else self._tasks.popleft()
                if task is not None:
                    self._current = task[0]
            if task is None:
                self._serve_decode()
                continue
            handle, factory = task
            try:
                outcome = self._run_task(handle, factory)
            except BaseException:  # noqa: BLE001 - nothing may take the worker down
                import traceback

                outcome = Outcome(
                    Status.FAILED, error="Internal error", details=traceback.format_exc()
                )
            with self._cond:
                self._current = None
            del factory
            self.task_done.emit(handle, outcome)
        self.context.space = None  # free the model on the thread that used it

    def _serve_decode(self) -> None:
        with self._cond:
            pending, self._decode = self._decode, None
        space = self.context.space
        if pending is None or space is None:
            return
        request, z = pending
        start = time.perf_counter()
        try:
            array = space.decode(z)
        except Exception:  # noqa: BLE001 - a bad latent must not stop the explorer
            return
        ms = (time.perf_counter() - start) * 1000
        self.decode_count += 1
        self.decoded.emit(DecodeResult(request, numpy_to_qimage(array), array, ms))

    def _run_task(self, handle: TaskHandle, factory: TaskFactory) -> Outcome[Any]:
        token = handle.token
        if token.cancelled:
            return Outcome(Status.CANCELLED)
        self.task_started.emit(handle)
        last_emit = [0.0]
        held: list[Progress | None] = [None]

        def on_progress(progress: Progress) -> None:
            self._serve_decode()  # a slider moved meanwhile: it goes first
            now = time.monotonic()
            if now - last_emit[0] >= self._interval or progress.image is not None:
                last_emit[0], held[0] = now, None
                self.task_progress.emit(handle, progress)
            else:
                held[0] = progress

        def job() -> Generator[Progress, None, Any]:
            return (yield from factory(self.context, token))

        outcome = run_sync(job(), token, on_progress)
        if held[0] is not None:
            self.task_progress.emit(handle, held[0])  # the last report always arrives
        return outcome
