"""Sampling from a run folder: a job with per-step progress and cancel."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.core.errors import StudioError
from studio.core.imaging import make_grid
from studio.core.jobs import Progress
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.run_model import load_run_model as load_run_model  # re-exported
from studio.models.base import Capability, GenerativeModel, images_to_uint8


def sample_job(
    run_dir: str | Path,
    n: int,
    seed: int = 0,
    device: str = "auto",
    model: GenerativeModel | None = None,
    **conditions: Any,
) -> Generator[Progress, None, np.ndarray]:
    """``n`` samples as an ``n x H x W x 3`` uint8 array. Same seed and device: same images."""
    if n < 1:
        raise StudioError("Ask for at least one sample.")
    yield Progress("load", message=f"Loading {run_dir}")
    if model is None:
        model = load_run_model(run_dir, resolve_device(device))
    conditions = {k: v for k, v in conditions.items() if v is not None}
    try:
        model.check_conditions(conditions)
    except ValueError as err:
        raise StudioError(str(err)) from None
    if Capability.PAIRED in model.info.capabilities and "image" not in conditions:
        raise StudioError(
            f"{model.info.display_name} translates images rather than drawing samples: use "
            "studio translate --run RUN --image IMG (its training grids show held-out pairs)."
        )
    gen = cpu_generator(seed)
    with torch.no_grad():
        steps = model.sample_iter(n, gen, **conditions)
        while True:
            try:
                report = next(steps)
            except StopIteration as done:
                images = done.value
                break
            preview = None
            if report.preview is not None:
                preview = make_grid(images_to_uint8(report.preview).numpy())
            yield Progress("sample", report.step, report.total, image=preview)
    return images_to_uint8(images).numpy()
