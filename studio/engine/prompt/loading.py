"""Load a Stable Diffusion model from disk into a diffusers pipeline, offline and safely.

- A diffusers folder: :func:`files.check_folder_code` first, then ``from_pretrained`` with
  ``local_files_only`` and safetensors whenever the folder has them. Folders whose weights are
  pickled need consent and then load through diffusers/transformers' ``weights_only`` reader.
- A single checkpoint file (original SD 1.x / 2.x / SDXL layout): what it is and the LOCAL
  diffusers-layout config folder it loads with are :mod:`studio.engine.prompt.single_file`'s
  (a pickled file is read weights-only after consent and copied to a temporary safetensors
  file); here ``from_single_file`` builds the pipeline, which must fill every weight. The
  pipeline's ``studio_entry`` then carries the architecture its tensors tell (the library lists
  an unread pickle as "unknown").
- The hub is never contacted: ``HF_HUB_OFFLINE`` is forced on for the duration of the call.
- Every loaded pipeline's weights are checked for NaN and infinity before it is used
  (:func:`studio.engine.finite.check_finite`): such a model could only draw black or noise, and
  the message names the tensors. Pickled weights in a folder load only on torch >= 2.6
  (:func:`files.require_safe_torch`); one that needs code is refused naming the file, without
  torch's advice to load it unsafely. A single file missing a part (its text encoder, say) is
  refused in one sentence.

``task`` is "txt2img", "img2img" or "inpaint". For "inpaint" on a model whose UNet is not an
inpainting one (4 input channels), the image-to-image pipeline is returned and
:func:`native_inpainting` is False: the caller blends the known region into the latents itself.

The SDXL refiner (arch "sdxl-refiner": one text encoder, ``text_encoder_2``; no
``text_encoder``/``tokenizer``; a UNet conditioned on an aesthetic score) refines an existing
image: image to image and inpainting only. Which modes a model supports is decided in
:mod:`studio.engine.prompt.modes`; asked for "txt2img", a refiner raises its
:class:`~studio.engine.prompt.modes.ModeRefused` before its weights are loaded (a pickle's are
read first: only its tensors tell that it is a refiner).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress
from studio.engine.finite import check_finite
from studio.engine.prompt import files
from studio.engine.prompt.library import FOLDER, STUDIO_RUN, ModelEntry, inspect_model
from studio.engine.prompt.modes import IMAGE_ONLY_ARCHS, check_mode
from studio.engine.prompt.single_file import (
    XL_ARCHS,
    config_candidates,
    config_key,
    describe,
    find_local_config,
    prepare_single_file,
    required_config_files,
)

if TYPE_CHECKING:
    import torch

# The config lookup lives in single_file; its public names stay importable from here.
__all__ = [
    "TASKS",
    "config_candidates",
    "config_key",
    "find_local_config",
    "is_refiner",
    "load_pipeline",
    "load_pipeline_job",
    "native_inpainting",
    "offline",
    "pipeline_as",
    "pipeline_class",
    "pipeline_components_from",
    "required_config_files",
]

TASKS = ("txt2img", "img2img", "inpaint")
_PIPELINES = {
    (False, "txt2img"): "StableDiffusionPipeline",
    (False, "img2img"): "StableDiffusionImg2ImgPipeline",
    (False, "inpaint"): "StableDiffusionInpaintPipeline",
    (True, "txt2img"): "StableDiffusionXLPipeline",
    (True, "img2img"): "StableDiffusionXLImg2ImgPipeline",
    (True, "inpaint"): "StableDiffusionXLInpaintPipeline",
}


def is_refiner(pipe: Any) -> bool:
    """True for an SDXL refiner pipeline: ``text_encoder_2`` alone, or an aesthetic-score UNet."""
    entry = getattr(pipe, "studio_entry", None)
    if entry is not None and getattr(entry, "arch", "") in IMAGE_ONLY_ARCHS:
        return True
    if not _is_xl(pipe):
        return False
    one_encoder = getattr(pipe, "text_encoder", None) is None and (
        getattr(pipe, "text_encoder_2", None) is not None
    )
    config = getattr(pipe, "config", {})
    return one_encoder or bool(config.get("requires_aesthetics_score", False))


def pipeline_class(xl: bool, task: str, inpainting_unet: bool) -> type:
    """The diffusers pipeline class for an architecture and task (see the module docstring)."""
    import diffusers

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if task == "inpaint" and not inpainting_unet:
        task = "img2img"
    elif task != "inpaint" and inpainting_unet:
        # An inpainting UNet needs mask channels: only the inpainting pipeline feeds them.
        task = "inpaint"
    return getattr(diffusers, _PIPELINES[(xl, task)])


def native_inpainting(pipe: Any) -> bool:
    """True when ``pipe``'s UNet takes a mask and masked image itself (9 input channels)."""
    unet = getattr(pipe, "unet", None)
    return bool(unet is not None and getattr(unet.config, "in_channels", 4) == 9)


