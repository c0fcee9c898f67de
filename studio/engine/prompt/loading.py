"""Load a Stable Diffusion model from disk into a diffusers pipeline, offline and safely.

- A diffusers folder: :func:`files.check_folder_code` first, then ``from_pretrained`` with
  ``local_files_only`` and safetensors whenever the folder has them. Folders whose weights are
  pickled need consent and then load through diffusers/transformers' ``weights_only`` reader.
- A single checkpoint file (original SD 1.x / 2.x / SDXL layout): ``from_single_file`` with a
  LOCAL diffusers-layout config folder (beside the file, or ``studio_home()/configs/<arch>``);
  without one the error names exactly what to add, and one whose UNet takes other inputs than
  the file's (an inpainting file, 9 channels, with a regular config, or the reverse) is refused
  before diffusers sees it. A pickled file is read by :func:`files.read_state_dict` (consent,
  weights-only), written to a temporary safetensors file and loaded from that; the pipeline's
  ``studio_entry`` then carries the architecture its tensors tell (the library lists an unread
  pickle as "unknown").
- The hub is never contacted: ``HF_HUB_OFFLINE`` is forced on for the duration of the call.

``task`` is "txt2img", "img2img" or "inpaint". For "inpaint" on a model whose UNet is not an
inpainting one (4 input channels), the image-to-image pipeline is returned and
:func:`native_inpainting` is False: the caller blends the known region into the latents itself.

The SDXL refiner (arch "sdxl-refiner": one text encoder, ``text_encoder_2``; no
``text_encoder``/``tokenizer``; a UNet conditioned on an aesthetic score) refines an existing
image: image to image and inpainting only. Asked for "txt2img" it raises :func:`refiner_txt2img_error`
before anything is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress
from studio.core.paths import cache_dir, studio_home
from studio.engine.prompt import files
from studio.engine.prompt.files import FileFormat
from studio.engine.prompt.library import (
    IMAGE_ONLY_ARCHS,
    ModelEntry,
    classify_checkpoint_keys,
    inspect_model,
)

if TYPE_CHECKING:
    import torch

TASKS = ("txt2img", "img2img", "inpaint")
_PIPELINES = {
    (False, "txt2img"): "StableDiffusionPipeline",
    (False, "img2img"): "StableDiffusionImg2ImgPipeline",
    (False, "inpaint"): "StableDiffusionInpaintPipeline",
    (True, "txt2img"): "StableDiffusionXLPipeline",
    (True, "img2img"): "StableDiffusionXLImg2ImgPipeline",
    (True, "inpaint"): "StableDiffusionXLInpaintPipeline",
}
_ARCH_NAMES = {
    "sd1": "Stable Diffusion 1.x",
    "sd2": "Stable Diffusion 2.x",
    "sdxl": "SDXL",
    "sdxl-refiner": "SDXL refiner",
}
_XL_ARCHS = ("sdxl", "sdxl-refiner")


def refiner_txt2img_error(name: str) -> StudioError:
    """Why a refiner cannot make an image from a prompt alone, and what to do instead."""
    return StudioError(
        f"{name} is an SDXL refiner: it refines an existing image and cannot make one from a "
        "prompt alone. Use Image to image (or Inpaint) with a picture to refine (--image on the "
        "command line), or pick a base model (SD 1.x, SD 2.x, SDXL) for Text to image."
    )


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
    if entry.kind == "studio-run":
        raise StudioError(
            f"{entry.name} is a Studio run: load it with studio.engine.sample.load_run_model, "
            "not as a Stable Diffusion pipeline."
        )
    if task == "txt2img" and entry.arch in IMAGE_ONLY_ARCHS:
        raise refiner_txt2img_error(entry.name)
    if entry.needs_consent and not allow_pickle:
        raise files.PickleConsentRequired(path)
    _quiet()
    yield Progress("load", 0, 3, f"Loading {entry.name}")
    token.check()
    if entry.kind == "diffusers-folder":
        pipe = _load_folder(entry, task, dtype, allow_pickle)
    else:
        pipe, arch, inpainting = yield from _load_single_file(
            entry, task, dtype, allow_pickle, token
        )
        # A pickle is listed as "unknown" until it is read: say what it turned out to be.
        entry = dataclasses.replace(entry, arch=arch, inpainting=inpainting)
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
    if task == "txt2img" and fresh.arch in IMAGE_ONLY_ARCHS:
        raise refiner_txt2img_error(entry.name)
    cls = pipeline_class(fresh.arch in _XL_ARCHS, task, fresh.inpainting)
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "dtype": dtype,
        "use_safetensors": None if fresh.needs_consent else True,  # None: .bin where no safetensors
    }
    if not _is_xl(cls):
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False
    with offline():
        try:
            return cls.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError) as err:
            raise StudioError(
                f"{entry.name} could not be loaded: {_first_line(err)}. Check that the folder "
                "is a complete diffusers Stable Diffusion model (model_index.json, unet/, vae/, "
                "text_encoder/, tokenizer/, scheduler/)."
            ) from err


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300].rstrip(".") if lines else type(err).__name__


# -- single files -----------------------------------------------------------------------------


def config_key(arch: str, inpainting: bool) -> str:
    """The folder name under ``studio_home()/configs``: "sd1", "sd2-inpainting", "sdxl",
    "sdxl-refiner", ..."""
    return f"{arch}-inpainting" if inpainting else arch


def required_config_files(xl: bool, *, refiner: bool = False) -> list[str]:
    """The files a single file's config folder needs. The SDXL refiner has no ``text_encoder/``
    or ``tokenizer/``: only ``text_encoder_2/`` and ``tokenizer_2/``."""
    tok = "(tokenizer.json, or vocab.json + merges.txt, with tokenizer_config.json)"
    need = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        f"tokenizer/ {tok}",
        "unet/config.json",
        "vae/config.json",
    ]
    if refiner:
        need[2:4] = ["text_encoder_2/config.json", f"tokenizer_2/ {tok}"]
    elif xl:
        need[3:3] = ["text_encoder_2/config.json", f"tokenizer_2/ {tok}"]
    return need


def _missing_config_files(folder: Path, xl: bool, refiner: bool = False) -> list[str]:
    missing = []
    for item in required_config_files(xl, refiner=refiner):
        name = item.split(" ")[0]
        if name.endswith("/"):
            sub = folder / name.rstrip("/")
            if not ((sub / "tokenizer.json").is_file() or (sub / "vocab.json").is_file()):
                missing.append(item)
        elif not (folder / name).is_file():
            missing.append(item)
    return missing


def config_candidates(file: Path, arch: str, inpainting: bool) -> list[Path]:
    """Where a single file's diffusers config may live, in the order they are tried."""
    out = [file.parent / file.stem]
    if arch in _ARCH_NAMES:
        out.append(studio_home() / "configs" / config_key(arch, inpainting))
    return out


