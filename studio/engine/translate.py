"""Translating an image with a run of a paired image-to-image family (``Capability.PAIRED``):
the image is fitted to the model's resolution (shorter side scaled, centre square cropped, as
training images are) and handed to the family's sampler as its ``image`` condition."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import numpy as np
import torch

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.images import fit_square
from studio.engine.runs import RunFolder
from studio.engine.sample import load_run_model
from studio.models.base import Capability, GenerativeModel, images_to_uint8
from studio.models.registry import get_family


def check_translates(run_dir: str | Path) -> None:
    """Refuse, in one sentence, a run whose family does not translate images (read from its
    config.json, before any weights load)."""
    run = RunFolder(run_dir)
    key = str(run.read_config().get("family", ""))
    try:
        info = get_family(key).info
    except KeyError:
        raise StudioError(f"The run {run.path} is of an unknown model family {key!r}.") from None
    if Capability.PAIRED not in info.capabilities:
        raise StudioError(
            f"The run {run.path} is a {info.display_name} run, which does not translate "
            "images: use a run of an image-to-image family trained on folders A and B."
        )


def fit_input(image: np.ndarray, resolution: int) -> torch.Tensor:
    """An ``H x W x 3`` uint8 image of any size as a ``1 x 3 x R x R`` tensor in [-1, 1]."""
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise StudioError(f"expected an H x W x 3 uint8 image, not {image.shape} {image.dtype}")
    square = fit_square(Image.fromarray(image), resolution)
    x = torch.from_numpy(square).permute(2, 0, 1)[None].float()
    return x.div(127.5).sub(1.0)


def translate_job(
    run_dir: str | Path,
    image: np.ndarray,
    seed: int = 0,
    device: str = "auto",
    n: int = 1,
    model: GenerativeModel | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Job: ``n`` translations of ``image`` (``H x W x 3`` uint8, any size) by the run's
    model, as ``n x R x R x 3`` uint8 at the model's resolution. Same seed, same outputs."""
    if n < 1:
        raise StudioError("Ask for at least one output.")
    if model is None:
        check_translates(run_dir)
        yield Progress("load", message=f"Loading {run_dir}")
        model = load_run_model(run_dir, resolve_device(device))
    elif Capability.PAIRED not in model.info.capabilities:
        raise StudioError(f"{model.info.display_name} does not translate images.")
    x = fit_input(image, model.config.resolution)
    gen = cpu_generator(seed)
    with torch.no_grad():
        steps = model.sample_iter(n, gen, image=x)
        while True:
            try:
                report = next(steps)
            except StopIteration as done:
                out = done.value
                break
            yield Progress("sample", report.step, report.total, message="Translating")
    return images_to_uint8(out).numpy()