def _is_xl(pipe_or_class: Any) -> bool:
    name = (
        pipe_or_class.__name__ if isinstance(pipe_or_class, type) else type(pipe_or_class).__name__
    )
    return "XL" in name


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """No network for the duration: environment and huggingface_hub's already-read constant."""
    import huggingface_hub.constants as hub

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_const = hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved_const
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _quiet() -> None:
    """No tqdm bars from diffusers/transformers inside the app (tqdm's monitor thread and Qt)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


def _resolve(source: ModelEntry | str | os.PathLike[str]) -> ModelEntry:
    if isinstance(source, ModelEntry):
        return source
    return inspect_model(source)


def load_pipeline(
    source: ModelEntry | str | os.PathLike[str],
    task: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> Any:
    """A diffusers pipeline for ``task`` from a library entry or a path, loaded offline.

    The pipeline gets ``studio_entry`` (the :class:`ModelEntry`) and ``studio_native_inpainting``
    attributes; progress bars are off. Raises :class:`files.PickleConsentRequired` for a pickle
    without ``allow_pickle`` and :class:`StudioError` with what to do for everything else.
    """
    job = load_pipeline_job(
        source, task, CancelToken(), device=device, dtype=dtype, allow_pickle=allow_pickle
    )
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value


def load_pipeline_job(
    source: ModelEntry | str | os.PathLike[str],
    task: str,
    token: CancelToken,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> Generator[Progress, None, Any]:
    """:func:`load_pipeline` as a job: reports stages and stops between them when cancelled."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    entry = _resolve(source)
    path = Path(entry.path)
    if not path.exists():
        raise StudioError(f"{entry.name}: {path} is missing; was it moved or deleted?")
    if entry.kind == STUDIO_RUN:
        raise StudioError(
            f"{entry.name} is a Studio run: load it with studio.engine.sample.load_run_model, "
            "not as a Stable Diffusion pipeline."
        )
    check_mode(task, entry.arch, entry.name, inpainting=entry.inpainting)
    if entry.needs_consent and not allow_pickle:
        raise files.PickleConsentRequired(path)
    _quiet()
    yield Progress("load", 0, 3, f"Loading {entry.name}")
    token.check()
    if entry.kind == FOLDER:
        pipe = _load_folder(entry, task, dtype, allow_pickle)
    else:
        pipe, arch, inpainting = yield from _load_single_file(
            entry, task, dtype, allow_pickle, token
        )
        # A pickle is listed as "unknown" until it is read: say what it turned out to be.
        entry = dataclasses.replace(entry, arch=arch, inpainting=inpainting)
    token.check()
    yield Progress("load", 2, 3, f"Checking the weights of {entry.name}")
    check_finite(pipe.components, entry.name, "the file is damaged: re-download or re-export it.")
    token.check()
    yield Progress("load", 2, 3, f"Moving {entry.name} to {device}")
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.studio_entry = entry
    pipe.studio_native_inpainting = native_inpainting(pipe)
    yield Progress("load", 3, 3, f"Loaded {entry.name}")
    return pipe


