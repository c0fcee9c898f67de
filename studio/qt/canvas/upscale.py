"""Upscale on the Canvas: enlarge the image with a super-resolution run
(:mod:`studio.engine.upscale`: a family with ``Capability.SINGLE_FOLDER`` whose
``output_scale`` is 2 or more, read from the run's config.json).

:class:`UpscalePanel` is a :class:`~studio.qt.canvas.run_tool.RunToolPanel` that offers the
recent runs that enlarge images, with the sampler steps (0: the run's default) and the tile
size. *Whole image*: the model upscales every pixel, in overlapping tiles blended without
seams. *Masked region only*: the whole image is enlarged bicubically and the model upscales
the window around the mask, blended in through the enlarged, feathered mask: quicker when
only a face or a detail matters. The result is staged; *Accept* enlarges the canvas and its
mask (bilinear) in one undoable step.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PySide6.QtCore import SignalInstance
from PySide6.QtWidgets import QFormLayout, QSpinBox

from studio.core.jobs import CancelToken, Progress
from studio.core.options import UPSCALE_TILE
from studio.qt.canvas.jobs import thumbnail
from studio.qt.canvas.run_tool import RunToolPanel

MIN_TILE, MAX_TILE = 16, 1024


@dataclass(frozen=True)
class UpscaleChoice:
    """The run, whether only the mask, the seed, the sampler steps (None: the run's
    default) and the tile size in input pixels."""

    run: str
    masked: bool
    seed: int = 0
    steps: int | None = None
    tile: int = UPSCALE_TILE


@dataclass(frozen=True)
class UpscaledImage:
    """A finished upscale for the staging strip (the fields the Stager reads); ``resizes``:
    accepting it enlarges the canvas and its mask."""

    accept_text: ClassVar[str] = "Accept upscale"
    resizes: ClassVar[bool] = True
    images: list[np.ndarray]
    thumbnails: list[np.ndarray]
    seed: int | None
    weights_text: str


def upscale(
    image: np.ndarray,
    mask: np.ndarray | None,
    feather: float,
    choice: UpscaleChoice,
    device: str = "auto",
) -> Callable[[CancelToken], Generator[Progress, None, UpscaledImage]]:
    """A factory for one job (runs on the engine thread): enlarge a private copy of
    ``image``, by the model everywhere (``mask`` None) or in the window around the mask."""

    def factory(token: CancelToken) -> Generator[Progress, None, UpscaledImage]:
        from studio.engine.upscale import upscale_canvas_job

        job = upscale_canvas_job(
            choice.run,
            image,
            mask,
            feather,
            choice.seed,
            choice.steps,
            None,
            choice.tile,
            device,
        )
        out = yield from job
        token.check()
        h, w = out.shape[:2]
        where = "the masked region" if mask is not None else "the whole image"
        text = f"Upscaled to {w} x {h} by {Path(choice.run).name} ({where})"
        return UpscaledImage([out], [thumbnail(out, (0, h, 0, w))], choice.seed, text)

    return factory


class UpscalePanel(RunToolPanel):
    """The shared run tool, with the sampler steps and the tile size."""

    title = "Upscale"
    verb = "Upscale"
    progress_verb = "Upscaling"
    run_placeholder = "Choose a super-resolution run…"
    run_tooltip = "Recent runs whose model enlarges images (super-resolution)"
    button_tooltip = (
        "Enlarge the image with the chosen run; Accept makes the canvas that much larger"
    )
    seed_tooltip = "The noise each tile starts from: another seed, slightly other detail"
    no_run_message = "Choose a run that upscales images (a super-resolution run)."
    no_mask_message = "No mask painted: paint the region to upscale first."

    @property
    def upscaled(self) -> SignalInstance:
        """``finished`` under the name the workspace connects."""
        return self.finished

    @property
    def upscale_button(self) -> Any:
        return self.action_button

    @staticmethod
    def list_runs(paths: list[str]) -> list[Any]:
        from studio.engine.upscale import upscaling_runs

        return upscaling_runs(paths)

    @staticmethod
    def describe(path: str) -> Any:
        from studio.engine.upscale import check_upscales

        return check_upscales(path)

    def add_rows(self, form: QFormLayout) -> None:
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 1000)
        self.steps_spin.setSpecialValueText("Run's default")
        self.steps_spin.setToolTip("Sampler steps per tile: more is slower and a little cleaner")
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(MIN_TILE, MAX_TILE)
        self.tile_spin.setValue(UPSCALE_TILE)
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip(
            "Input pixels per tile: tiles overlap by a quarter and blend without seams; "
            "smaller tiles need less memory"
        )
        form.addRow("Steps", self.steps_spin)
        form.addRow("Tile", self.tile_spin)

    def choice(self) -> UpscaleChoice | None:
        run = self.run()
        if run is None:
            return None
        steps = self.steps_spin.value() or None
        return UpscaleChoice(
            run, self.masked(), self.seed_spin.value(), steps, self.tile_spin.value()
        )

    def scale(self) -> int | None:
        """The chosen run's scale, when the list knows it."""
        info = self.run_info(self.run())
        return None if info is None else int(info.scale)

    def make_job(self, image: np.ndarray, mask: np.ndarray | None, run: str, device: str) -> Any:
        choice = self.choice()
        assert choice is not None and choice.run == run
        return upscale(image, mask, self._feather(), choice, device)

    def update_tool_controls(self, run: str | None, running: bool) -> None:
        scale = self.scale()
        if scale and not running:
            self.action_button.setText(f"Upscale x{scale}")
        elif not running:
            self.action_button.setText(self.verb)
