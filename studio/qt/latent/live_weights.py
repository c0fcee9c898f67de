"""The Explore workspace's side of a run that trains in this window: the settings a job on
the live weights needs, the line that says which weights the newest result used, and the end of
a training run (after which the workspace loads the run's newest saved weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel

from studio.core.jobs import Outcome
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.latent.diffusion_panel import DiffusionSettings
from studio.qt.latent.engine_side import LiveArgs
from studio.qt.latent.sliders import SliderPanel
from studio.qt.latent.tasks import Loaded
from studio.qt.weights import describe_weights


def live_args(
    loaded: Loaded, panel: SliderPanel, diffusion: DiffusionSettings, device: str
) -> LiveArgs:
    """The class and DDIM settings a job on the live weights uses (the holder's space keeps
    its own copy of both)."""
    label = panel.class_combo.currentIndex() if loaded.num_classes else None
    options = None
    if loaded.ode:  # the same DDIM steps as the sliders
        options = {"steps": diffusion.steps_spin.value(), "refine": diffusion.refine_spin.value()}
    return LiveArgs(Path(loaded.path), label, options, device)


class WeightsLine:
    """Which weights the newest picture or result used, shown under the picture."""

    def __init__(self, label: QLabel) -> None:
        self.label = label
        self.weights: tuple[bool, int | None] | None = None  # (live, step)
        self.saw_live = False  # a result came from the live weights since the run opened

    def note(self, live: bool, step: int | None) -> None:
        self.weights = (live, step)
        self.saw_live = self.saw_live or live
        self.label.setText(describe_weights(live, step))

    def clear(self) -> None:
        self.weights, self.saw_live = None, False
        self.label.clear()


class TrainingEnds(QObject):
    """``ended(run)`` when a training job on the runner ends (``run``: the trained run folder,
    or None when it failed). Not Explore's own jobs: another workspace's, so it listens to the
    runner itself rather than through JobCalls (which hears only the jobs submitted there)."""

    ended = Signal(object)

    def __init__(self, runner: JobRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        runner.job_finished.connect(self._on_job_finished)

    def _on_job_finished(self, handle: JobHandle, outcome: Outcome[Any]) -> None:
        if handle.name.startswith(("Train", "Resume")):
            self.ended.emit(getattr(outcome.result, "run", None))  # a TrainResult
