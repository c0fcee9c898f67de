"""Translating an image with a run of an image-to-image family (``Capability.PAIRED``): the
image is fitted to the model's resolution (shorter side scaled, centre square cropped, as
training images are) and handed to the family's sampler as its ``image`` condition. A family
with a fully convolutional generator (``translates_any_size``) gets the image at its own size
instead (scaled down only beyond :data:`MAX_SIDE` pixels), and the output has that size. An
unpaired family (``Capability.UNPAIRED``) translates both ways: ``direction`` "a2b" or "b2a"."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.images import fit_square
from studio.engine.runs import RunFolder
from studio.engine.sample import load_run_model
from studio.models.base import A2B, DIRECTIONS, Capability, GenerativeModel, images_to_uint8
from studio.models.registry import get_family

#: The longest side an image is translated at by a family that takes any size; larger images
#: are scaled down to it (the generator's activations grow with the pixels).
MAX_SIDE = 1024


def check_translates(run_dir: str | Path, direction: str | None = None) -> None:
    """Refuse, in one sentence, a run whose family does not translate images, or a
    ``direction`` for a run that translates one way only (read from its config.json, before
    any weights load)."""
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
    _check_direction(info.display_name, "direction" in get_family(key).conditions, direction)


def check_repaints(run_dir: str | Path) -> None:
    """Refuse, in one sentence, a run that is not a style network: one that repaints its
    input image (a single-folder image-to-image family whose inputs have no target, and
    which keeps the size)."""
    run = RunFolder(run_dir)
    key = str(run.read_config().get("family", ""))
    try:
        family = get_family(key)
    except KeyError:
        raise StudioError(f"The run {run.path} is of an unknown model family {key!r}.") from None
    caps = family.info.capabilities
    if Capability.SINGLE_FOLDER not in caps or family.inputs_have_targets:
        raise StudioError(
            f"The run {run.path} is a {family.info.display_name} run, not a trained style "
            "network: use studio translate (or studio upscale) with it."
        )


def _check_direction(name: str, both_ways: bool, direction: str | None) -> None:
    if direction is None:
        return
    if not both_ways:
        raise StudioError(f"{name} translates one way only (A to B): leave out --direction.")
    if direction not in DIRECTIONS:
        raise StudioError(f"The direction is a2b (A to B) or b2a (B to A), not {direction!r}.")


def fit_input(image: np.ndarray, resolution: int) -> torch.Tensor:
    """An ``H x W x 3`` uint8 image of any size as a ``1 x 3 x R x R`` tensor in [-1, 1]."""
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise StudioError(f"expected an H x W x 3 uint8 image, not {image.shape} {image.dtype}")
    square = fit_square(Image.fromarray(image), resolution)
    x = torch.from_numpy(square).permute(2, 0, 1)[None].float()
    return x.div(127.5).sub(1.0)


def whole_input(image: np.ndarray, max_side: int = MAX_SIDE) -> torch.Tensor:
    """An ``H x W x 3`` uint8 image as a ``1 x 3 x H x W`` tensor in [-1, 1], at its own size
    unless its longer side exceeds ``max_side`` (then scaled down to it)."""
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise StudioError(f"expected an H x W x 3 uint8 image, not {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float()
    return x.div(127.5).sub(1.0)


def translation_metadata(
    run_dir: str | Path,
    source: str | Path,
    seed: int,
    direction: str | None,
    index: int,
    size: tuple[int, int],
) -> dict[str, Any]:
    """The settings a translated PNG carries (``studio.engine.prompt.pngmeta``): the run (by
    path and name, not as a ``model`` a prompt could reuse), its family, the input image, the
    direction, the seed and which of the outputs this is; ``size`` is (width, height)."""
    from studio import __version__

    run = RunFolder(run_dir)
    return {
        "mode": "translate",
        "run": str(run.path),
        "model_name": run.path.name,
        "family": str(run.read_config().get("family", "")),
        "source": str(source),
        "direction": direction or A2B,
        "seed": int(seed),
        "variation": int(index),
        "width": int(size[0]),
        "height": int(size[1]),
        "studio_version": __version__,
    }


def translate_job(
    run_dir: str | Path,
    image: np.ndarray,
    seed: int = 0,
    device: str = "auto",
    n: int = 1,
    model: GenerativeModel | None = None,
    direction: str | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Job: ``n`` translations of ``image`` (``H x W x 3`` uint8, any size) by the run's
    model, as ``n x R x R x 3`` uint8 at the model's resolution, or ``n x H x W x 3`` at the
    image's own size for a family that takes any size. ``direction`` ("a2b" or "b2a") only
    for a family that translates both ways (None: its default, A to B). Same seed, same
    outputs."""
    if n < 1:
        raise StudioError("Ask for at least one output.")
    if model is None:
        check_translates(run_dir, direction)
        yield Progress("load", message=f"Loading {run_dir}")
        model = load_run_model(run_dir, resolve_device(device))
    elif Capability.PAIRED not in model.info.capabilities:
        raise StudioError(f"{model.info.display_name} does not translate images.")
    else:
        both_ways = "direction" in model.conditions
        _check_direction(model.info.display_name, both_ways, direction)
    if model.translates_any_size:
        if max(image.shape[:2]) > MAX_SIDE:
            yield Progress("load", message=f"Scaling the image down to {MAX_SIDE} px")
        x = whole_input(image)
    else:
        x = fit_input(image, model.config.resolution)
    conditions = {"image": x} if direction is None else {"image": x, "direction": direction}
    gen = cpu_generator(seed)
    with torch.no_grad():
        steps = model.sample_iter(n, gen, **conditions)
        while True:
            try:
                report = next(steps)
            except StopIteration as done:
                out = done.value
                break
            except ValueError as err:  # the family's checks of the input (its size, say)
                name = model.info.display_name
                raise StudioError(f"{name} cannot translate this image: {err}") from None
            yield Progress("sample", report.step, report.total, message="Translating")
    return images_to_uint8(out).numpy()