def find_local_config(file: Path, arch: str, inpainting: bool) -> Path:
    """The config folder for ``file``; :class:`StudioError` saying exactly what to add if none."""
    for folder in config_candidates(file, arch, inpainting):
        if (folder / "model_index.json").is_file():
            files.check_folder_code(folder)
            xl = arch in _XL_ARCHS or "XL" in str(_index_class(folder))
            missing = _missing_config_files(folder, xl, arch == "sdxl-refiner")
            if missing:
                raise StudioError(
                    f"The config folder {folder} for {file.name} is incomplete. Add: "
                    + "; ".join(missing)
                    + ". Copy them from the diffusers version of the same base model."
                )
            _check_unet_channels(folder, file, arch, inpainting)
            return folder
    if arch not in _ARCH_NAMES:
        raise StudioError(
            f"Studio cannot tell which Stable Diffusion version {file.name} is (its tensor names "
            "match none of SD 1.x, SD 2.x, SDXL or the SDXL refiner). If it is one, put that "
            "model's diffusers "
            f"config folder next to it as {file.parent / file.stem}/ with: "
            + "; ".join(required_config_files(xl=False))
            + " (and text_encoder_2/, tokenizer_2/ for SDXL)."
        )
    target = studio_home() / "configs" / config_key(arch, inpainting)
    kind = _ARCH_NAMES[arch] + (" inpainting" if inpainting else "")
    raise StudioError(
        f"{file.name} is a {kind} checkpoint, and loading it needs that model's configuration "
        f"and tokenizer files, which Studio never downloads. Add the diffusers config folder of "
        f"a {kind} model (no weights needed) as {target}/ (for every {kind} checkpoint) or as "
        f"{file.parent / file.stem}/ (for this file only), containing: "
        + "; ".join(required_config_files(arch in _XL_ARCHS, refiner=arch == "sdxl-refiner"))
        + "."
    )


def _check_unet_channels(folder: Path, file: Path, arch: str, inpainting: bool) -> None:
    """Refuse a config whose UNet takes other inputs than the file's: an inpainting file (9
    input channels: latents, mask, masked image) with a regular model's config, or the other
    way round. diffusers would fail on the first layer with advice meant for training code."""
    import json

    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        channels = unet.get("in_channels", 4)
    except (OSError, ValueError, AttributeError):
        return  # a broken config: diffusers' own message when it loads
    if not isinstance(channels, int) or (channels == 9) == inpainting:
        return
    kind = _ARCH_NAMES.get(arch, "Stable Diffusion") + (" inpainting" if inpainting else "")
    shared = studio_home() / "configs" / config_key(arch, inpainting)
    what, other = ("an inpainting", "a regular") if inpainting else ("a regular", "an inpainting")
    raise StudioError(
        f"{file.name} is {what} checkpoint ({kind}, a UNet with {9 if inpainting else 4} input "
        f"channels), but the config in {folder} is for {other} model (in_channels {channels} in "
        f"unet/config.json). Put the diffusers config folder of the same kind of model ({kind}) "
        "there instead"
        + (f"; the one for every such file goes in {shared}/." if arch in _ARCH_NAMES else ".")
    )


