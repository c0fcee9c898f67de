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

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
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
from studio.engine.prompt.request import SCHEDULERS, GenerateRequest, GenerateResult, snap8

# -- the pipeline cache ------------------------------------------------------------------------


class PipelineCache:
    """Loaded pipelines, kept between generations; use it from one thread (the engine's).

    Keyed by (model path, task, device, dtype, offload). Pipelines of one model for other tasks
    (img2img after txt2img) are derived with ``from_pipe`` and share its weights. At most
    ``max_models`` models stay loaded: loading another evicts the oldest (a Stable Diffusion
    model is gigabytes).
    """

    def __init__(self, max_models: int = 1) -> None:
        self.max_models = max_models
        self._pipes: OrderedDict[tuple, Any] = OrderedDict()

    @staticmethod
    def key_for(
        path: str | Path, task: str, device: torch.device, dtype: torch.dtype, offload: bool = False
    ) -> tuple:
        """The cache key of a model's pipeline for ``task`` (``path`` as given, resolved)."""
        return (str(Path(path).expanduser().resolve()), task, str(device), mem.dtype_name(dtype),
                offload)

    @staticmethod
    def _model_key(key: tuple) -> tuple:
        path, _task, *rest = key
        return (path, *rest)

    def get(self, key: tuple) -> Any | None:
        pipe = self._pipes.get(key)
        if pipe is not None:
            self._pipes.move_to_end(key)
        return pipe

    def sibling(self, key: tuple) -> Any | None:
        """A loaded pipeline of the same model, device, dtype and offload, for another task."""
        want = self._model_key(key)
        return next((p for k, p in self._pipes.items() if self._model_key(k) == want), None)

    def put(self, key: tuple, pipe: Any) -> None:
        self._pipes[key] = pipe
        self._pipes.move_to_end(key)
        models = list(OrderedDict.fromkeys(self._model_key(k) for k in self._pipes))
        for old in models[: max(0, len(models) - self.max_models)]:
            self.evict(old)

    def evict(self, model_key: tuple) -> None:
        for k in [k for k in self._pipes if self._model_key(k) == model_key]:
            del self._pipes[k]

    def evict_other(self, key: tuple) -> None:
        """Drop every model but ``key``'s (before loading it in another configuration)."""
        keep = self._model_key(key)
        for model_key in {self._model_key(k) for k in self._pipes} - {keep}:
            self.evict(model_key)

    def clear(self) -> None:
        self._pipes.clear()

    def models(self) -> list[str]:
        """The paths of the models loaded now, oldest first."""
        return list(OrderedDict.fromkeys(k[0] for k in self._pipes))

    def on_gpu(self) -> bool:
        """Whether a loaded pipeline holds GPU memory (offloaded ones included)."""
        return any(k[2].startswith(("cuda", "mps")) or k[4] for k in self._pipes)

    def release(self) -> str:
        """Drop every loaded pipeline and hand its memory back (to the GPU driver too); a line
        saying what was freed. The next generation loads its model again."""
        names = [Path(p).name for p in self.models()]
        before = _gpu_bytes()
        self._pipes.clear()
        free_memory()
        if not names:
            return "No model was loaded."
        freed = before - _gpu_bytes()
        what = ", ".join(names)
        gpu = f"; {freed / 1024**3:.1f} GB of GPU memory freed" if freed > 0 else ""
        return f"Unloaded {what}{gpu}. It loads again on the next Generate."

    def __len__(self) -> int:
        return len(self._pipes)


