"""The Explore workspace's side of a run that trains in this window (a mixin of
:class:`~studio.qt.latent.workspace.LatentWorkspace`): the settings a job on the live weights
needs, the line that says which weights the newest result used, and, once the training ends,
the newest saved weights loaded into the worker in place of its older copy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QLabel

from studio.core.jobs import Outcome
from studio.engine.live import is_live
from studio.qt.engine_thread import JobHandle
from studio.qt.latent import tasks
from studio.qt.latent.diffusion_panel import DiffusionSettings
from studio.qt.latent.header import RunHeader
from studio.qt.latent.sliders import SliderPanel
from studio.qt.settings import AppSettings
from studio.qt.weights import describe_weights


class LiveWeightsMixin:
    """See the module notes."""

    # Provided by the workspace.
    loaded: tasks.Loaded | None
    slider_panel: SliderPanel
    diffusion_settings: DiffusionSettings
    header: RunHeader
    caption: QLabel
    weights_label: QLabel
    weights: tuple[bool, int | None] | None
    _saw_live: bool
    _settings: AppSettings
    _submit: Callable[..., Any]
    _request_decode: Callable[[], None]

    def _live_settings(self) -> tuple[int | None, dict[str, Any] | None]:
        """The class and DDIM settings a job on the live weights uses (the worker's space
        keeps its own copy of both)."""
        assert self.loaded is not None
        label = self.slider_panel.class_combo.currentIndex() if self.loaded.num_classes else None
        options = None
        if self.loaded.ode:  # the same DDIM steps as the sliders
            ds = self.diffusion_settings
            options = {"steps": ds.steps_spin.value(), "refine": ds.refine_spin.value()}
        return label, options

    def _note_weights(self, live: bool, step: int | None) -> None:
        """The newest result used these weights: say so under the picture."""
        self.weights = (live, step)
        self._saw_live = self._saw_live or live
        self.weights_label.setText(describe_weights(live, step))

    def _on_engine_job_finished(self, handle: JobHandle, outcome: Outcome[Any]) -> None:
        if self.loaded is None or not handle.name.startswith(("Train", "Resume")):
            return
        trained = getattr(outcome.result, "run", None)  # a TrainResult; None if it failed
        if trained is not None and Path(trained).resolve() != Path(self.loaded.path).resolve():
            return  # another run's training ended: nothing new for the one on show
        self.header.reload_button.setEnabled(True)
        if self._saw_live and not is_live(self.loaded.path):
            # The pictures showed the live weights; the worker's copy is older. Load the
            # newest saved ones (what training just wrote), keeping the edit on show.
            self._saw_live = False
            path, device = self.loaded.path, self._settings.device_preference()
            self._submit("Load weights", tasks.refresh_weights(path, device), self._on_refreshed)
        else:
            self.caption.setText("Training finished: Reload for the newest weights")

    def _on_refreshed(self, step: int | None) -> None:
        if self.loaded is None:
            return
        self.loaded = replace(self.loaded, step=step)
        self._note_weights(False, step)
        self.caption.setText("Training finished: showing its newest saved weights")
        self._request_decode()
