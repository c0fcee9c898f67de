"""The Explore workspace's side of a run that trains in this window: the settings a job on
the live weights needs, the line that says which weights the newest result used, and the end of
a training run (after which the workspace loads the run's newest saved weights)."""

from __future__ import annotations

from collections.abc import Callable
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
    """Which weights Explore shows: the one place the line under the picture and the
    directions line read.

    ``weights`` is (live, step) of the newest picture or result; ``directions`` that of the
    weights the principal directions were found on. Directions found on a training run's live
    weights go stale when its training ends (the picture moves to the saved weights): the
    directions line says so ("found on training step 30; refit") until they are refitted.
    ``on_change`` is called whenever the directions line's words may have changed.
    """

    def __init__(self, label: QLabel, on_change: Callable[[], None] | None = None) -> None:
        self.label = label
        self.on_change = on_change
        self.weights: tuple[bool, int | None] | None = None  # (live, step)
        self.directions: tuple[bool, int | None] | None = None  # what they were found on
        self.refitting = False  # stale directions being found again on the saved weights
        self.saw_live = False  # a result came from the live weights since the run opened

    def note(self, live: bool, step: int | None) -> None:
        self.weights = (live, step)
        self.saw_live = self.saw_live or live
        self.label.setText(describe_weights(live, step))
        self._changed()

    def found_directions(self) -> None:
        """The principal directions were just found, on the weights noted last."""
        self.directions, self.refitting = self.weights, False
        self._changed()

    def stale(self) -> bool:
        """Whether the directions were found on live weights that are no longer shown."""
        found_live = self.directions is not None and self.directions[0]
        return found_live and self.weights is not None and not self.weights[0]

    def directions_text(self) -> str:
        """Which weights the directions were found on, and whether they are stale."""
        if self.directions is None:
            return ""
        live, step = self.directions
        at = "?" if step is None else f"{step:,}"
        if self.stale():
            if self.refitting:
                return (
                    f"Found on training step {at}; training ended: refitting on the saved weights…"
                )
            return f"Found on training step {at}; training ended since: refit (Reload)."
        if live:
            return f"Found on the live weights of training step {at}."
        return "Found on the saved weights" + (
            "." if step is None else f": checkpoint of step {at}."
        )

    def clear(self) -> None:
        self.weights, self.directions, self.saw_live, self.refitting = None, None, False, False
        self.label.clear()
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


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
