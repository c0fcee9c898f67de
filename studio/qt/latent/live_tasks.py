"""Explore's tasks for a run that is training right now: through the engine thread.

The explorer's own worker (:mod:`studio.qt.latent.worker`) runs its tasks on a copy of the run
loaded from its files. While the run trains in this window, the tasks that use the model
(finding directions, drawing samples, strips, arithmetic, encoding an image) should use its
*current* weights instead, and only the engine thread may touch the training model
(:mod:`studio.engine.live`). So each such task becomes an interactive job
(:func:`studio.engine.peek.latent_peek`), run between two training steps on a latent space over
the borrowed model. The task factories are the worker's own (:mod:`studio.qt.latent.tasks`):
they get a :class:`WorkerContext` holding that space, so one body serves both paths.

Results arrive as the worker's do (``task_progress``, ``task_done`` with the task's own value),
plus ``weights_used(live, step)``: which weights made it. Tasks that use no model (fitting or
deleting a slider, exporting a strip) and those that set the worker's own state (the class,
the DDIM settings) stay on the worker.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from studio.core.jobs import CancelToken, Outcome, Progress
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.latent.worker import TaskFactory, WorkerContext


def uses_model(factory: TaskFactory) -> TaskFactory:
    """Mark a task factory as one that runs the model (so it follows a training run's live
    weights); returns it."""
    factory.uses_model = True  # type: ignore[attr-defined]
    return factory


def needs_model(factory: Any) -> bool:
    return bool(getattr(factory, "uses_model", False))


def live_factory(
    run: Path,
    factory: TaskFactory,
    label: int | None,
    options: dict[str, Any] | None,
    device: str,
) -> Any:
    """The engine job: ``factory``'s body on a latent space over the run's current weights."""

    def job(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.peek import latent_peek

        def task(space: Any) -> Generator[Progress, None, Any]:
            context = WorkerContext()
            context.space = space
            return (yield from factory(context, token))

        return (yield from latent_peek(run, task, label, options, device))

    return job


class LiveTasks(QObject):
    """Model tasks as interactive engine jobs, in the order submitted (see the module notes)."""

    task_progress = Signal(object, object)  # JobHandle, Progress
    task_done = Signal(object, object)  # JobHandle, Outcome (its result: the task's value)
    weights_used = Signal(bool, object)  # live, step (None: unknown)

    def __init__(self, runner: JobRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = runner
        self._jobs: set[JobHandle] = set()
        self.count = 0  # tasks finished here (tests read it)
        runner.job_progress.connect(self._on_job_progress)
        runner.job_finished.connect(self._on_job_finished)

    def submit(
        self,
        name: str,
        run: Path,
        factory: TaskFactory,
        label: int | None,
        options: dict[str, Any] | None,
        device: str,
    ) -> JobHandle:
        job = live_factory(Path(run), factory, label, options, device)
        handle = self._runner.submit(name, job, interactive=True)
        self._jobs.add(handle)
        return handle

    def is_busy(self) -> bool:
        return bool(self._jobs)

    def cancel_all(self) -> None:
        for handle in list(self._jobs):
            handle.token.cancel()

    def _on_job_progress(self, handle: JobHandle, report: Progress, image: Any, _: Any) -> None:
        if handle in self._jobs:
            if image is not None and report.image is None:
                report = replace(report, image=image)  # the newest preview, coalesced apart
            self.task_progress.emit(handle, report)

    def _on_job_finished(self, handle: JobHandle, outcome: Outcome[Any]) -> None:
        if handle not in self._jobs:
            return
        self._jobs.discard(handle)
        if outcome.ok and outcome.result is not None:
            peeked = outcome.result  # a studio.engine.peek.LatentPeekResult
            self.count += 1
            self.weights_used.emit(peeked.weights.live, peeked.weights.step)
            outcome = replace(outcome, result=peeked.value)
        self.task_done.emit(handle, outcome)
