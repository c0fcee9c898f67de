"""The engine thread: one dedicated QThread that runs every long job, one at a time, and
short interactive jobs between a long job's steps.

Jobs are generators (see :mod:`studio.core.jobs`). The GUI submits a *factory* that builds the
generator, so even the job's imports (torch, the engine modules) happen on the engine thread and
the window never waits for them. Progress crosses threads through a :class:`JobMailbox`:

- the engine thread ``put()``\\s every report and emits ``progress_ready(job_id)`` only when the
  box was empty, so at most one wake-up per job is ever queued in the GUI's event loop;
- :class:`JobRunner` (on the GUI thread) ``take()``\\s the newest report, the newest image and
  every metrics point, at most ``max_rate_hz`` times a second, and re-emits them as
  ``job_progress``; ``job_finished`` follows a final drain, so the last report always arrives
  first.

Workers never touch widgets; only signals cross threads. The thread is never terminated: it is
asked to stop (jobs keep their work), then to cancel, and waited for.

Interactive jobs (``submit(..., interactive=True)``: a peek, a decode, a search) do not wait
for a long job. They go on a second queue, and each time the running job yields (training
yields after every step, and every ~50 ms while paused) the engine thread runs every waiting
interactive job to completion, *inside* the running job's progress callback, then lets the
running job continue. So an interactive job may use the training model
(:mod:`studio.engine.live`): nothing else runs on this thread until it returns. Each one gets its
own token, mailbox and ``job_started``/``progress_ready``/``job_done`` signals, exactly like a
queued job; the time each takes is charged to the training run under its ``kind``
(``peek_cost``, ``peek_kinds``). When the thread is
idle, interactive jobs run like any other, ahead of queued ones. They must be short: training
waits while they run.

A queued job submitted through :class:`JobRunner` starts only once the GUI thread has finished
the event-loop turn that submitted it and the repaint that follows, and, when the submitter
passed ``ready``, once ``ready()`` is true (checked after each later turn); at most
``GUI_TURN_CAP_S`` after it was submitted. A job's start-up (dataset scan, model build) is
Python holding the GIL: run beside the click's own turn, or the turns that finish the click's
work (the Train page builds its plot curves one per turn), it made them wait for the GIL.
A :class:`JobRunner` also shortens Python's GIL switch interval (``GIL_SWITCH_INTERVAL_S``): each
time the GUI thread re-enters Python (a slot, a paint override) while the engine thread runs
Python, it waits for the GIL up to that long.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import queue
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import shiboken6
from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QThread, QTimer, Signal, Slot

from studio.core.jobs import CancelToken, Outcome, Progress, ProgressMailbox, Status, run_sync
from studio.core.threads import lower_thread_priority
from studio.engine import live  # no torch: the registry of runs training on this thread
from studio.qt import gui_gc

JobFactory = Callable[[CancelToken], Generator[Progress, None, Any]]
KeepFilter = Callable[[Progress], bool]

_INTERACTIVE = -1  # a queue entry that only wakes the thread for the interactive queue
# The longest a queued job waits for the GUI thread to finish the turn that submitted it (and
# its repaint, and its ``ready``); a GUI thread that runs no event loop (a script, a blocked
# test) costs this much. The Train page's first Start is ready ~40-50 ms after the click.
GUI_TURN_CAP_S = 0.25
_READY_POLL_MS = 2  # how often a gate whose ready() is false looks again
# Below Qt's LowEventPriority (-1), the priority of a widget's UpdateRequest: the gate's event
# is delivered after the repaint that the submitting turn scheduled.
_AFTER_PAINT_PRIORITY = -2
# Python's default is 5 ms. No training throughput cost measured at 1 ms (docs/performance.md).
GIL_SWITCH_INTERVAL_S = 0.001
# Nice steps below the GUI thread (Linux; 0 = off). Training on the few cores of a laptop, the
# GUI thread otherwise waits for a core mid-repaint; torch's OpenMP workers, created from this
# thread, inherit it. Costs training throughput only while the GUI thread wants the CPU.
ENGINE_NICE = 5
_TURN_ENDED = QEvent.Type(QEvent.registerEventType())
_LIVE: weakref.WeakSet[EngineThread] = weakref.WeakSet()
# Threads that did not stop in time: kept referenced so Python never deletes a running QThread
# (which aborts the process), and waited for at exit.
_ORPHANS: list[EngineThread] = []


def live_engine_threads() -> list[EngineThread]:
    """Every EngineThread object still alive (running or not); for test fixtures."""
    return [t for t in list(_LIVE) if shiboken6.isValid(t)]


@atexit.register
def _wait_for_orphans() -> None:
    for thread in _ORPHANS:
        if shiboken6.isValid(thread):
            thread.wait()


class JobMailbox(ProgressMailbox):
    """A :class:`ProgressMailbox` that also keeps what must not be coalesced away.

    ``keep(progress)`` selects reports that are delivered one by one, in order (log messages,
    thumbnails); the newest non-empty ``info`` is remembered so a status line never loses it to a
    newer report that carries none.
    """

    def __init__(self, keep: KeepFilter | None = None, max_kept: int = 10_000) -> None:
        super().__init__()
        self._keep = keep
        self._extra_lock = threading.Lock()
        self._kept: collections.deque[Progress] = collections.deque(maxlen=max_kept)
        self._info: Mapping[str, Any] = {}

    def put(self, progress: Progress) -> bool:
        kept = self._keep is not None and self._keep(progress)
        if kept or progress.info:
            with self._extra_lock:
                if progress.info:
                    self._info = progress.info
                if kept:
                    self._kept.append(progress)
        return super().put(progress)

    def take_extras(self) -> tuple[Mapping[str, Any], list[Progress]]:
        """Return ``(newest non-empty info, kept reports since the last call)``."""
        with self._extra_lock:
            kept = list(self._kept)
            self._kept.clear()
            return self._info, kept


@dataclass(eq=False)
class JobHandle:
    """A submitted job. ``token`` stops, pauses or cancels it from any thread."""

    id: int
    name: str
    token: CancelToken
    mailbox: JobMailbox
    started: bool = False  # set on the GUI thread by JobRunner
    # What kind of work it is ("Peek", "Explore", "Canvas"...): the training run's cost line
    # names the interactive work run between its steps by it.
    kind: str = "Other"
    # Set by the GUI thread once the turn that submitted the job has ended (JobRunner); the
    # engine waits for it (at most GUI_TURN_CAP_S) before starting the job. None: no wait.
    gui_turn: threading.Event | None = None

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.name!r}>"


class EngineThread(QThread):
    """Runs submitted jobs one after another, through :func:`studio.core.jobs.run_sync`.

    Signals are emitted from the engine thread; connect them with a queued connection (or use
    :class:`JobRunner`, which does).
    """

    job_started = Signal(int)
    progress_ready = Signal(int)
    job_done = Signal(int, object)  # job id, Outcome

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("studio-engine")
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._lock = threading.Lock()
        self._jobs: dict[int, tuple[JobHandle, JobFactory]] = {}
        self._running: JobHandle | None = None
        self._interactive: collections.deque[int] = collections.deque()  # ids, oldest first
        self._nested: JobHandle | None = None  # the interactive job running now, if any
        self._ids = itertools.count(1)
        self._closed = False
        self.nice: int | None = None  # this thread's nice value once it runs (Linux)
        _LIVE.add(self)

    # -- GUI side --------------------------------------------------------------------------
    def submit(
        self,
        name: str,
        factory: JobFactory,
        *,
        keep: KeepFilter | None = None,
        interactive: bool = False,
        gui_turn: threading.Event | None = None,
        kind: str | None = None,
    ) -> JobHandle:
        """Queue ``factory(token)`` to run on this thread; starts the thread if needed.

        ``interactive``: a short job that runs between the running job's steps instead of
        after it (see the module notes). ``gui_turn``: the job starts once it is set, or
        ``GUI_TURN_CAP_S`` after it was due to start. ``kind``: what the training run's cost
        line calls its time when it runs between steps (default "Other").
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine thread has been shut down")
            handle = JobHandle(
                next(self._ids), name, CancelToken(), JobMailbox(keep), gui_turn=gui_turn
            )
            if kind:
                handle.kind = kind
            self._jobs[handle.id] = (handle, factory)
            if interactive:
                self._interactive.append(handle.id)
        self._queue.put(_INTERACTIVE if interactive else handle.id)
        if interactive:
            live.wake()  # a paused trainer yields at once rather than at its next tick
        if not self.isRunning():
            self.start()
        return handle

    def withdraw(self, handle: JobHandle) -> bool:
        """Take a job that has not started off the queue: it ends CANCELLED now (``job_done``
        is emitted at once) instead of when its turn comes. False when it has started (or
        ended): cancel its token instead."""
        with self._lock:
            if handle.id not in self._jobs or handle in (self._running, self._nested):
                return False
            del self._jobs[handle.id]
            if handle.id in self._interactive:
                self._interactive.remove(handle.id)
        handle.token.cancel()
        self.job_done.emit(handle.id, Outcome(Status.CANCELLED))
        return True

    def pending(self) -> list[JobHandle]:
        """Jobs queued or running, oldest first."""
        with self._lock:
            return [h for h, _ in self._jobs.values()]

    def running_job(self) -> JobHandle | None:
        """The queued (long) job running now; interactive jobs are not counted."""
        with self._lock:
            return self._running

    def interactive_job(self) -> JobHandle | None:
        """The interactive job running now (between the running job's steps, or alone)."""
        with self._lock:
            return self._nested

    @property
    def closed(self) -> bool:
        return self._closed

    def shutdown(
        self,
        timeout_ms: int = 30_000,
        *,
        grace_ms: int | None = None,
        process_events: Callable[[], None] | None = None,
    ) -> bool:
        """Stop the thread; return whether it did within ``timeout_ms``.

        The running job is asked to ``stop()`` (training ends early and keeps a checkpoint),
        queued jobs are cancelled (they never started, so there is nothing to keep). After
        ``grace_ms`` (default: three quarters of the timeout) everything is cancelled. Never
        terminates the thread; ``process_events`` is called while waiting so a window can
        repaint.
        """
        with self._lock:
            self._closed = True
            running = self._running
            handles = [h for h, _ in self._jobs.values()]
        for handle in handles:
            if handle is running:
                handle.token.stop()
            else:
                handle.token.cancel()
        self._queue.put(None)
        deadline = time.monotonic() + timeout_ms / 1000
        grace = timeout_ms * 3 // 4 if grace_ms is None else min(grace_ms, timeout_ms)
        if not self._wait_until(time.monotonic() + grace / 1000, process_events):
            for handle in self.pending():
                handle.token.cancel()
            self._wait_until(deadline, process_events)
        stopped = not self.isRunning()
        if not stopped and self not in _ORPHANS:
            self.setParent(None)  # outlive the window that owned it rather than crash
            _ORPHANS.append(self)
        return stopped

    def _wait_until(self, deadline: float, process_events: Callable[[], None] | None) -> bool:
        while self.isRunning():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return False
            if self.wait(min(left_ms, 50)):
                break
            if process_events is not None:
                process_events()
        return True

    # -- engine side -----------------------------------------------------------------------
    def run(self) -> None:
        self.nice = lower_thread_priority(ENGINE_NICE)  # before any job makes worker threads
        while True:
            job_id = self._queue.get()
            self._run_interactive()  # waiting interactive jobs go first (shutdown: cancelled)
            if job_id is None:
                break
            if job_id != _INTERACTIVE:  # (an interactive wake-up whose job has already run)
                self._run_job(job_id, interactive=False)

    def _run_job(self, job_id: int, *, interactive: bool) -> None:
        with self._lock:
            if job_id not in self._jobs:
                return  # withdrawn before its turn
            handle, factory = self._jobs[job_id]
            if interactive:
                self._nested = handle
            else:
                self._running = handle
        start = time.perf_counter()
        try:
            outcome = self._run_one(handle, factory, interleave=not interactive)
        except BaseException:  # noqa: BLE001 - nothing may take the engine thread down
            outcome = Outcome(Status.FAILED, error="Internal error", details=traceback.format_exc())
        if interactive:  # charged to the run training on this thread, if any, by kind
            live.charge(time.perf_counter() - start, handle.kind)
        with self._lock:
            del self._jobs[job_id]
            if interactive:
                self._nested = None
            else:
                self._running = None
        del factory  # drop the job's closure (datasets, models) before waiting for the next
        self.job_done.emit(job_id, outcome)

    def _run_interactive(self) -> None:
        """Run every waiting interactive job to completion (each charged to a run training
        here, if any, by its kind)."""
        while True:
            with self._lock:
                if not self._interactive:
                    break
                job_id = self._interactive.popleft()
            self._run_job(job_id, interactive=True)

    def _run_one(self, handle: JobHandle, factory: JobFactory, interleave: bool) -> Outcome[Any]:
        token = handle.token
        if handle.gui_turn is not None:
            handle.gui_turn.wait(GUI_TURN_CAP_S)
        if token.cancelled:
            return Outcome(Status.CANCELLED)
        self.job_started.emit(handle.id)
        mailbox, ready, job_id = handle.mailbox, self.progress_ready, handle.id

        def on_progress(progress: Progress) -> None:
            if mailbox.put(progress):
                ready.emit(job_id)
            # The running job is suspended at a yield: the moment to serve interactive jobs.
            # (len() of a deque is atomic; _run_interactive re-checks under the lock.)
            if interleave and self._interactive:
                self._run_interactive()  # each job's time is charged to the run, by kind

        def job() -> Generator[Progress, None, Any]:
            # Building the generator inside the job: errors raised by the factory itself
            # (bad settings, a failed import) become a FAILED outcome like any other.
            return (yield from factory(token))

        return run_sync(job(), token, on_progress)