# -- folders ----------------------------------------------------------------------------------


def _load_folder(entry: ModelEntry, task: str, dtype: Any, allow_pickle: bool) -> Any:
    folder = Path(entry.path)
    files.check_folder_code(folder)  # again: the folder may have changed since it was added
    fresh = inspect_model(folder)
    if fresh.needs_consent and not allow_pickle:
        raise files.PickleConsentRequired(folder)
    check_mode(task, fresh.arch, entry.name, inpainting=fresh.inpainting)
    cls = pipeline_class(fresh.arch in XL_ARCHS, task, fresh.inpainting)
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "dtype": dtype,
        "use_safetensors": None if fresh.needs_consent else True,  # None: .bin where no safetensors
    }
    if not _is_xl(cls):
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False
    if fresh.needs_consent:
        files.require_safe_torch()
    with offline():
        try:
            return cls.from_pretrained(str(folder), **kwargs)
        except pickle.UnpicklingError:
            # weights-only loading refused a pickled file: say which, never torch's advice to
            # load it unsafely
            raise _unsafe_pickle_in(folder) from None
        except (OSError, ValueError) as err:
            raise StudioError(
                f"{entry.name} could not be loaded: {_first_line(err)}. Check that the folder "
                "is a complete diffusers Stable Diffusion model (model_index.json, unet/, vae/, "
                "text_encoder/, tokenizer/, scheduler/)."
            ) from err


def _unsafe_pickle_in(folder: Path) -> StudioError:
    """The refusal of the pickled weights file in ``folder`` that needs code to load."""
    from studio.engine.prompt.library import weight_files

    for path in weight_files(folder):
        if files.sniff_format(path).is_pickle:
            try:
                files.read_state_dict(path, allow_pickle=True)
            except files.UnsafeModelError as err:
                return files.UnsafeModelError(
                    f"{folder.name} is refused: {path.relative_to(folder)} {_after_name(err)}",
                    folder,
                )
            except files.ModelFileError:
                continue
    return files.UnsafeModelError(
        f"{folder.name} is refused: one of its pickled weights files needs code to load, not just "
        "tensors. Use a .safetensors version of this model.",
        folder,
    )


def _after_name(err: BaseException) -> str:
    """ "needs code to load ..." from "model.bin needs code to load ..."."""
    text = str(err)
    return text.split(" ", 1)[1] if " " in text else text


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300].rstrip(".") if lines else type(err).__name__


# -- single files -----------------------------------------------------------------------------


def _load_single_file(
    entry: ModelEntry, task: str, dtype: Any, allow_pickle: bool, token: CancelToken
) -> Generator[Progress, None, tuple[Any, str, bool]]:
    """The pipeline, and the (arch, inpainting) the file's tensor names and shapes tell."""
    prepared = yield from prepare_single_file(entry, task, allow_pickle, token)
    try:
        file, config, xl = prepared.file, prepared.config, prepared.xl
        cls = pipeline_class(xl, task, prepared.inpainting)
        kwargs: dict[str, Any] = {"config": str(config), "local_files_only": True, "dtype": dtype}
        if not xl:
            kwargs["safety_checker"] = None
            kwargs["requires_safety_checker"] = False
        yield Progress("load", 1, 3, f"Building the pipeline for {file.name}")
        kind = describe(prepared.arch, prepared.inpainting)
        with offline():
            try:
                pipe = cls.from_single_file(str(prepared.load_from), **kwargs)
            except (OSError, ValueError, KeyError, RuntimeError) as err:
                raise StudioError(
                    f"{file.name} could not be loaded with the config in {config}: "
                    f"{_first_line(err)}. Check that the config belongs to the same kind of model "
                    f"({kind})."
                ) from err
            except Exception as err:
                if type(err).__name__ == "SingleFileComponentError":  # a part without weights
                    raise _missing_component(file, err) from None
                raise
        _check_all_weights_loaded(pipe, file, config, kind)
        return pipe, prepared.arch, prepared.inpainting
    finally:
        prepared.discard()


