"""Prompt generation with Stable Diffusion pipelines on disk: :func:`generate_job`.

A diffusers pipeline call runs on a worker thread owned by the job, which yields its steps and
latent previews as they happen (:mod:`studio.engine.prompt.bridge` says how and why); cancel
stops within a step and returns nothing.

Inpainting: a checkpoint with an inpainting UNet (9 input channels) runs through its inpaint
pipeline; a regular checkpoint runs through the same diffusers inpaint pipeline, which for a
4-channel UNet blends latents: after each step the unmasked region is replaced by the original
image's latents noised to the next timestep. The mask is grown and feathered by ``mask_blur``
(:func:`studio.engine.inpaint.blend_masks`) and the result is composited back, so pixels away
from the mask are exactly the original's. "Only masked" crops the mask's box plus padding
(:func:`studio.engine.inpaint.plan_window`), generates it at the requested pixel count, and
pastes it back.

Memory: see :mod:`studio.engine.prompt.memory` (plans, out-of-memory retries, compile).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from studio.core.brush import composite
from studio.core.errors import StudioError
from studio.core.jobs import Cancelled, CancelToken, Progress
from studio.engine.device import free_memory, is_out_of_memory, resolve_device
from studio.engine.inpaint import Window, blend_masks, plan_window
from studio.engine.prompt import memory as mem
from studio.engine.prompt.bridge import run_pipeline
from studio.engine.prompt.cache import (  # re-exported: the pipeline cache was defined here
    PipelineCache,
    default_cache,
    make_room_for_training,
    release_models_job,
)
from studio.engine.prompt.request import SCHEDULERS, GenerateRequest, GenerateResult, snap8

__all__ = [
    "PipelineCache",
    "default_cache",
    "generate_job",
    "make_room_for_training",
    "release_models_job",
]

# -- resolving the model -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    path: Path
    name: str
    is_run: bool


def resolve_model(model: str, library: Any = None) -> ModelSource:
    """A library entry id or a path -> where the model is and what to call it."""
    path = Path(model).expanduser()
    if path.exists():
        is_run = (
            path.is_dir()
            and (path / "config.json").is_file()
            and not (path / "model_index.json").is_file()
        )
        return ModelSource(path.resolve(), path.stem if path.is_file() else path.name, is_run)
    from studio.engine.prompt.library import STUDIO_RUN, ModelLibrary

    if library is None:
        library = ModelLibrary()
    entry = library.get(model)
    if entry is None:
        raise StudioError(
            f"No model {model!r}: it is neither a file or folder on disk nor in the model "
            "library. Add the model to the library or give its path."
        )
    if not Path(entry.path).exists():
        raise StudioError(
            f"The model {entry.name!r} is no longer at {entry.path}. Put it back or remove it "
            "from the library and add it again."
        )
    return ModelSource(Path(entry.path), entry.name, entry.kind == STUDIO_RUN)


# -- inputs: the pictures the pipeline sees, and how its output becomes the result --------------


@dataclass
class PreparedInputs:
    width: int
    height: int
    image: Image.Image | None
    mask: Image.Image | None
    finish: Callable[[np.ndarray], np.ndarray]


def _mask_float(mask: np.ndarray) -> np.ndarray:
    return (np.asarray(mask) > 0).astype(np.float32)


def _coverage(region: np.ndarray, size: tuple[int, int]) -> Image.Image:
    # Box filter = each output pixel's coverage; any coverage means "repaint", so a thin stroke
    # survives downscaling.
    small = np.asarray(Image.fromarray(region.astype(np.float32)).resize(size, Image.BOX))
    return Image.fromarray(((small > 0) * 255).astype(np.uint8), mode="L")


def generation_size(window: Window, width: int, height: int) -> tuple[int, int]:
    """The window's aspect at (about) ``width * height`` pixels, in multiples of 8."""
    ww, wh = window.size
    scale = math.sqrt(width * height / (ww * wh))
    return snap8(ww * scale), snap8(wh * scale)


