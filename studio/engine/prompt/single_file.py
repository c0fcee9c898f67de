"""Single checkpoint files (original SD 1.x / 2.x / SDXL layout): what a file is, and what it
needs before diffusers can build a pipeline from it.

- The architecture and whether the UNet inpaints come from the tensor names and shapes
  (:func:`~studio.engine.prompt.library.classify_checkpoint_keys`): a safetensors file's header,
  or a pickle's tensors once the user agreed (:func:`files.read_state_dict`, weights only).
- The diffusers-layout config folder the file loads with is LOCAL: beside the file
  (``<stem>/``) or shared (``studio_home()/configs/<arch>``). Without one, or with one that is
  incomplete or for the other kind of UNet (inpainting or not), the error names exactly what to
  add or change.
- diffusers picks its reader by file extension, so :func:`prepare_single_file` hands it a
  ``.safetensors`` path: the file itself, a link to a safetensors file with another extension, or
  a temporary safetensors copy of a pickle's tensors.

Building the pipeline from what this module prepared is :mod:`studio.engine.prompt.loading`'s.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress
from studio.core.paths import cache_dir, studio_home
from studio.engine.prompt import files
from studio.engine.prompt.files import FileFormat
from studio.engine.prompt.library import ModelEntry, classify_checkpoint_keys
from studio.engine.prompt.modes import check_mode

ARCH_NAMES = {
    "sd1": "Stable Diffusion 1.x",
    "sd2": "Stable Diffusion 2.x",
    "sdxl": "SDXL",
    "sdxl-refiner": "SDXL refiner",
}
XL_ARCHS = ("sdxl", "sdxl-refiner")


def describe(arch: str, inpainting: bool) -> str:
    """The kind of model, for messages: "SDXL", "Stable Diffusion 2.x inpainting", ..."""
    return f"{ARCH_NAMES.get(arch, arch)}{' inpainting' if inpainting else ''}"


# -- the config folder ------------------------------------------------------------------------


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
    if arch in ARCH_NAMES:
        out.append(studio_home() / "configs" / config_key(arch, inpainting))
    return out


def find_local_config(file: Path, arch: str, inpainting: bool) -> Path:
    """The config folder for ``file``; :class:`StudioError` saying exactly what to add if none."""
    for folder in config_candidates(file, arch, inpainting):
        if (folder / "model_index.json").is_file():
            files.check_folder_code(folder)
            xl = arch in XL_ARCHS or "XL" in str(index_class(folder))
            missing = _missing_config_files(folder, xl, arch == "sdxl-refiner")
            if missing:
                raise StudioError(
                    f"The config folder {folder} for {file.name} is incomplete. Add: "
                    + "; ".join(missing)
                    + ". Copy them from the diffusers version of the same base model."
                )
            _check_unet_channels(folder, file, arch, inpainting)
            return folder
    if arch not in ARCH_NAMES:
        raise StudioError(
            f"Studio cannot tell which Stable Diffusion version {file.name} is (its tensor names "
            "match none of SD 1.x, SD 2.x, SDXL or the SDXL refiner). If it is one, put that "
            "model's diffusers "
            f"config folder next to it as {file.parent / file.stem}/ with: "
            + "; ".join(required_config_files(xl=False))
            + " (and text_encoder_2/, tokenizer_2/ for SDXL)."
        )
    target = studio_home() / "configs" / config_key(arch, inpainting)
    kind = ARCH_NAMES[arch] + (" inpainting" if inpainting else "")
    raise StudioError(
        f"{file.name} is a {kind} checkpoint, and loading it needs that model's configuration "
        f"and tokenizer files, which Studio never downloads. Add the diffusers config folder of "
        f"a {kind} model (no weights needed) as {target}/ (for every {kind} checkpoint) or as "
        f"{file.parent / file.stem}/ (for this file only), containing: "
        + "; ".join(required_config_files(arch in XL_ARCHS, refiner=arch == "sdxl-refiner"))
        + "."
    )


def _check_unet_channels(folder: Path, file: Path, arch: str, inpainting: bool) -> None:
    """Refuse a config whose UNet takes other inputs than the file's: an inpainting file (9
    input channels: latents, mask, masked image) with a regular model's config, or the other
    way round. diffusers would fail on the first layer with advice meant for training code."""
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        channels = unet.get("in_channels", 4)
    except (OSError, ValueError, AttributeError):
        return  # a broken config: diffusers' own message when it loads
    if not isinstance(channels, int) or (channels == 9) == inpainting:
        return
    kind = ARCH_NAMES.get(arch, "Stable Diffusion") + (" inpainting" if inpainting else "")
    shared = studio_home() / "configs" / config_key(arch, inpainting)
    what, other = ("an inpainting", "a regular") if inpainting else ("a regular", "an inpainting")
    raise StudioError(
        f"{file.name} is {what} checkpoint ({kind}, a UNet with {9 if inpainting else 4} input "
        f"channels), but the config in {folder} is for {other} model (in_channels {channels} in "
        f"unet/config.json). Put the diffusers config folder of the same kind of model ({kind}) "
        "there instead"
        + (f"; the one for every such file goes in {shared}/." if arch in ARCH_NAMES else ".")
    )


def index_class(folder: Path) -> str:
    """The ``_class_name`` in a config folder's ``model_index.json`` ("" when unreadable)."""
    try:
        return str(
            json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get(
                "_class_name", ""
            )
        )
    except (OSError, ValueError, AttributeError):
        return ""


