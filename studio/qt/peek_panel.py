"""The Train workspace's Peek box: samples from the run's current weights while it trains.

"Sample now" submits an *interactive* job (:meth:`studio.qt.engine_thread.EngineThread.submit`):
it runs between two training steps (or while paused) with the live model
(:func:`studio.engine.peek.sample_peek`), and from the run's saved model when the run is not
training. Requests are latest-wins: at most one runs and one waits. The box also shows what
peeking costs the training run (``peek_cost`` in the trainer's reports).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.core.jobs import CancelToken, Outcome, Progress, Status, TrainStatus
from studio.qt.engine_jobs import Factory
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.job_calls import JobCalls
from studio.qt.settings import AppSettings
from studio.qt.widgets import ImageView

MAX_SAMPLES = 64  # studio.engine.peek.MAX_PEEK_SAMPLES (not imported here: it pulls in torch)
GRID_HEIGHT = 300  # the result grid's fixed height (reserved before the first peek)


def peek_samples(run_dir: Path, n: int, seed: int, device: str) -> Factory:
    """A factory for one peek; the body (and torch) runs on the engine thread."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.peek import sample_peek

        return (yield from sample_peek(run_dir, n, seed, device))

    return factory


def format_cost(info: Mapping[str, Any]) -> str:
    """``Interleaved work: 24% of training time (Explore 15%, Canvas 9%; 31.0 s so far)``:
    every job run between the run's steps, named by kind; "" before any."""
    status = TrainStatus.read(info)
    if status.peek_s <= 0:
        return ""
    parts = ", ".join(f"{kind} {_share(share)}" for kind, share in status.peek_kinds)
    detail = f"{parts}; " if parts else ""
    return (
        f"Interleaved work: {_share(status.peek_cost)} of training time "
        f"({detail}{status.peek_s:,.1f} s so far)"
    )


def _share(value: float) -> str:
    """A share as a percentage: whole numbers from 1%, one decimal below, "<0.1%" for a trace."""
    if 0 < value < 0.001:
        return "<0.1%"
    return f"{value:.0%}" if value >= 0.01 else f"{value:.1%}"


class PeekPanel(QGroupBox):
    """Seed, count, "Sample now", the result grid and the cost readout.

    ``peeked(result)`` fires with each :class:`studio.engine.peek.PeekResult` shown.
    """

    peeked = Signal(object)

    def __init__(
        self, runner: JobRunner, settings: AppSettings, parent: QWidget | None = None
    ) -> None:
        super().__init__("Peek", parent)
        self._runner, self._settings = runner, settings
        self._run: Path | None = None
        self._training = False
        self._job: JobHandle | None = None
        self._waiting: tuple[Path, int, int] | None = None  # the newest request not yet sent
        self.result: Any = None

        self.count_spin = QSpinBox()
        self.count_spin.setRange(1, MAX_SAMPLES)
        self.count_spin.setValue(16)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(0)
        self.sample_button = QPushButton("Sample now")
        self.sample_button.setToolTip(
            "Sample from the run's current weights (EMA for diffusion) without stopping "
            "training: the samples are drawn between two training steps."
        )
        self.sample_button.clicked.connect(self.sample)
        form = QFormLayout()
        form.addRow("Samples", self.count_spin)
        form.addRow("Seed", self.seed_spin)
        row = QHBoxLayout()
        row.addLayout(form, 1)
        row.addWidget(self.sample_button)
        # Every part has a fixed height, so a result, a caption or the cost line coming and
        # going never moves the button or the grid (the next click would miss).
        self.grid = ImageView("Peek at the model while it trains.")
        self.grid.setFixedHeight(GRID_HEIGHT)
        self.caption = QLabel("")
        self.caption.setObjectName("caption")
        self.caption.setWordWrap(True)
        self.cost_label = QLabel("")
        self.cost_label.setObjectName("hint")
        self.cost_label.setWordWrap(True)
        for label, lines in ((self.caption, 3), (self.cost_label, 3)):
            label.ensurePolished()  # (the theme's font for its name)
            label.setFixedHeight(lines * label.fontMetrics().lineSpacing() + 4)
            label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.grid)
        layout.addWidget(self.caption)
        layout.addWidget(self.cost_label)

        self._calls = JobCalls(runner, self, kind="Peek")
        self._update_controls()

    # -- inputs from the Train panel --------------------------------------------------------
    def set_run(self, path: Path | None) -> None:
        if path != self._run:
            self._run = path
            self.grid.set_image(None)
            self.caption.clear()
            self.cost_label.clear()
        self._update_controls()

    def set_training(self, training: bool) -> None:
        self._training = bool(training)
        self._update_controls()

    def show_info(self, info: Mapping[str, Any]) -> None:
        """A training report's info: update the cost readout."""
        text = format_cost(info)
        if text:
            self.cost_label.setText(text)

    # -- actions ---------------------------------------------------------------------------
    def is_busy(self) -> bool:
        return self._job is not None

    def sample(self) -> bool:
        """Ask for a peek; while one runs, the newest request waits (older ones are dropped)."""
        if self._run is None:
            return False
        request = (self._run, self.count_spin.value(), self.seed_spin.value())
        if self._job is not None:
            self._waiting = request
            return True
        self._send(request)
        return True

    def _send(self, request: tuple[Path, int, int]) -> None:
        run, n, seed = request
        factory = peek_samples(run, n, seed, self._settings.device_preference())
        self._job = self._calls.submit(
            f"Peek at {run.name}", factory, interactive=True, on_end=self._on_job_ended
        )
        self.caption.setText("Sampling between training steps…" if self._training else "Sampling…")
        self._update_controls()

    def _on_job_ended(self, outcome: Outcome[Any]) -> None:
        self._job = None
        if outcome.ok:
            self._show(outcome.result)
        elif outcome.status is Status.FAILED:
            self.caption.setText(outcome.error or "The peek failed.")
        else:
            self.caption.setText("Cancelled")
        waiting, self._waiting = self._waiting, None
        if waiting is not None and waiting[0] == self._run:
            self._send(waiting)
        self._update_controls()

    def _show(self, result: Any) -> None:
        self.result = result
        self.grid.set_image(result.grid)
        source = (
            f"current weights at step {result.step:,}" if result.live else "the run's saved model"
        )
        self.caption.setText(
            f"{len(result.images)} samples, seed {result.seed}, from {source} "
            f"({result.seconds:.2f} s)"
        )
        self.peeked.emit(result)

    def _update_controls(self) -> None:
        self.sample_button.setEnabled(self._run is not None)