def _missing_component(file: Path, err: BaseException) -> StudioError:
    """diffusers' "Failed to load CLIPTextModel. Weights for this component appear to be
    missing" as one sentence."""
    import re

    match = re.search(r"Failed to load (\w+)", str(err))
    part = {"CLIPTextModel": "text encoder", "CLIPTextModelWithProjection": "second text encoder"}
    what = part.get(match.group(1), match.group(1)) if match else "one of its parts"
    return StudioError(
        f"{file.name} does not hold the weights of its {what}, so it is not a whole Stable "
        "Diffusion checkpoint; use a file that holds the whole model (UNet, VAE and text encoder)."
    )


def _check_all_weights_loaded(pipe: Any, file: Path, config: Path, kind: str) -> None:
    """Refuse a pipeline with parameters the file did not fill.

    diffusers builds each model empty (on the "meta" device) and fills it from the converted
    checkpoint; where the config describes a model the file does not match (other text-encoder
    widths, say), some parameters stay empty and the failure would only surface later, as a
    bare "Cannot copy out of meta tensor" when the pipeline is moved.
    """
    import torch

    for name, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        empty = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if empty:
            raise StudioError(
                f"{file.name} does not contain all the weights its config in {config} describes "
                f"({name}: {len(empty)} missing, e.g. {empty[0]}). Check that the config folder "
                f"belongs to the same model ({kind}, with the same layer sizes)."
            )


# -- switching tasks --------------------------------------------------------------------------


def pipeline_components_from(pipe: Any, task: str) -> Any:
    """The pipeline for ``task`` sharing ``pipe``'s modules: nothing is reloaded or copied.

    Follows :func:`pipeline_class` (a regular UNet asked to inpaint gets image-to-image). The
    new pipeline is built from ``pipe.components`` and its config flags rather than with
    diffusers' ``from_pipe``, which casts the shared modules (and so ``pipe``'s) to its dtype.
    A refiner asked for "txt2img" raises :class:`~studio.engine.prompt.modes.ModeRefused`.
    """
    if task == "txt2img" and is_refiner(pipe):
        entry = getattr(pipe, "studio_entry", None)
        name, inpainting = getattr(entry, "name", "This model"), getattr(entry, "inpainting", False)
        check_mode(task, "sdxl-refiner", name, inpainting=inpainting)
    return pipeline_as(pipe, pipeline_class(_is_xl(pipe), task, native_inpainting(pipe)))


def pipeline_as(pipe: Any, cls: type) -> Any:
    """A ``cls`` pipeline over ``pipe``'s modules and config flags (``pipe`` itself when it is
    one already). Nothing is copied or cast. Components ``pipe`` has as None (the refiner's
    ``text_encoder`` and ``tokenizer``) stay None; ``cls`` must accept that (the SDXL
    image-to-image and inpaint pipelines do; text to image does not, see
    :func:`pipeline_components_from`)."""
    import inspect

    if type(pipe) is cls:
        return pipe
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in pipe.config.items() if k in params and not k.startswith("_")}
    kwargs.update({k: v for k, v in pipe.components.items() if k in params})
    for name, param in params.items():  # components the source pipeline lacks (feature_extractor)
        if name != "self" and name not in kwargs and param.default is inspect.Parameter.empty:
            kwargs[name] = None
    new = cls(**kwargs)
    new.set_progress_bar_config(disable=True)
    for attr in ("studio_entry",):
        if hasattr(pipe, attr):
            setattr(new, attr, getattr(pipe, attr))
    new.studio_native_inpainting = native_inpainting(new)
    return new