# -- the file ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SingleFile:
    """A single file ready for diffusers' ``from_single_file``.

    ``load_from`` is a ``.safetensors`` path: the file itself, or a link or copy in ``workdir``,
    a temporary folder the caller removes (:func:`discard`) once the pipeline is built.
    """

    file: Path
    arch: str
    inpainting: bool
    config: Path
    load_from: Path
    workdir: Path | None = None

    @property
    def xl(self) -> bool:
        return self.arch in XL_ARCHS or "XL" in index_class(self.config)

    def discard(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def prepare_single_file(
    entry: ModelEntry, task: str, allow_pickle: bool, token: CancelToken
) -> Generator[Progress, None, SingleFile]:
    """Tell what ``entry``'s file is, refuse a mode it cannot run
    (:class:`~studio.engine.prompt.modes.ModeRefused`, carrying the architecture it found), find
    its config folder and give diffusers a safetensors path for it."""
    file = Path(entry.path)
    fmt = files.sniff_format(file)
    workdir: Path | None = None
    try:
        if fmt is FileFormat.SAFETENSORS:
            header = files.read_safetensors_header(file)
            arch, inpainting = classify_checkpoint_keys(
                {k: t.shape for k, t in header.tensors.items()}
            )
            check_mode(task, arch, entry.name, inpainting=inpainting)
            config = find_local_config(file, arch, inpainting)
            load_from = file
            if file.suffix.lower() != ".safetensors":
                # diffusers picks its reader by extension: give it a name that matches the content
                workdir = Path(tempfile.mkdtemp(prefix="single-", dir=scratch()))
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
            check_mode(task, arch, entry.name, inpainting=inpainting)
            config = find_local_config(file, arch, inpainting)
            workdir = Path(tempfile.mkdtemp(prefix="single-", dir=scratch()))
            load_from = workdir / f"{file.stem}.safetensors"
            files.save_state_dict_safetensors(tensors, load_from)
            del tensors
            token.check()
        else:
            files.read_state_dict(file)  # raises the precise message
            raise AssertionError("unreachable")  # pragma: no cover
    except BaseException:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    return SingleFile(file, arch, inpainting, config, load_from, workdir)


def scratch() -> Path:
    """Where temporary safetensors copies and links go (removed after each load)."""
    folder = cache_dir() / "single-file"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
