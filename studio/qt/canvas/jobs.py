"""The inpainting job the canvas submits to the engine thread.

The factory body runs on the engine thread: it imports the engine (torch) there, builds the
:class:`~studio.engine.inpaint.InpaintRequest` from the snapshot the GUI took, runs
:func:`~studio.engine.inpaint.inpaint_run_job` and makes the staging strip's thumbnails, so the
GUI thread never scales a full-size result.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from studio.core.jobs import CancelToken, Progress
from studio.core.regions import support_rect
from studio.qt.engine_jobs import Factory

THUMB_SIZE = 112


@dataclass(frozen=True)
class InpaintResult:
    """The variations (full-size, already composited into the image), their thumbnails,
    the seed used and which weights made them: the training model's at ``step``
    (``live``), or the run's saved checkpoint of ``step`` (None: unknown)."""

    accept_text: ClassVar[str] = "Accept inpainting"  # the undo step's name
    images: list[np.ndarray]
    thumbnails: list[np.ndarray]
    seed: int
    live: bool = False
    step: int | None = None

    @property
    def weights_text(self) -> str:
        from studio.qt.weights import describe_weights

        return describe_weights(self.live, self.step)


def inpaint(
    run_dir: str | Path,
    image: np.ndarray,
    mask: np.ndarray,
    settings: dict[str, Any],
    device: str = "auto",
) -> Factory:
    """A factory for one inpainting job; ``image`` and ``mask`` must be private copies and
    ``settings`` the :class:`InpaintRequest` fields other than the image and the mask."""

    def factory(token: CancelToken) -> Generator[Progress, None, InpaintResult]:
        from studio.engine import live
        from studio.engine.inpaint import InpaintRequest
        from studio.engine.peek import inpaint_peek, saved_step

        request = InpaintRequest(image=image, mask=mask, **settings)
        # Which weights inpaint_peek will use (it looks the run up the same way, next).
        entry = live.get(run_dir)
        step = entry.step if entry is not None else saved_step(run_dir)
        # The run's current weights when it is training right now (between its steps), else
        # its saved model.
        images = yield from inpaint_peek(run_dir, request, device)
        token.check()
        box = _focus_box(mask, float(settings.get("feather", 0.0)))
        thumbs = [thumbnail(im, box) for im in images]
        return InpaintResult(list(images), thumbs, request.seed, entry is not None, step)

    return factory


def _focus_box(mask: np.ndarray, feather: float) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the masked area with a margin, so a small hole in a big image
    is visible in its thumbnail."""
    h, w = mask.shape
    rect = support_rect(mask)
    if rect is None:
        return 0, h, 0, w
    margin = max(8, int(2 * feather), (rect.y1 - rect.y0 + rect.x1 - rect.x0) // 4)
    return (
        max(0, rect.y0 - margin),
        min(h, rect.y1 + margin),
        max(0, rect.x0 - margin),
        min(w, rect.x1 + margin),
    )


def thumbnail(
    image: np.ndarray, box: tuple[int, int, int, int], size: int = THUMB_SIZE
) -> np.ndarray:
    """``image[box]`` scaled to fit ``size`` (enlarged with nearest, so tiny images stay crisp)."""
    from PIL import Image

    y0, y1, x0, x1 = box
    crop = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    scale = size / max(crop.width, crop.height)
    target = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return np.asarray(crop.resize(target, method), dtype=np.uint8).copy()
