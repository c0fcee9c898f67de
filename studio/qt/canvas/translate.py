"""Translate on the Canvas: repaint the image (or its masked region) with a run of an
image-to-image family (:mod:`studio.engine.translate`, ``Capability.PAIRED``).

:class:`TranslatePanel` is a :class:`~studio.qt.canvas.run_tool.RunToolPanel` (the run list,
area, seed, job, progress and cancel they share) that offers the recent runs whose family
translates images at their own size (runs that enlarge are *Upscale*'s), and a direction for
runs that translate both ways. The finished image goes to the staging strip like an
inpainting variation.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PySide6.QtCore import SignalInstance
from PySide6.QtWidgets import QComboBox, QFormLayout

from studio.core.jobs import CancelToken, Progress
from studio.qt.canvas.jobs import thumbnail
from studio.qt.canvas.run_tool import AREAS, RunToolPanel

__all__ = ["AREAS", "DIRECTION_LABELS", "TranslateChoice", "TranslatePanel", "translate"]

DIRECTION_LABELS = (("a2b", "A to B"), ("b2a", "B to A"))


@dataclass(frozen=True)
class TranslateChoice:
    """What the panel asks for: the run, the direction (None: the run's only way), whether
    only the mask, and the seed."""

    run: str
    direction: str | None
    masked: bool
    seed: int = 0


@dataclass(frozen=True)
class TranslatedImage:
    """A finished translation for the staging strip (the fields the Stager reads)."""

    accept_text: ClassVar[str] = "Accept translation"
    images: list[np.ndarray]
    thumbnails: list[np.ndarray]
    seed: int | None
    weights_text: str


def translate(
    image: np.ndarray,
    mask: np.ndarray | None,
    feather: float,
    choice: TranslateChoice,
    device: str = "auto",
) -> Callable[[CancelToken], Generator[Progress, None, TranslatedImage]]:
    """A factory for one job (runs on the engine thread): translate a private copy of
    ``image`` whole (``mask`` None) or the window around the mask, blended through it."""

    def factory(token: CancelToken) -> Generator[Progress, None, TranslatedImage]:
        from studio.engine.translate import translate_canvas_job

        job = translate_canvas_job(
            choice.run, image, mask, feather, choice.seed, choice.direction, device
        )
        out = yield from job
        token.check()
        h, w = out.shape[:2]
        way = dict(DIRECTION_LABELS).get(choice.direction or "", "")
        text = f"Translated by {Path(choice.run).name}" + (f", {way}" if way else "")
        return TranslatedImage([out], [thumbnail(out, (0, h, 0, w))], choice.seed, text)

    return factory


class TranslatePanel(RunToolPanel):
    """The shared run tool, with a direction for runs that translate both ways."""

    title = "Image to image"
    verb = "Translate"
    progress_verb = "Translating"
    run_placeholder = "Choose a translating run…"
    run_tooltip = (
        "Recent runs whose model translates images (trained on A and B, or a style network)"
    )
    button_tooltip = "Translate the image, or its masked region, with the chosen run"
    seed_tooltip = "Models with dropout translate a little differently per seed"
    no_run_message = (
        "Choose a run that translates images (trained on folders A and B, or a style network)."
    )
    no_mask_message = "No mask painted: paint the region to translate first."

    @property
    def translated(self) -> SignalInstance:
        """``finished`` under the name the workspace connects."""
        return self.finished

    @property
    def translate_button(self) -> Any:
        return self.action_button

    @staticmethod
    def list_runs(paths: list[str]) -> list[Any]:
        from studio.engine.translate import translating_runs

        return translating_runs(paths)

    @staticmethod
    def describe(path: str) -> Any:
        from studio.engine.translate import describe_translator

        return describe_translator(path)

    def add_rows(self, form: QFormLayout) -> None:
        self.direction_combo = QComboBox()
        for key, text in DIRECTION_LABELS:
            self.direction_combo.addItem(text, key)
        self.direction_combo.setToolTip("Runs trained on two unpaired folders translate both ways")
        form.addRow("Direction", self.direction_combo)

    def _both_ways(self, run: str | None) -> bool:
        info = self.run_info(run)
        return bool(info is not None and info.both_ways)

    def choice(self) -> TranslateChoice | None:
        run = self.run()
        if run is None:
            return None
        direction = str(self.direction_combo.currentData()) if self._both_ways(run) else None
        return TranslateChoice(run, direction, self.masked(), self.seed_spin.value())

    def make_job(self, image: np.ndarray, mask: np.ndarray | None, run: str, device: str) -> Any:
        choice = self.choice()
        assert choice is not None and choice.run == run
        return translate(image, mask, self._feather(), choice, device)

    def update_tool_controls(self, run: str | None, running: bool) -> None:
        del running
        self.direction_combo.setEnabled(bool(run) and self._both_ways(run))
        if not self.direction_combo.isEnabled():
            self.direction_combo.setToolTip("This run translates one way only (A to B)")
        else:
            self.direction_combo.setToolTip("A to B or B to A")