def prepare_inputs(request: GenerateRequest) -> PreparedInputs:
    """Resize (and for "only masked" crop) the image and mask for the pipeline."""
    w, h = request.width, request.height
    if request.mode == "txt2img":
        return PreparedInputs(w, h, None, None, lambda out: out)
    original = np.asarray(request.image, dtype=np.uint8)
    size = (original.shape[1], original.shape[0])

    def back(out: np.ndarray, to: tuple[int, int]) -> np.ndarray:
        if (out.shape[1], out.shape[0]) == to:
            return out
        return np.asarray(Image.fromarray(out).resize(to, Image.LANCZOS))

    if request.mode == "img2img":
        image = Image.fromarray(original)
        if image.size != (w, h):
            image = image.resize((w, h), Image.LANCZOS)
        return PreparedInputs(w, h, image, None, lambda out: back(out, size))

    blend, regen = blend_masks(_mask_float(request.mask), float(request.mask_blur))
    if request.only_masked:
        window = plan_window(blend > 0, "masked_only", request.only_masked_padding, 0)
        w, h = generation_size(window, request.width, request.height)
    else:
        window = Window(0, original.shape[0], 0, original.shape[1])
    crop = Image.fromarray(original[window.slices])
    image = crop if crop.size == (w, h) else crop.resize((w, h), Image.LANCZOS)
    mask = _coverage(regen[window.slices], (w, h))

    def finish(out: np.ndarray) -> np.ndarray:
        pasted = original.copy()
        pasted[window.slices] = back(out, window.size)
        return composite(original, pasted, blend)

    return PreparedInputs(w, h, image, mask, finish)


# -- the job --------------------------------------------------------------------------------------


def _task(request: GenerateRequest) -> str:
    return request.mode


def _load(
    source: ModelSource,
    request: GenerateRequest,
    device: torch.device,
    dtype: torch.dtype,
    plan: mem.MemoryPlan | None,
    cache: PipelineCache,
    allow_pickle: bool,
) -> tuple[Any, tuple, bool]:
    """The pipeline for ``request`` (cached, derived from a sibling task, or loaded) and
    whether it was loaded from disk now."""
    offload = bool(plan and plan.cpu_offload)
    key = PipelineCache.key_for(source.path, _task(request), device, dtype, offload)
    pipe = cache.get(key)
    if pipe is not None:
        return pipe, key, False
    from studio.engine.prompt.library import inspect_model, record_architecture
    from studio.engine.prompt.loading import load_pipeline, pipeline_components_from
    from studio.engine.prompt.modes import ModeRefused, check_mode

    task = _task(request)
    try:
        sibling = cache.sibling(key)
        if sibling is not None and not offload:
            pipe = _for_task(pipeline_components_from(sibling, task), task)
            pipe._studio_scheduler_config = sibling._studio_scheduler_config
            cache.put(key, pipe)
            return pipe, key, False
        entry = inspect_model(source.path)  # the header only: what it is, before unloading others
        check_mode(task, entry.arch, source.name, inpainting=entry.inpainting)
        cache.evict_other(key)
        cache.evict(PipelineCache._model_key(key))  # this model in another configuration
        free_memory()
        pipe = load_pipeline(
            entry,
            task,
            device=torch.device("cpu") if offload else device,
            dtype=dtype,
            allow_pickle=allow_pickle,
        )
    except ModeRefused as refused:  # a pickle read for the first time may be a refiner
        record_architecture(source.path, refused.arch, refused.inpainting)
        raise
    # The library lists a pickle as "unknown" until it is read: keep what the load found.
    record_architecture(source.path, pipe.studio_entry.arch, pipe.studio_entry.inpainting)
    pipe = _for_task(pipe, task)
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    pipe.set_progress_bar_config(disable=True)
    pipe._studio_scheduler_config = dict(pipe.scheduler.config)  # before any swap
    cache.put(key, pipe)
    return pipe, key, True


def native_inpainting(pipe: Any) -> bool:
    """True for a UNet that takes the mask and masked image itself (9 input channels)."""
    unet = getattr(pipe, "unet", None)
    return getattr(getattr(unet, "config", None), "in_channels", 4) == 9


def _for_task(pipe: Any, task: str) -> Any:
    """Inpainting with a regular checkpoint: diffusers' inpaint pipeline over the same modules
    (for a 4-channel UNet it blends the original's noised latents outside the mask after every
    step). The loader hands out the image-to-image pipeline for that case."""
    if task != "inpaint" or native_inpainting(pipe):
        return pipe
    import diffusers

    from studio.engine.prompt.loading import pipeline_as

    xl = "XL" in type(pipe).__name__
    cls = (
        diffusers.StableDiffusionXLInpaintPipeline
        if xl
        else diffusers.StableDiffusionInpaintPipeline
    )
    if isinstance(pipe, cls):
        return pipe
    new = pipeline_as(pipe, cls)  # the same modules; from_pipe would cast them
    if hasattr(pipe, "_studio_scheduler_config"):
        new._studio_scheduler_config = pipe._studio_scheduler_config
    new.studio_native_inpainting = False
    return new


def make_scheduler(pipe: Any, name: str) -> Any:
    """A fresh ``name`` scheduler from the model's own scheduler config (its training schedule)."""
    import diffusers

    if getattr(pipe, "_studio_scheduler_config", None) is None:
        pipe._studio_scheduler_config = dict(pipe.scheduler.config)
    cls = getattr(diffusers, SCHEDULERS[name])
    return cls.from_config(pipe._studio_scheduler_config)


