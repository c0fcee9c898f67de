"""Diffusion runs in the explorer: the DDIM settings box and what changing them does.

A diffusion run's latent is DDIM's starting noise (see :mod:`studio.engine.latent_diffusion`).
Each decode is a whole DDIM run, so the box offers the step count (fewer: faster sliders; more:
closer to the 50-step samples of the Sample workspace) and the inversion's refinements, and
says why the sliders are what they are; :func:`set_diffusion` applies a change to the loaded
space (a job on the engine thread).
"""

from __future__ import annotations

from collections.abc import Generator

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QSpinBox, QVBoxLayout, QWidget

from studio.core.jobs import CancelToken, Progress
from studio.qt.latent import tasks
from studio.qt.latent.engine_side import SpaceHolder, TaskFactory

EXPLAIN = (
    "The latent is the noise a deterministic DDIM run starts from; every picture is a whole "
    "DDIM run, so it follows a slider more slowly than a GAN or VAE. Noise drawn at random "
    "has no main directions (every direction varies alike) and its raw numbers are single "
    "pixels of noise, so the sliders are the principal directions of the noise that DDIM "
    "inversion gives the run's own training images. Interpolation is spherical: a straight "
    "line between two noises passes through too-faint noise."
)


class DiffusionSettings(QGroupBox):
    """DDIM steps and inversion refinements; ``settings_changed(steps, refine)``."""

    settings_changed = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Diffusion (DDIM)", parent)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(2, 200)
        self.steps_spin.setValue(20)
        self.steps_spin.setKeyboardTracking(False)
        self.steps_spin.setToolTip(
            "DDIM steps per picture and per inversion. Fewer: faster sliders; more: closer to "
            "the 50-step samples. An image encoded before a change decodes slightly differently "
            "after it (encode it again)."
        )
        self.refine_spin = QSpinBox()
        self.refine_spin.setRange(0, 10)
        self.refine_spin.setValue(3)
        self.refine_spin.setKeyboardTracking(False)
        self.refine_spin.setToolTip(
            "Fixed-point refinements per inversion step: each costs one more network pass per "
            "step and brings the reconstruction closer; 0 is plain DDIM inversion"
        )
        form = QFormLayout()
        form.addRow("Steps", self.steps_spin)
        form.addRow("Inversion refinements", self.refine_spin)
        self.hint = QLabel(EXPLAIN)
        self.hint.setObjectName("caption")
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.hint)
        for spin in (self.steps_spin, self.refine_spin):
            spin.valueChanged.connect(self._on_changed)
        self.setVisible(False)

    def show_values(self, steps: int, refine: int) -> None:
        for spin, value in ((self.steps_spin, steps), (self.refine_spin, refine)):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)

    def show_for(self, diffusion: bool, steps: int, refine: int) -> None:
        """Shown for a diffusion run (with its settings), hidden for the others."""
        self.setVisible(diffusion)
        if diffusion:
            self.show_values(steps, refine)

    def _on_changed(self, _value: int) -> None:
        self.settings_changed.emit(self.steps_spin.value(), self.refine_spin.value())


def set_diffusion(steps: int, refine: int) -> TaskFactory:
    """Change the loaded diffusion space's DDIM steps and refinements; returns its encoder
    description."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, str]:
        yield Progress("settings")
        space = tasks._space(context)
        space.steps, space.refine = steps, refine
        return str(space.encoder)

    return factory
