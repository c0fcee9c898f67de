"""Explore's jobs on the window's engine thread, each heard by its own callbacks.

Every Explore job goes through one :class:`~studio.qt.job_calls.JobCalls` on the window's
:class:`~studio.qt.engine_thread.JobRunner`; there is no thread of Explore's own.

- **Slider decodes** run on the latest-wins lane ``"decode"``, as interactive jobs: between two
  training steps when a run (this one or another) is training, at once when the engine is idle,
  and between the steps of Explore's own long task (a projection). A new request cancels the
  lane's older one, so a fast drag never builds a backlog. Each answer carries its request id:
  the workspace shows only answers newer than the one on show.
- **Tasks** (load a run, find directions, encode, project, make a strip, fit a slider) run on
  the :class:`~studio.qt.latent.engine_side.SpaceHolder`'s space, as queued jobs when no one
  else's job runs (so decodes run between their steps) and as interactive jobs when one does
  (a training run would otherwise keep them waiting for hours). While the explored run trains
  in this window, tasks that use the model run on its current weights instead
  (:func:`~studio.qt.latent.engine_side.live_task_job`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from PySide6.QtCore import QObject

from studio.core.jobs import Outcome, Progress
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.job_calls import JobCalls
from studio.qt.latent.engine_side import (
    DecodeResult,
    LiveArgs,
    SpaceHolder,
    TaskFactory,
    decode_job,
    drop_space,
    holder_job,
    live_decode_job,
    live_task_job,
)

DECODE_LANE = "decode"
Weights = Callable[[bool, "int | None"], None]


class ExploreJobs:
    """Decodes (latest-wins) and tasks for the Explore workspace (see the module notes)."""

    def __init__(self, runner: JobRunner, parent: QObject | None = None) -> None:
        self.calls = JobCalls(runner, parent, kind="Explore")
        self.holder = SpaceHolder()  # touched by jobs only, on the engine thread
        self._requests = itertools.count(1)
        self._closed = False
        self.requested_count = 0  # decodes asked for
        self.live_decode_count = 0  # decodes answered with a training run's current weights
        self.live_count = 0  # tasks finished on a training run's current weights

    @property
    def decode_count(self) -> int:
        """Decodes run on the holder's space (the saved weights)."""
        return self.holder.decode_count

    @property
    def closed(self) -> bool:
        return self._closed

    def decode(
        self,
        z: np.ndarray,
        on_decoded: Callable[[DecodeResult], None],
        on_failed: Callable[[str], None],
        live: LiveArgs | None = None,
        detail_seed: int | None = None,
    ) -> int:
        """Ask for ``z`` decoded (with ``live``: a training run's current weights; with
        ``detail_seed``: the levels below a hierarchical latent drawn anew from it); cancels
        the older request if it has not finished. Returns the request id (0: closed)."""
        if self._closed:
            return 0
        z = np.array(z, np.float32, copy=True)  # the GUI keeps editing its own array
        request = next(self._requests)
        self.requested_count += 1
        if live is None:
            job = decode_job(self.holder, request, z, detail_seed)
        else:
            job = live_decode_job(request, z, live, detail_seed)

        def done(result: DecodeResult | None) -> None:
            if result is not None:
                self.live_decode_count += result.live
                on_decoded(result)

        self.calls.submit(
            "Decode", job, on_done=done, on_failed=on_failed, lane=DECODE_LANE, interactive=True
        )
        return request

    def submit(
        self,
        name: str,
        factory: TaskFactory,
        on_done: Callable[[Any], None],
        on_failed: Callable[[str], None],
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_end: Callable[[Outcome[Any]], None] | None = None,
        live: LiveArgs | None = None,
        on_weights: Weights | None = None,
    ) -> JobHandle | None:
        """Run a task on the holder's space, or with ``live`` on the run's current weights
        (``on_weights(live, step)`` says which weights made the result). None: closed."""
        if self._closed:
            return None
        done = on_done
        if live is not None:
            job, interactive = live_task_job(factory, live), True

            def done(peeked: Any) -> None:  # a studio.engine.peek.LatentPeekResult
                self.live_count += 1
                if on_weights is not None:
                    on_weights(peeked.weights.live, peeked.weights.step)
                on_done(peeked.value)
        else:
            job, interactive = holder_job(self.holder, factory), self._someone_else_runs()

        def progress(report: Progress, image: Any, _points: Any) -> None:
            if on_progress is not None:
                if image is not None and report.image is None:
                    report = replace(report, image=image)  # the newest preview, coalesced apart
                on_progress(report)

        return self.calls.submit(
            name, job, on_done=done, on_failed=on_failed, on_progress=progress, on_end=on_end,
            interactive=interactive,
        )  # fmt: skip

    def _someone_else_runs(self) -> bool:
        running = self.calls.runner.engine.running_job()
        return running is not None and not self.calls.owns(running)

    def is_busy(self) -> bool:
        """Whether a decode or task asked for here has not ended yet."""
        return self.calls.pending() > 0

    def cancel_all(self) -> None:
        """Cancel every decode and task (each still ends: its ``on_end`` runs)."""
        self.calls.cancel_all()

    def shutdown(self) -> None:
        """Cancel and forget everything, free the model on the engine thread; later requests
        are ignored."""
        if self._closed:
            return
        self._closed = True
        for handle in self.calls.active():
            self.calls.forget(handle)
        if not self.calls.runner.engine.closed:
            self.calls.runner.submit(
                "Close Explore", drop_space(self.holder), interactive=True, kind="Explore"
            )
