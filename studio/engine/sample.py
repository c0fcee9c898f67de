"""Sampling from a run folder: a job with per-step progress and cancel."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.core.errors import CheckpointError, StudioError
from studio.core.imaging import make_grid
from studio.core.jobs import Progress
from studio.engine import checkpoint as ckpt
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.finite import check_finite
from studio.engine.runs import RunFolder
from studio.models.base import MODEL_CONFIG, Capability, GenerativeModel, images_to_uint8
from studio.models.registry import get_family, load_model


def load_run_model(run_dir: str | Path, device: torch.device | str = "cpu") -> GenerativeModel:
    """The run's latest saved model (``model/``), or its newest complete checkpoint."""
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise CheckpointError(f"There is no run folder at {run.path}.")
    if (run.model_dir / MODEL_CONFIG).is_file():
        try:
            model = load_model(run.model_dir, device=device)
            model.eval()
            _check_finite(model, run.path, "model/")
            return model
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            fallback_reason = str(err)
    else:
        fallback_reason = "no saved model"
    latest = ckpt.latest_checkpoint(run.state_dir)
    if latest is None:
        raise CheckpointError(
            f"The run at {run.path} has no usable weights yet ({fallback_reason})."
        )
    meta = ckpt.read_trainer_state(latest)
    family = get_family(meta["family"])
    model = family(family.Config.from_dict(meta["model_config"])).to(device)
    ckpt.load_checkpoint(latest, model, restore_rng=False)
    model.eval()
    _check_finite(model, run.path, f"state/{latest.name}/")
    return model


def _check_finite(model: GenerativeModel, run: Path, where: str) -> None:
    """Refuse weights holding a NaN or an infinity: they sample a black grid."""
    check_finite(
        {"": model},
        f"The run {run.name} ({where})",
        "train it again, or resume it from a checkpoint saved before the values broke.",
    )


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