# -- the canvas ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Translator:
    """A run that translates images, as the Canvas offers it: its folder, its family's name
    and whether it translates both ways (a ``direction`` condition)."""

    path: Path
    display_name: str
    both_ways: bool


def describe_translator(run_dir: str | Path) -> Translator:
    """The run at ``run_dir`` if its family translates images (read from its config.json,
    no weights loaded); StudioError saying why not otherwise."""
    check_translates(run_dir)
    run = RunFolder(run_dir)
    family = get_family(str(run.read_config().get("family", "")))
    if family.translates_any_size and Capability.SINGLE_FOLDER in family.info.capabilities:
        try:
            cfg = run.train_config()
            config = family.Config.from_dict({**cfg.model, "resolution": cfg.resolution})
        except (KeyError, TypeError, ValueError) as err:
            raise StudioError(
                f"The run {run.path} has settings that cannot be read: {err}"
            ) from None
        if family.scale_for(config) > 1:  # it enlarges: the Canvas's Upscale applies it
            raise StudioError(f"The run {run.path} upscales images: use Upscale.")
    return Translator(run.path, family.info.display_name, "direction" in family.conditions)


def translating_runs(paths: Sequence[str | Path]) -> list[Translator]:
    """The runs among ``paths`` that translate images, in order (others, and folders that
    are gone or unreadable, are left out)."""
    found = []
    for path in paths:
        try:
            found.append(describe_translator(path))
        except (StudioError, OSError, ValueError):
            continue
    return found


def squash_input(image: np.ndarray, resolution: int) -> np.ndarray:
    """``image`` resized to ``resolution x resolution`` whole (no crop), so every pixel of it
    has its place in the output and the output, resized back, lines up with it."""
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    size = (resolution, resolution)
    return np.asarray(pil.resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)


def translate_canvas_job(
    run_dir: str | Path,
    image: np.ndarray,
    mask: np.ndarray | None,
    feather_px: float,
    seed: int = 0,
    direction: str | None = None,
    device: str = "auto",
    model: GenerativeModel | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Job: ``image`` (``H x W x 3`` uint8) translated by the run whole (``mask`` None) or in
    the window around the mask (:func:`studio.engine.stylize.mask_window`) and blended back
    through the mask feathered as inpainting feathers it; returns the whole new image, the
    size of ``image``. A model of a fixed resolution gets the part squashed to its square
    (not cropped, so the result lines up with the image); one that takes any size gets it as
    it is (up to :data:`MAX_SIDE`)."""
    from studio.engine.stylize import blend_result, mask_window

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise StudioError(f"expected an H x W x 3 uint8 image, not {image.shape} {image.dtype}")
    window = mask_window(mask, feather_px) if mask is not None else None
    if mask is not None and window is None:
        raise StudioError("No mask painted: paint the region to translate first.")
    if model is None:
        check_translates(run_dir, direction)
        yield Progress("load", message=f"Loading {Path(run_dir).name}")
        model = load_run_model(run_dir, resolve_device(device))
    if model.output_scale != 1:
        raise StudioError(f"{model.info.display_name} enlarges images: use Upscale instead.")
    where = window.slices if window is not None else (slice(None), slice(None))
    crop = np.ascontiguousarray(image[where])
    given = crop if model.translates_any_size else squash_input(crop, model.config.resolution)
    job = translate_job(run_dir, given, seed, device, 1, model, direction)
    translated = yield from job
    out = np.array(image, dtype=np.uint8)
    part = None if mask is None else mask[where]
    out[where] = blend_result(crop, translated[0], part, feather_px)
    return out