def pipeline_kwargs(
    request: GenerateRequest,
    inputs: PreparedInputs,
    seed: int,
    *,
    inpainting_unet: bool = False,
    generator_device: str = "cpu",
) -> dict[str, Any]:
    """The diffusers call for one image (noise from a CPU generator: same seed, same image on
    any device). An inpainting checkpoint only has the inpaint pipeline: text-to-image and
    image-to-image run through it with the whole picture masked (grey for text-to-image)."""
    kwargs: dict[str, Any] = dict(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or None,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        generator=torch.Generator(generator_device).manual_seed(seed),
        output_type="np",
    )
    size = (inputs.width, inputs.height)
    if inpainting_unet and request.mode != "inpaint":
        image = (
            inputs.image if inputs.image is not None else Image.new("RGB", size, (127, 127, 127))
        )
        kwargs.update(
            image=image,
            mask_image=Image.new("L", size, 255),
            width=size[0],
            height=size[1],
            strength=1.0 if request.mode == "txt2img" else request.strength,
        )
    elif request.mode == "txt2img":
        kwargs.update(width=inputs.width, height=inputs.height)
    elif request.mode == "img2img":
        kwargs.update(image=inputs.image, strength=request.strength)
    else:
        kwargs.update(
            image=inputs.image,
            mask_image=inputs.mask,
            width=inputs.width,
            height=inputs.height,
            strength=request.strength,
        )
    return kwargs