def _gpu_bytes() -> int:
    """What the CUDA caching allocator holds now, 0 without CUDA (torch never initialised)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.memory_reserved())
    return 0


def make_room_for_training(device: str | None) -> str | None:
    """Before training on a GPU (``device`` not "cpu"): unload the pipelines the Prompt
    workspace left on the GPU, which hold gigabytes that training needs. A line for the log, or
    None when nothing was unloaded."""
    cache = default_cache()
    if (device or "auto").lower() == "cpu" or not cache.on_gpu():
        return None
    return "Making room for training. " + cache.release()


def release_models_job(
    token: CancelToken, cache: PipelineCache | None = None
) -> Generator[Progress, None, str]:
    """A job that unloads every Stable Diffusion pipeline (the process's cache by default)."""
    yield Progress("models", message="Unloading models")
    return (cache if cache is not None else default_cache()).release()


_default_cache: PipelineCache | None = None


def default_cache() -> PipelineCache:
    """The process's cache (the engine thread is the only one that runs generation jobs)."""
    global _default_cache
    if _default_cache is None:
        _default_cache = PipelineCache()
    return _default_cache


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
        is_run = path.is_dir() and (path / "config.json").is_file() and not (
            path / "model_index.json"
        ).is_file()
        return ModelSource(path.resolve(), path.stem if path.is_file() else path.name, is_run)
    if library is None:
        from studio.engine.prompt.library import ModelLibrary

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
    return ModelSource(Path(entry.path), entry.name, entry.kind == "studio-run")


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
    cls = diffusers.StableDiffusionXLInpaintPipeline if xl else diffusers.StableDiffusionInpaintPipeline
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
        image = inputs.image if inputs.image is not None else Image.new("RGB", size, (127, 127, 127))
        kwargs.update(
            image=image, mask_image=Image.new("L", size, 255), width=size[0], height=size[1],
            strength=1.0 if request.mode == "txt2img" else request.strength,
        )
    elif request.mode == "txt2img":
        kwargs.update(width=inputs.width, height=inputs.height)
    elif request.mode == "img2img":
        kwargs.update(image=inputs.image, strength=request.strength)
    else:
        kwargs.update(
            image=inputs.image, mask_image=inputs.mask, width=inputs.width, height=inputs.height,
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


def image_metadata(
    request: GenerateRequest, source_name: str, seed: int, index: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """One image's metadata: the request with this image's seed, as a batch of one."""
    meta = replace(request, seed=seed, batch_count=1).to_metadata()
    meta.update(
        model_name=source_name,
        batch={"index": index, "count": request.batch_count, "first_seed": request.seed},
        **extra,
    )
    return meta


def _step_reporter(
    request: GenerateRequest, index: int, seed: int, per_image: int, total: int, started: float
) -> Callable[[int, np.ndarray | None], Progress]:
    def on_step(step: int, preview: np.ndarray | None) -> Progress:
        elapsed = time.perf_counter() - started
        return Progress(
            "generate", index * per_image + step, total,
            message=f"Image {index + 1}/{request.batch_count}: step {step}/{per_image}",
            image=preview,
            info={"it_per_s": step / elapsed if elapsed > 0 else 0.0, "image_index": index,
                  "seed": seed},
        )

    return on_step


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
    dtype = mem.resolve_dtype(request.dtype, device)
    cache = pipeline_cache if pipeline_cache is not None else default_cache()
    inputs = prepare_inputs(request)
    per_image = request.denoising_steps
    total = per_image * request.batch_count
    plan = None if request.memory == "auto" else mem.plan_for(request.memory, device)
    compile_failed = False
    images: list[np.ndarray] = []
    metadata: list[dict[str, Any]] = []

    for index, seed in enumerate(request.seeds):
        token.check()
        while True:
            failure, compiled, key = "", False, None
            try:
                yield Progress("load", index * per_image, total, message=f"Loading {source.name}")
                pipe, key, loaded = _load(source, request, device, dtype, plan, cache, allow_pickle)
                if loaded:
                    yield Progress("load", index * per_image, total, message=f"Loaded {source.name}")
                if plan is None:
                    plan = mem.choose_plan("auto", device, inputs.width, inputs.height, dtype)
                mem.apply_plan(pipe, plan)
                if request.compile and not compile_failed and not plan.cpu_offload:
                    compiled = mem.compile_unet(pipe)
                elif not request.compile:
                    mem.uncompile_unet(pipe)
                pipe.scheduler = make_scheduler(pipe, request.scheduler)
                token.check()
                started = time.perf_counter()
                on_step = _step_reporter(request, index, seed, per_image, total, started)
                output = yield from run_pipeline(
                    pipe,
                    pipeline_kwargs(request, inputs, seed, inpainting_unet=native_inpainting(pipe)),
                    token,
                    preview_every=request.preview_every, on_step=on_step,
                )
                elapsed = time.perf_counter() - started
                break
            except (Cancelled, StudioError):
                raise
            except Exception as err:  # noqa: BLE001 - sorted below, outside the except block
                if is_out_of_memory(err):
                    failure = "oom"
                elif request.compile and compiled:
                    failure = f"compile: {type(err).__name__}: {err}"
                else:
                    raise
            # Out of the except block, so the failed step's tensors can be freed.
            pipe = None
            free_memory()
            if failure == "oom":
                assert plan is not None
                lighter = mem.lighter(plan, device)
                if lighter is None:
                    raise mem.out_of_memory_error(inputs.width, inputs.height, plan, device)
                yield Progress(
                    "generate", index * per_image, total,
                    message=f"Out of memory at memory={plan.rung}; retrying with "
                    f"memory={lighter.rung} ({lighter.describe()})",
                )
                plan = lighter
            else:
                compile_failed = True
                cached = cache.get(key) if key is not None else None
                if cached is not None:
                    mem.uncompile_unet(cached)
                cached = None
                yield Progress(
                    "generate", index * per_image, total,
                    message=f"torch.compile failed ({failure[9:][:200]}); running eager",
                )
        image = inputs.finish(_to_uint8(output))
        output = None
        images.append(image)
        metadata.append(image_metadata(request, source.name, seed, index, {
            "memory_rung": plan.rung if plan else request.memory,
            "dtype_used": mem.dtype_name(dtype),
            "device_used": str(device),
            "compiled": bool(request.compile and not compile_failed),
            "generation_size": [inputs.width, inputs.height],
            "seconds": round(elapsed, 3),
        }))
        yield Progress(
            "generate", (index + 1) * per_image, total,
            message=f"Image {index + 1}/{request.batch_count} done", image=image,
        )
    return GenerateResult(images=images, metadata=metadata, seeds=request.seeds)
