"""Explore's decodes for a run that is training right now: through the engine thread.

The explorer's own worker decodes with a copy of the run loaded from its files. While the run
trains in this window, the sliders should show its *current* weights instead, and only the
engine thread may touch the training model (:mod:`studio.engine.live`). So each decode becomes
an interactive job (:func:`studio.engine.peek.decode_peek`), run between two training steps.
Latest wins, as on the worker: at most one decode runs and one waits; a newer request replaces
the waiting one. Results come back as the worker's :class:`DecodeResult`, with request ids
drawn from the worker's own sequence, so the workspace handles both alike.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from studio.core.jobs import CancelToken, Outcome, Progress
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.latent.worker import DecodeResult


@dataclass(frozen=True)
class _Request:
    id: int
    run: Path
    z: np.ndarray
    label: int | None
    device: str
    options: dict[str, Any] | None = None  # a diffusion run's DDIM steps / refinements


def decode_factory(request: _Request) -> Any:
    """The job: decode on the engine thread, and build the QImage there too."""

    def factory(token: CancelToken) -> Generator[Progress, None, DecodeResult]:
        from studio.engine import live
        from studio.engine.peek import decode_peek
        from studio.qt.imaging import numpy_to_qimage

        start = time.perf_counter()
        array = yield from decode_peek(
            request.run, request.z, request.label, request.device, request.options
        )
        ms = (time.perf_counter() - start) * 1000
        entry = live.get(request.run)  # None: it stopped training; the saved model decoded
        step = entry.step if entry is not None else None
        return DecodeResult(request.id, numpy_to_qimage(array), array, ms, entry is not None, step)

    return factory


class LiveDecoder(QObject):
    """Latest-wins decodes as interactive engine jobs; ``decoded(DecodeResult)``."""

    decoded = Signal(object)

    def __init__(self, runner: JobRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = runner
        self._job: JobHandle | None = None
        self._waiting: _Request | None = None
        self.decode_count = 0
        runner.job_finished.connect(self._on_job_finished)

    def request(
        self,
        request_id: int,
        run: Path,
        z: np.ndarray,
        label: int | None,
        device: str,
        options: dict[str, Any] | None = None,
    ) -> int:
        """Ask for ``z`` decoded with ``run``'s current weights; returns ``request_id``."""
        z = np.array(z, np.float32, copy=True)
        req = _Request(request_id, Path(run), z, label, device, options)
        if self._job is not None:
            self._waiting = req  # replaces an older waiting request: latest wins
        else:
            self._send(req)
        return request_id

    def is_busy(self) -> bool:
        return self._job is not None

    def shutdown(self) -> None:
        self._waiting = None
        if self._job is not None:
            self._job.token.cancel()

    def _send(self, req: _Request) -> None:
        self._job = self._runner.submit("Decode", decode_factory(req), interactive=True)

    def _on_job_finished(self, handle: JobHandle, outcome: Outcome[Any]) -> None:
        if handle is not self._job:
            return
        self._job = None
        if outcome.ok:
            self.decode_count += 1
            self.decoded.emit(outcome.result)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._send(waiting)