def _to_uint8(output: Any) -> np.ndarray:
    images = output.images if hasattr(output, "images") else output[0]
    arr = np.asarray(images[0], dtype=np.float32)
    if not np.isfinite(arr).all():
        raise StudioError(
            "The model produced NaN values (often fp16 overflow in the VAE). Try dtype fp32 "
            "or bf16."
        )
    return (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _step_reporter(
    request: GenerateRequest, index: int, seed: int, per_image: int, total: int, started: float
) -> Callable[[int, np.ndarray | None], Progress]:
    def on_step(step: int, preview: np.ndarray | None) -> Progress:
        elapsed = time.perf_counter() - started
        return Progress(
            "generate",
            index * per_image + step,
            total,
            message=f"Image {index + 1}/{request.batch_count}: step {step}/{per_image}",
            image=preview,
            info={
                "it_per_s": step / elapsed if elapsed > 0 else 0.0,
                "image_index": index,
                "seed": seed,
            },
        )

    return on_step


class _Failure(enum.Enum):
    """Why one attempt at an image failed in a way the job recovers from."""

    OUT_OF_MEMORY = "out of memory"  # retried one memory rung lighter
    COMPILE = "torch.compile"  # retried eager


@dataclass
class _Session:
    """What one generate_job keeps between its images and their attempts."""

    request: GenerateRequest
    source: ModelSource
    device: Any
    dtype: Any
    cache: PipelineCache
    inputs: PreparedInputs
    plan: Any  # mem.MemoryPlan once chosen (request.memory, or "auto" at the first load)
    allow_pickle: bool
    compile_failed: bool = False

    @property
    def per_image(self) -> int:
        return self.request.denoising_steps

    @property
    def total(self) -> int:
        return self.per_image * self.request.batch_count


def generate_job(
    request: GenerateRequest,
    token: CancelToken,
    *,
    library: Any = None,
    allow_pickle: bool = False,
    pipeline_cache: PipelineCache | None = None,
) -> Generator[Progress, None, GenerateResult]:
    """Generate ``request.batch_count`` images (seeds ``seed``, ``seed + 1``, ...).

    Yields a Progress per denoising step (``image``: a latent preview every
    ``preview_every`` steps). Cancel stops within a step and returns nothing. Out of memory:
    memory is freed and the image retried one memory rung lighter; after the lightest, a
    StudioError says what to change. A Studio run folder is handed to
    :func:`studio.engine.prompt.studio_models.generate_with_run`.
    """
    request.require_inputs()
    source = resolve_model(request.model, library)
    if source.is_run:
        from studio.engine.prompt.studio_models import generate_with_run

        return (yield from generate_with_run(source.path, request, token))

    device = resolve_device(request.device)
    session = _Session(
        request=request,
        source=source,
        device=device,
        dtype=mem.resolve_dtype(request.dtype, device),
        cache=pipeline_cache if pipeline_cache is not None else default_cache(),
        inputs=prepare_inputs(request),
        plan=None if request.memory == "auto" else mem.plan_for(request.memory, device),
        allow_pickle=allow_pickle,
    )
    images: list[np.ndarray] = []
    metadata: list[dict[str, Any]] = []
    for index, seed in enumerate(request.seeds):
        token.check()
        image, meta = yield from _generate_image(session, index, seed, token)
        images.append(image)
        metadata.append(meta)
        yield Progress(
            "generate", (index + 1) * session.per_image, session.total,
            message=f"Image {index + 1}/{request.batch_count} done", image=image,
        )  # fmt: skip
    return GenerateResult(images=images, metadata=metadata, seeds=request.seeds)


def _generate_image(
    s: _Session, index: int, seed: int, token: CancelToken
) -> Generator[Progress, None, tuple[np.ndarray, dict[str, Any]]]:
    """One image: attempts until one succeeds, each failure handled outside its except."""
    while True:
        attempt = _Attempt()
        try:
            output = yield from _attempt_image(s, index, seed, token, attempt)
            break
        except (Cancelled, StudioError):
            raise
        except Exception as err:  # noqa: BLE001 - sorted here, handled outside the except block
            failure = _classify(err, s.request, attempt)
            if failure is None:
                raise
        free_memory()  # out of the except block, so the failed step's tensors can be freed
        yield _recover(s, index, failure, attempt)
    request, inputs = s.request, s.inputs
    image = inputs.finish(_to_uint8(output))
    meta = request.image_metadata(s.source.name, seed, index, {
        "memory_rung": s.plan.rung if s.plan else request.memory,
        "dtype_used": mem.dtype_name(s.dtype),
        "device_used": str(s.device),
        "compiled": bool(request.compile and not s.compile_failed),
        "generation_size": [inputs.width, inputs.height],
        "seconds": round(attempt.seconds, 3),
    })  # fmt: skip
    return image, meta


@dataclass
class _Attempt:
    compiled: bool = False
    key: Any = None  # the pipeline cache key it loaded
    error: str = ""  # what failed, for the message
    seconds: float = 0.0


def _attempt_image(
    s: _Session, index: int, seed: int, token: CancelToken, attempt: _Attempt
) -> Generator[Progress, None, Any]:
    """Load (or reuse) the pipeline, fit it to the memory plan, run the sampler once."""
    request, source, base = s.request, s.source, index * s.per_image
    yield Progress("load", base, s.total, message=f"Loading {source.name}")
    pipe, attempt.key, loaded = _load(
        source, request, s.device, s.dtype, s.plan, s.cache, s.allow_pickle
    )
    if loaded:
        yield Progress("load", base, s.total, message=f"Loaded {source.name}")
    if s.plan is None:
        s.plan = mem.choose_plan("auto", s.device, s.inputs.width, s.inputs.height, s.dtype)
    mem.apply_plan(pipe, s.plan)
    if request.compile and not s.compile_failed and not s.plan.cpu_offload:
        attempt.compiled = mem.compile_unet(pipe)
    elif not request.compile:
        mem.uncompile_unet(pipe)
    pipe.scheduler = make_scheduler(pipe, request.scheduler)
    token.check()
    started = time.perf_counter()
    on_step = _step_reporter(request, index, seed, s.per_image, s.total, started)
    output = yield from run_pipeline(
        pipe,
        pipeline_kwargs(request, s.inputs, seed, inpainting_unet=native_inpainting(pipe)),
        token,
        preview_every=request.preview_every,
        on_step=on_step,
    )
    attempt.seconds = time.perf_counter() - started
    return output


def _classify(err: Exception, request: GenerateRequest, attempt: _Attempt) -> _Failure | None:
    """A failure the job recovers from, or None (then the error stands)."""
    if is_out_of_memory(err):
        return _Failure.OUT_OF_MEMORY
    if request.compile and attempt.compiled:
        attempt.error = f"{type(err).__name__}: {err}"
        return _Failure.COMPILE
    return None


def _recover(s: _Session, index: int, failure: _Failure, attempt: _Attempt) -> Progress:
    """Change what made the attempt fail; the report that says so."""
    base = index * s.per_image
    if failure is _Failure.OUT_OF_MEMORY:
        assert s.plan is not None
        lighter = mem.lighter(s.plan, s.device)
        if lighter is None:
            raise mem.out_of_memory_error(s.inputs.width, s.inputs.height, s.plan, s.device)
        message = (
            f"Out of memory at memory={s.plan.rung}; retrying with "
            f"memory={lighter.rung} ({lighter.describe()})"
        )
        s.plan = lighter
        return Progress("generate", base, s.total, message=message)
    s.compile_failed = True
    cached = s.cache.get(attempt.key) if attempt.key is not None else None
    if cached is not None:
        mem.uncompile_unet(cached)
    return Progress(
        "generate", base, s.total,
        message=f"torch.compile failed ({attempt.error[:200]}); running eager",
    )  # fmt: skip
