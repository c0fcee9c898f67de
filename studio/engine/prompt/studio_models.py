"""Prompt generation with text-to-image models trained in the studio (``diffusion.text`` runs).

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
from torch import Tensor, nn

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.prompt.request import SCHEDULER_LABELS, GenerateRequest, GenerateResult
from studio.models.base import Capability, GenerativeModel, images_to_uint8

# Request scheduler -> the family's own sampler name, where the family has one (those keep the
# x0 clipping the model was trained with); the rest are diffusers classes built from_config.
_OWN_SAMPLERS = {"ddim": "ddim", "dpmpp_2m": "dpm++"}
_DIFFUSERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}
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
                "read prompts. Train a 'Text-to-image diffusion' model (diffusion.text) on "
                "captioned images to generate from prompts, or sample this run from its own "
                "workspace."
            )
        _cache.update(key=key, model=model)
    return _cache["model"]


def _scheduler(model: Any, name: str) -> Any:
    if name in _OWN_SAMPLERS:
        return _OWN_SAMPLERS[name]
    import diffusers

    return getattr(diffusers, _DIFFUSERS[name]).from_config(model.scheduler.config)


def _to_model(image: np.ndarray, res: int, device: torch.device) -> Tensor:
    pil = Image.fromarray(image).resize((res, res), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32)).permute(2, 0, 1)[None]
    return (x / 127.5 - 1.0).to(device)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


class _PromptAsClasses(nn.Module):
    """A prompt-conditioned UNet presented as a class-conditional one: class 0 is the prompt,
    class 1 (the "null" class) the negative prompt. The class-label inpainting samplers in
    :mod:`studio.models.diffusion.inpaint` can then drive it with guidance unchanged."""

    def __init__(self, unet: nn.Module, hidden: Tensor, mask: Tensor) -> None:
        super().__init__()
        self.unet, self.hidden, self.mask = unet, hidden, mask

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Any:
        if class_labels is None:
            class_labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        from studio.models.diffusion.text import TextDiffusion

        pick = class_labels.long().to(self.hidden.device)
        hidden, mask = self.hidden.index_select(0, pick), self.mask.index_select(0, pick)
        return self.unet(x, t, **TextDiffusion.unet_inputs(hidden, mask))


class _InpaintView:
    """What ``studio.models.diffusion.inpaint.masked_sample`` reads from a model."""

    def __init__(self, model: Any, prompt: str, negative: str) -> None:
        from types import SimpleNamespace

        c = model.config
        self.config = SimpleNamespace(
            num_train_timesteps=c.num_train_timesteps,
            num_classes=1,
            prediction_type=c.prediction_type,
        )
        self.device = model.device
        self.scheduler = model.scheduler
        with torch.no_grad():
            hidden, mask = model.encode_prompts([prompt, negative])
        self.ema_unet = _PromptAsClasses(model.ema["unet"], hidden, mask)


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
            request.image_metadata(Path(run_dir).name, seed, index, {
                "model_family": model.info.key,
                "scheduler_used": SCHEDULER_LABELS[request.scheduler],
                "generation_size": [res, res],
                "output_size": [int(out.shape[1]), int(out.shape[0])],
                "unknown_words": unknown,
                "device_used": str(device),
                "seconds": round(time.perf_counter() - started, 3),
            })  # fmt: skip
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
    from studio.models.diffusion.samplers import denoise_iter

    c = model.config
    res = int(c.resolution)
    shape = (1, c.channels, res, res)
    prompt, negative = request.prompt, request.negative_prompt
    if request.mode == "inpaint":
        result = yield from _inpaint(model, request, generator, guidance, device)
        return result
    init, strength = None, 1.0
    if request.mode == "img2img":
        init, strength = _to_model(request.image, res, device), float(request.strength)
    denoise = model.guided_denoiser([prompt], negative, guidance)
    steps = denoise_iter(
        denoise, _scheduler(model, request.scheduler), int(request.steps), model.scheduler,
        shape, generator, device, c.prediction_type, init=init, strength=strength,
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
    from studio.models.diffusion import inpaint as diff

    original = np.asarray(request.image)
    h, w = original.shape[:2]
    res = int(model.config.resolution)
    x0 = _to_model(original, res, device)
    small = Image.fromarray(((np.asarray(request.mask) > 0) * 255).astype(np.uint8))
    hole = np.asarray(small.resize((res, res), Image.Resampling.BILINEAR)) > 0
    hole_t = torch.from_numpy(hole.astype(np.float32))[None, None].to(device)
    sampler = "ddim" if request.scheduler == "ddim" else "dpm++"
    plan = diff.DiffusionPlan(diff.MASKED, steps=int(request.steps), sampler=sampler)
    view = _InpaintView(model, request.prompt, request.negative_prompt)
    labels = torch.zeros(1, dtype=torch.long, device=device)
    previews: list[Tensor] = []

    def keep(images: Tensor) -> np.ndarray:
        previews.append(images)
        return np.zeros((1, 1, 3), np.uint8)  # the progress image is made by the caller

    run = diff.masked_sample(view, x0, hole_t, 1, generator, plan, labels, guidance, keep)  # type: ignore[arg-type]
    while True:
        try:
            p = next(run)
        except StopIteration as done:
            x = done.value
            break
        yield int(p.step), int(p.total or plan.steps), previews.pop() if previews else None
    generated = _resize(images_to_uint8(x)[0].numpy(), (w, h)).astype(np.float32)
    m = _feathered(request.mask, int(request.mask_blur))[..., None]
    blended = original.astype(np.float32) * (1 - m) + generated * m
    return np.clip(blended.round(), 0, 255).astype(np.uint8)
