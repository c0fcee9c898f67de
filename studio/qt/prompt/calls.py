"""Submit engine jobs and get their outcome back in a callback, on the GUI thread.

The Prompt workspace runs many small jobs (list the models, read a dropped PNG, load the
history) besides generation. :class:`JobCalls` keeps one callback per job it submitted and
ignores the runner's signals for everyone else's jobs, so no panel filters handles by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject

from studio.core.jobs import Outcome, Progress, Status
from studio.qt.engine_jobs import Factory
from studio.qt.engine_thread import JobHandle, JobRunner

Done = Callable[[Any], None]
Failed = Callable[[str], None]
OnProgress = Callable[[Progress, Any], None]
OnEnd = Callable[[Outcome[Any]], None]


class JobCalls(QObject):
    """One runner, many submitted jobs, each with its own callbacks.

    ``on_done(result)`` runs when the job finished, ``on_failed(message)`` when it failed,
    ``on_cancelled()`` when it was cancelled; ``on_progress(progress, image)`` for each
    coalesced report; ``on_end(outcome)`` always, last.
    """

    def __init__(self, runner: JobRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self._calls: dict[int, dict[str, Any]] = {}
        runner.job_progress.connect(self._on_job_progress)
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
        on_end: OnEnd | None = None,
    ) -> JobHandle:
        handle = self.runner.submit(name, factory)
        self._calls[handle.id] = {
            "done": on_done,
            "failed": on_failed,
            "cancelled": on_cancelled,
            "progress": on_progress,
            "end": on_end,
        }
        return handle

    def pending(self) -> int:
        return len(self._calls)

    def engine_busy(self) -> bool:
        """Whether a job (anyone's) is running, so a new one has to wait its turn."""
        return self.runner.engine.running_job() is not None

    def _on_job_progress(self, handle: JobHandle, progress: Progress, image: Any, _points: Any):
        call = self._calls.get(handle.id)
        if call is not None and call["progress"] is not None:
            call["progress"](progress, image)

    def _on_job_finished(self, handle: JobHandle, outcome: Outcome[Any]) -> None:
        call = self._calls.pop(handle.id, None)
        if call is None:
            return
        if outcome.status is Status.FINISHED:
            if call["done"] is not None:
                call["done"](outcome.result)
        elif outcome.status is Status.CANCELLED:
            if call["cancelled"] is not None:
                call["cancelled"]()
        elif call["failed"] is not None:
            call["failed"](outcome.error or "The job failed.")
        if call["end"] is not None:
            call["end"](outcome)
