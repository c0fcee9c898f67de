"""Prompt generation with text-to-image models trained in the studio (runs of a family with
``Capability.TEXT``).

:func:`studio.engine.prompt.generate.generate_job` hands a request whose model is a Studio run
folder to :func:`generate_with_run`. The run's model generates at its own resolution (e.g.
32 x 32); each result is then resized (Lanczos) to the requested width x height, and the
metadata records both sizes. Schedulers map onto the run's noise process: DDIM, DPM++ 2M,
Euler, Euler ancestral and UniPC are built from the run's own training scheduler.

Modes: text-to-image; image-to-image (the image is resized to the model's resolution, noised to
``strength`` and denoised, and the result comes back at the image's size); inpainting (masked
DDIM or DPM-Solver++ with the prompt, reusing :mod:`studio.models.diffusion.inpaint`; outside the
blurred mask the original pixels are kept exactly; ``strength`` and "only masked area" are not
used: the masked area is always regenerated from noise over the whole image).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import Tensor

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.prompt.request import SCHEDULER_LABELS, GenerateRequest, GenerateResult
from studio.models.base import Capability, GenerativeModel, images_to_uint8

_cache: dict[str, Any] = {}


def load_text_run(run_dir: str | Path, device: torch.device) -> GenerativeModel:
    """The run's model, kept loaded while its saved files do not change."""
    from studio.engine.runs import RunFolder
    from studio.engine.sample import load_run_model

    run = RunFolder(run_dir)
    stamp = [
        (p.name, p.stat().st_mtime_ns)
        for p in sorted(run.model_dir.glob("*"))
        if p.is_file()
    ] if run.model_dir.is_dir() else []  # fmt: skip
    key = f"{run.path.resolve()}|{device}|{stamp}"
    if _cache.get("key") != key:
        _cache.clear()
        model = load_run_model(run.path, device)
        if Capability.TEXT not in model.info.capabilities:
            raise StudioError(
                f"The run at {run.path} is a {model.info.display_name} model, which does not "
                f"read prompts. Train a model that does ({_prompt_families()}) on captioned "
                "images to generate from prompts, or sample this run from its own workspace."
            )
        _cache.update(key=key, model=model)
    return _cache["model"]


def _prompt_families() -> str:
    """The display names of the families that learn from captions (Capability.TEXT)."""
    from studio.models.registry import family_keys, get_family

    names = []
    for key in family_keys():
        try:
            info = get_family(key).info
        except Exception:  # noqa: BLE001 - a broken plug-in is listed elsewhere, not here
            continue
        if Capability.TEXT in info.capabilities:
            names.append(f"'{info.display_name}'")
    return ", ".join(names) or "none is installed"


def _to_model(image: np.ndarray, res: int, device: torch.device) -> Tensor:
    pil = Image.fromarray(image).resize((res, res), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32)).permute(2, 0, 1)[None]
    return (x / 127.5 - 1.0).to(device)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def _feathered(mask: np.ndarray, radius: int) -> np.ndarray:
    m = Image.fromarray(((np.asarray(mask) > 0) * 255).astype(np.uint8))
    if radius > 0:
        m = m.filter(ImageFilter.GaussianBlur(radius))
    out = np.asarray(m, dtype=np.float32) / 255.0
    out[np.asarray(mask) > 0] = np.maximum(out[np.asarray(mask) > 0], 1.0)  # hole stays whole
    return out