def _index_class(folder: Path) -> str:
    import json

    try:
        return str(
            json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get(
                "_class_name", ""
            )
        )
    except (OSError, ValueError, AttributeError):
        return ""


def _load_single_file(
    entry: ModelEntry, task: str, dtype: Any, allow_pickle: bool, token: CancelToken
) -> Generator[Progress, None, tuple[Any, str, bool]]:
    """The pipeline, and the (arch, inpainting) the file's tensor names and shapes tell."""
    file = Path(entry.path)
    fmt = files.sniff_format(file)
    workdir: Path | None = None
    try:
        if fmt is FileFormat.SAFETENSORS:
            header = files.read_safetensors_header(file)
            arch, inpainting = classify_checkpoint_keys(
                {k: t.shape for k, t in header.tensors.items()}
            )
            if task == "txt2img" and arch in IMAGE_ONLY_ARCHS:
                raise refiner_txt2img_error(entry.name)
            config = find_local_config(file, arch, inpainting)
            load_from = file
            if file.suffix.lower() != ".safetensors":
                # diffusers picks its reader by extension: give it a name that matches the content
                workdir = Path(tempfile.mkdtemp(prefix="single-", dir=_scratch()))
                load_from = workdir / f"{file.stem}.safetensors"
                try:
                    os.symlink(file, load_from)
                except OSError:
                    raise StudioError(
                        f"{file.name} is a safetensors file with another extension; rename it to "
                        f"{file.stem}.safetensors and add it again."
                    ) from None
        elif fmt.is_pickle:
            if not allow_pickle:
                raise files.PickleConsentRequired(file)
            yield Progress("load", 1, 3, f"Reading {file.name} (weights only)")
            tensors = files.read_state_dict(file, allow_pickle=True)
            token.check()
            arch, inpainting = classify_checkpoint_keys(
                {k: tuple(v.shape) for k, v in tensors.items()}
            )
            if task == "txt2img" and arch in IMAGE_ONLY_ARCHS:
                raise refiner_txt2img_error(entry.name)
            config = find_local_config(file, arch, inpainting)
            workdir = Path(tempfile.mkdtemp(prefix="single-", dir=_scratch()))
            load_from = workdir / f"{file.stem}.safetensors"
            files.save_state_dict_safetensors(tensors, load_from)
            del tensors
            token.check()
        else:
            files.read_state_dict(file)  # raises the precise message
            raise AssertionError("unreachable")  # pragma: no cover
        xl = arch in _XL_ARCHS or "XL" in _index_class(config)
        cls = pipeline_class(xl, task, inpainting)
        kwargs: dict[str, Any] = {"config": str(config), "local_files_only": True, "dtype": dtype}
        if not xl:
            kwargs["safety_checker"] = None
            kwargs["requires_safety_checker"] = False
        yield Progress("load", 1, 3, f"Building the pipeline for {file.name}")
        kind = f"{_ARCH_NAMES.get(arch, arch)}{' inpainting' if inpainting else ''}"
        with offline():
            try:
                pipe = cls.from_single_file(str(load_from), **kwargs)
            except (OSError, ValueError, KeyError, RuntimeError) as err:
                raise StudioError(
                    f"{file.name} could not be loaded with the config in {config}: "
                    f"{_first_line(err)}. Check that the config belongs to the same kind of model "
                    f"({kind})."
                ) from err
        _check_all_weights_loaded(pipe, file, config, kind)
        return pipe, arch, inpainting
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


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


def _scratch() -> Path:
    folder = cache_dir() / "single-file"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- switching tasks --------------------------------------------------------------------------


def pipeline_components_from(pipe: Any, task: str) -> Any:
    """The pipeline for ``task`` sharing ``pipe``'s modules: nothing is reloaded or copied.

    Follows :func:`pipeline_class` (a regular UNet asked to inpaint gets image-to-image). The
    new pipeline is built from ``pipe.components`` and its config flags rather than with
    diffusers' ``from_pipe``, which casts the shared modules (and so ``pipe``'s) to its dtype.
    A refiner asked for "txt2img" raises :func:`refiner_txt2img_error`.
    """
    if task == "txt2img" and is_refiner(pipe):
        entry = getattr(pipe, "studio_entry", None)
        raise refiner_txt2img_error(getattr(entry, "name", "This model"))
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
