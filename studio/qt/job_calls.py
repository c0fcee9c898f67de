"""The one way a workspace runs an engine job and hears about its own, on the GUI thread.

A :class:`JobRunner` signals every job's progress and ending to everyone connected. A
workspace that connected to those signals had to filter handles by hand ("is this my job?").
:class:`JobCalls` keeps the callbacks of each job submitted through it and calls only those:

```python
calls = JobCalls(runner, parent=self)
calls.submit("Sample", factory, on_done=self._show, on_failed=self._error)
calls.submit("Decode", factory, on_done=self._show, lane="decode", interactive=True)
```

Callbacks (all optional, all on the GUI thread): ``on_started(handle)``;
``on_progress(progress, image, points)`` for each coalesced report (newest report, newest image
or None, every metrics point since the last one); ``on_events(reports)`` for the reports the
job's ``keep`` filter selected; then exactly one of ``on_done(result)``, ``on_failed(message)``
or ``on_cancelled()``; and ``on_end(outcome)`` always, last.

A *lane* makes requests latest-wins: submitting on a lane cancels the lane's previous job if
it has not finished (its ``on_cancelled``/``on_end`` still run, so a busy indicator clears),
so a slider dragged fast runs only the newest decode. A lane is a name, private to this
``JobCalls``; lanes run on the runner's engine thread like any job (``interactive=True``
between training steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject

from studio.core.jobs import Outcome, Progress, Status
from studio.qt.engine_jobs import Factory
from studio.qt.engine_thread import JobHandle, JobRunner, KeepFilter

Done = Callable[[Any], None]
Failed = Callable[[str], None]
OnProgress = Callable[[Progress, Any, Any], None]
OnEvents = Callable[[list[Progress]], None]
OnEnd = Callable[[Outcome[Any]], None]


@dataclass
class _Call:
    handle: JobHandle
    lane: str | None
    on_started: Callable[[JobHandle], None] | None
    on_progress: OnProgress | None
    on_events: OnEvents | None
    on_done: Done | None
    on_failed: Failed | None
    on_cancelled: Callable[[], None] | None
    on_end: OnEnd | None


class JobCalls(QObject):
    """One runner, many submitted jobs, each heard only by its own callbacks."""

    def __init__(
        self, runner: JobRunner, parent: QObject | None = None, *, kind: str | None = None
    ) -> None:
        super().__init__(parent)
        self.runner = runner
        # The kind of work its jobs are ("Explore", "Canvas"...): a training run's cost line
        # names the interactive jobs run between its steps by it.
        self.kind = kind
        self._calls: dict[int, _Call] = {}
        self._lanes: dict[str, JobHandle] = {}
        runner.job_started.connect(self._on_job_started)
        runner.job_progress.connect(self._on_job_progress)
        runner.job_events.connect(self._on_job_events)
        runner.job_finished.connect(self._on_job_finished)

    def submit(
        self,
        name: str,
        factory: Factory,
        on_done: Done | None = None,
        on_failed: Failed | None = None,
        *,
        on_cancelled: Callable[[], None] | None = None,
        on_progress: OnProgress | None = None,
        on_events: OnEvents | None = None,
        on_started: Callable[[JobHandle], None] | None = None,
        on_end: OnEnd | None = None,
        keep: KeepFilter | None = None,
        interactive: bool = False,
        ready: Callable[[], bool] | None = None,
        lane: str | None = None,
        kind: str | None = None,
    ) -> JobHandle:
        if lane is not None:
            previous = self._lanes.get(lane)
            if previous is not None and previous.id in self._calls:
                previous.token.cancel()
        handle = self.runner.submit(
            name, factory, keep=keep, interactive=interactive, ready=ready, kind=kind or self.kind
        )
        self._calls[handle.id] = _Call(
            handle, lane, on_started, on_progress, on_events, on_done, on_failed,
            on_cancelled, on_end,
        )  # fmt: skip
        if lane is not None:
            self._lanes[lane] = handle
        return handle

    def pending(self) -> int:
        """How many jobs submitted here have not ended yet."""
        return len(self._calls)

    def active(self, lane: str | None = None) -> list[JobHandle]:
        """The jobs submitted here (on ``lane``, if given) that have not ended yet."""
        return [c.handle for c in self._calls.values() if lane is None or c.lane == lane]

    def owns(self, handle: JobHandle) -> bool:
        return handle.id in self._calls

    def forget(self, handle: JobHandle | None) -> None:
        """Cancel ``handle`` and drop its callbacks: its late reports and its end go unheard."""
        if handle is None:
            return
        handle.token.cancel()
        call = self._calls.pop(handle.id, None)
        if call is not None and call.lane is not None and self._lanes.get(call.lane) is handle:
            del self._lanes[call.lane]

    def withdraw_or_cancel(self, handle: JobHandle) -> None:
        """A job still waiting its turn ends CANCELLED now; one that runs is cancelled at its
        next yield. Its ``on_cancelled`` and ``on_end`` run either way."""
        if not self.runner.engine.withdraw(handle):
            handle.token.cancel()

    def cancel_all(self) -> None:
        for call in self._calls.values():
            call.handle.token.cancel()

    def engine_busy(self) -> bool:
        """Whether a job (anyone's) is running, so a new one has to wait its turn."""
        return self.runner.engine.running_job() is not None

    # -- the runner's signals (GUI thread) -------------------------------------------------
    def _on_job_started(self, handle: JobHandle) -> None:
        call = self._calls.get(handle.id)
        if call is not None and call.on_started is not None:
            call.on_started(handle)

    def _on_job_progress(self, handle: JobHandle, progress: Progress, image: Any, points: Any):
        call = self._calls.get(handle.id)
        if call is not None and call.on_progress is not None:
            call.on_progress(progress, image, points)

    def _on_job_events(self, handle: JobHandle, reports: list[Progress]) -> None:
        call = self._calls.get(handle.id)
        if call is not None and call.on_events is not None:
            call.on_events(reports)

    def _on_job_finished(self, handle: JobHandle, outcome: Outcome[Any]) -> None:
        call = self._calls.pop(handle.id, None)
        if call is None:
            return
        if call.lane is not None and self._lanes.get(call.lane) is handle:
            del self._lanes[call.lane]
        if outcome.status is Status.FINISHED:
            if call.on_done is not None:
                call.on_done(outcome.result)
        elif outcome.status is Status.CANCELLED:
            if call.on_cancelled is not None:
                call.on_cancelled()
        elif call.on_failed is not None:
            call.on_failed(outcome.error or "The job failed.")
        if call.on_end is not None:
            call.on_end(outcome)