def generate_with_run(
    run_dir: str | Path, request: GenerateRequest, token: CancelToken
) -> Generator[Progress, None, GenerateResult]:
    """Generate ``request.batch_count`` images (seeds ``seed``, ``seed + 1``, ...) with a
    prompt-conditioned run. Yields a Progress per sampler step (with previews); cancel raises
    at the next step and nothing is returned."""

    request.require_inputs()
    device = resolve_device(request.device)
    yield Progress("load", message=f"Loading {Path(run_dir).name}")
    model: Any = load_text_run(run_dir, device)
    token.check()
    res = int(model.config.resolution)
    size = (int(request.width), int(request.height))
    unknown = model.unknown_words(request.prompt) + [
        w for w in model.unknown_words(request.negative_prompt)
        if w not in model.unknown_words(request.prompt)
    ]  # fmt: skip
    if unknown:
        yield Progress(
            "load",
            message="Words this model never saw in its captions (read as unknown): "
            + ", ".join(unknown),
            info={"unknown_words": unknown},
        )
    if size != (res, res) and request.mode == "txt2img":
        yield Progress(
            "load",
            message=f"This model generates {res}x{res} images; they are resized to "
            f"{size[0]}x{size[1]}.",
        )
    try:
        _, _, guidance = model.parse_sampling({"guidance": request.guidance})
    except ValueError as err:
        raise StudioError(str(err)) from None
    steps = int(request.steps)
    if not 1 <= steps <= model.config.num_train_timesteps:
        raise StudioError(f"steps must be 1..{model.config.num_train_timesteps} for this model.")

    per_image = request.denoising_steps if request.mode == "img2img" else steps
    total = per_image * request.batch_count
    images: list[np.ndarray] = []
    metadata: list[dict[str, Any]] = []
    for index, seed in enumerate(request.seeds):
        token.check()
        started = time.perf_counter()
        generator = cpu_generator(seed)
        with torch.no_grad():
            gen = _one_image(model, request, generator, guidance, device)
            while True:
                token.check()
                try:
                    step, n_steps, preview = next(gen)
                except StopIteration as done:
                    out: np.ndarray = done.value
                    break
                shown = images_to_uint8(preview)[0].numpy() if preview is not None else None
                yield Progress(
                    "generate", index * per_image + step, total,
                    message=f"Image {index + 1}/{request.batch_count}: step {step}/{n_steps}",
                    image=shown, info={"image_index": index, "seed": seed},
                )  # fmt: skip
        token.check()
        images.append(out)
        metadata.append(
            request.image_metadata(
                Path(run_dir).name,
                seed,
                index,
                {
                    "model_family": model.info.key,
                    "scheduler_used": SCHEDULER_LABELS[request.scheduler],
                    "generation_size": [res, res],
                    "output_size": [int(out.shape[1]), int(out.shape[0])],
                    "unknown_words": unknown,
                    "device_used": str(device),
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )  # fmt: skip
        )
        yield Progress(
            "generate", (index + 1) * per_image, total,
            message=f"Image {index + 1}/{request.batch_count} done", image=out,
        )  # fmt: skip
    return GenerateResult(images=images, metadata=metadata, seeds=request.seeds)


def _one_image(
    model: Any,
    request: GenerateRequest,
    generator: torch.Generator,
    guidance: float,
    device: torch.device,
) -> Generator[tuple[int, int, Tensor | None], None, np.ndarray]:
    """One image for ``request`` as H x W x 3 uint8; yields (step, steps, preview)."""
    res = int(model.config.resolution)
    prompt, negative = request.prompt, request.negative_prompt
    if request.mode == "inpaint":
        result = yield from _inpaint(model, request, generator, guidance, device)
        return result
    init, strength = None, 1.0
    if request.mode == "img2img":
        init, strength = _to_model(request.image, res, device), float(request.strength)
    steps = model.prompt_sample_iter(
        prompt, negative, guidance, request.scheduler, int(request.steps), generator,
        init=init, strength=strength,
    )  # fmt: skip
    while True:
        try:
            report = next(steps)
        except StopIteration as done:
            x = done.value
            break
        yield report.step, report.total, report.preview
    image = images_to_uint8(x)[0].numpy()
    if request.mode == "img2img":
        h, w = request.image.shape[:2]
        return _resize(image, (w, h))
    return _resize(image, (int(request.width), int(request.height)))


def _inpaint(
    model: Any,
    request: GenerateRequest,
    generator: torch.Generator,
    guidance: float,
    device: torch.device,
) -> Generator[tuple[int, int, Tensor | None], None, np.ndarray]:
    original = np.asarray(request.image)
    h, w = original.shape[:2]
    res = int(model.config.resolution)
    x0 = _to_model(original, res, device)
    small = Image.fromarray(((np.asarray(request.mask) > 0) * 255).astype(np.uint8))
    hole = np.asarray(small.resize((res, res), Image.Resampling.BILINEAR)) > 0
    hole_t = torch.from_numpy(hole.astype(np.float32))[None, None].to(device)
    run = model.prompt_inpaint_iter(
        request.prompt, request.negative_prompt, guidance, request.scheduler,
        int(request.steps), generator, x0, hole_t,
    )  # fmt: skip
    while True:
        try:
            report = next(run)
        except StopIteration as done:
            x = done.value
            break
        yield report.step, report.total, report.preview
    generated = _resize(images_to_uint8(x)[0].numpy(), (w, h)).astype(np.float32)
    m = _feathered(request.mask, int(request.mask_blur))[..., None]
    blended = original.astype(np.float32) * (1 - m) + generated * m
    return np.clip(blended.round(), 0, 255).astype(np.uint8)