@dataclass(eq=False)
class _Gate:
    event: threading.Event  # the job's JobHandle.gui_turn
    ready: Callable[[], bool] | None
    deadline: float  # time.monotonic(): the engine stops waiting then anyway


@dataclass(eq=False)
class _Track:
    handle: JobHandle
    last_delivery: float = 0.0
    timer_pending: bool = False


class JobRunner(QObject):
    """The GUI side of an :class:`EngineThread`: lives on the GUI thread, owns the thread.

    ``job_progress(handle, progress, image, points)``: the newest report (its ``info`` filled
    with the newest non-empty one), the newest image since the last delivery or None, and every
    ``(step, metrics)`` point since then. ``job_events(handle, reports)``: the reports the job's
    ``keep`` filter selected, in order. ``job_finished(handle, outcome)`` comes last.
    """

    job_started = Signal(object)
    job_progress = Signal(object, object, object, object)
    job_events = Signal(object, object)
    job_finished = Signal(object, object)

    def __init__(self, parent: QObject | None = None, *, max_rate_hz: float = 30.0) -> None:
        super().__init__(parent)
        gui_gc.acquire()  # the GUI thread alone collects garbage while the engine thread runs
        self._gc_owned = True
        self.engine = EngineThread(self)
        self._interval = 1.0 / max_rate_hz
        self._tracks: dict[int, _Track] = {}
        self._gates: collections.deque[_Gate] = collections.deque()  # oldest first
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:  # (process-wide; never raised)
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        queued = Qt.ConnectionType.QueuedConnection
        self.engine.job_started.connect(self._on_job_started, queued)
        self.engine.progress_ready.connect(self._on_progress_ready, queued)
        self.engine.job_done.connect(self._on_job_done, queued)

    def submit(
        self,
        name: str,
        factory: JobFactory,
        *,
        keep: KeepFilter | None = None,
        interactive: bool = False,
        ready: Callable[[], bool] | None = None,
        kind: str | None = None,
    ) -> JobHandle:
        """Queue a job; see :meth:`EngineThread.submit`.

        A queued job starts after this event-loop turn and its repaint, and once ``ready()``
        (called on this thread) is true, if given; at most ``GUI_TURN_CAP_S`` later (see the
        module notes). An interactive job starts at once (it runs between training steps, and
        is short).
        """
        gate = None if interactive else threading.Event()
        handle = self.engine.submit(
            name, factory, keep=keep, interactive=interactive, gui_turn=gate, kind=kind
        )
        self._tracks[handle.id] = _Track(handle)
        if gate is not None:
            self._gates.append(_Gate(gate, ready, time.monotonic() + GUI_TURN_CAP_S))
            self._post_turn_ended()
        return handle

    def active_jobs(self) -> list[JobHandle]:
        """Jobs submitted here whose ``job_finished`` has not been emitted yet."""
        return [t.handle for t in self._tracks.values()]

    def is_busy(self) -> bool:
        return bool(self._tracks)

    def shutdown(
        self,
        timeout_ms: int = 30_000,
        *,
        grace_ms: int | None = None,
        process_events: Callable[[], None] | None = None,
    ) -> bool:
        """Stop the engine thread (see :meth:`EngineThread.shutdown`)."""
        stopped = self.engine.shutdown(timeout_ms, grace_ms=grace_ms, process_events=process_events)
        if stopped and self._gc_owned:  # a thread still running keeps collection here
            self._gc_owned = False
            gui_gc.release()
        return stopped

    # -- slots (GUI thread) ------------------------------------------------------------------
    def _post_turn_ended(self) -> None:
        # Delivered after the events this turn posted, the repaint's UpdateRequest included.
        QCoreApplication.postEvent(self, QEvent(_TURN_ENDED), _AFTER_PAINT_PRIORITY)

    def customEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        # One event per waiting gate; each opens the oldest (the engine runs jobs in order).
        if event.type() != _TURN_ENDED or not self._gates:
            return
        gate = self._gates[0]
        if gate.ready is not None and time.monotonic() < gate.deadline and not gate.ready():
            QTimer.singleShot(_READY_POLL_MS, self, self._post_turn_ended)  # after more turns
            return
        self._gates.popleft().event.set()

    @Slot(int)
    def _on_job_started(self, job_id: int) -> None:
        track = self._tracks.get(job_id)
        if track is not None:
            track.handle.started = True
            self.job_started.emit(track.handle)

    @Slot(int)
    def _on_progress_ready(self, job_id: int) -> None:
        track = self._tracks.get(job_id)
        if track is None or track.timer_pending:
            return
        wait = track.last_delivery + self._interval - time.monotonic()
        if wait > 0:
            # The mailbox stays full meanwhile, so the engine queues no further wake-ups.
            track.timer_pending = True
            QTimer.singleShot(int(wait * 1000) + 1, self, lambda: self._on_timer(job_id))
            return
        self._deliver(track)

    def _on_timer(self, job_id: int) -> None:
        track = self._tracks.get(job_id)
        if track is not None:
            track.timer_pending = False
            self._deliver(track)

    @Slot(int, object)
    def _on_job_done(self, job_id: int, outcome: Outcome[Any]) -> None:
        track = self._tracks.pop(job_id, None)
        if track is None:
            return
        self._deliver(track)
        self.job_finished.emit(track.handle, outcome)

    def _deliver(self, track: _Track) -> None:
        handle = track.handle
        latest, image, points = handle.mailbox.take()
        info, kept = handle.mailbox.take_extras()
        track.last_delivery = time.monotonic()
        if kept:
            self.job_events.emit(handle, kept)
        if latest is None:
            return
        if info and not latest.info:
            latest = replace(latest, info=info)
        self.job_progress.emit(handle, latest, image, points)
