"""The model library: Stable Diffusion models the user added, and prompt-conditioned runs.

:func:`inspect_model` tells what a path holds without loading its weights: a diffusers folder
from ``model_index.json`` and ``unet/config.json``; a single safetensors file from its header
(key names, dtypes, shapes). A pickled file is not opened at all until the user agrees, so it is
listed with ``needs_consent`` and an architecture of "unknown".

:class:`ModelLibrary` keeps the added entries in ``studio_home()/models.json`` (atomic writes)
and lists Studio runs under ``runs_dir()`` whose family takes prompts beside them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from studio.core import atomic
from studio.core.errors import StudioError
from studio.core.paths import runs_dir, studio_home
from studio.engine.prompt import files
from studio.engine.prompt.files import FLOAT_DTYPES, FileFormat
from studio.engine.prompt.modes import IMAGE_ONLY_ARCHS as IMAGE_ONLY_ARCHS  # re-exported

FOLDER, SINGLE_FILE, STUDIO_RUN = "diffusers-folder", "single-file", "studio-run"
KINDS = (FOLDER, SINGLE_FILE, STUDIO_RUN)
ARCHS = ("sd1", "sd2", "sdxl", "sdxl-refiner", "studio", "unknown")
ARCH_DESCRIPTIONS = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x",
    "sdxl": "SDXL",
    "sdxl-refiner": "SDXL refiner",
    "studio": "Studio run",
}
LIBRARY_FILE = "models.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")

# Original (CompVis / Stability) single-file layouts, told apart by key prefixes.
_SDXL_KEY = "conditioner.embedders.1."  # SDXL base: CLIP-L is embedder 0, OpenCLIP bigG is 1
_REFINER_KEY = "conditioner.embedders.0.model."  # SDXL refiner: OpenCLIP bigG alone, embedder 0
_SD2_KEY = "cond_stage_model.model."  # SD 2.x: OpenCLIP ViT-H
_SD1_KEY = "cond_stage_model.transformer."  # SD 1.x: CLIP ViT-L (transformers layout)
_UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"  # conv_in: [320, 4 or 9, 3, 3]


@dataclass(frozen=True)
class ModelEntry:
    """One model the Prompt workspace can use. ``path`` is absolute."""

    id: str
    name: str
    path: str
    kind: str  # one of KINDS
    arch: str  # one of ARCHS
    inpainting: bool = False  # a UNet with 9 input channels (latents, mask, masked image)
    size_bytes: int = 0
    precision: str = "unknown"  # "fp16", "bf16", "fp32", "mixed"; "unknown" for an unread pickle
    file_format: str = "folder"  # "safetensors", "pickle" or "folder"
    needs_consent: bool = False  # a pickled file: ask before reading it weights-only
    added: float = 0.0  # time.time() when added; 0 for runs
    resolution: int = 0  # the size a Studio run draws at; 0 for Stable Diffusion models

    def exists(self) -> bool:
        return Path(self.path).exists()

    @property
    def description(self) -> str:
        arch = ARCH_DESCRIPTIONS.get(self.arch, "unknown type")
        return f"{arch}{' inpainting' if self.inpainting else ''}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelEntry:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def entry_id(path: str | os.PathLike[str]) -> str:
    """A stable id from the absolute path: the same model added twice gets the same id."""
    resolved = str(Path(path).expanduser().resolve())
    return hashlib.sha1(resolved.encode("utf-8")).hexdigest()[:12]


# -- classification ---------------------------------------------------------------------------


def classify_checkpoint_keys(shapes: Mapping[str, Iterable[int]]) -> tuple[str, bool]:
    """(arch, inpainting) of an original-layout checkpoint from its tensor names and shapes."""
    keys = shapes.keys()
    if any(k.startswith(_SDXL_KEY) for k in keys):
        arch = "sdxl"
    elif any(k.startswith(_REFINER_KEY) for k in keys):
        arch = "sdxl-refiner"
    elif any(k.startswith(_SD2_KEY) for k in keys):
        arch = "sd2"
    elif any(k.startswith(_SD1_KEY) for k in keys):
        arch = "sd1"
    else:
        arch = "unknown"
    conv_in = tuple(shapes.get(_UNET_IN, ()))
    return arch, len(conv_in) == 4 and conv_in[1] == 9


def precision_of(dtypes: Iterable[str]) -> str:
    """fp16/bf16/fp32 when every floating tensor has that type, else "mixed"."""
    floats = {d for d in dtypes if d in FLOAT_DTYPES}
    names = {"F16": "fp16", "BF16": "bf16", "F32": "fp32", "F64": "fp64"}
    if len(floats) == 1:
        return names[next(iter(floats))]
    return "mixed" if floats else "unknown"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise files.CorruptModelFile(
            f"{path.parent.name}/{path.name} is damaged ({err}); re-download or re-export the model.",
            path,
        ) from err
    return data if isinstance(data, dict) else {}


def weight_files(folder: Path) -> list[Path]:
    """Weight files diffusers would load: in component subfolders, preferring non-variant ones.

    A variant (``diffusion_pytorch_model.fp16.safetensors``) counts only when its folder has no
    plain weights.
    """
    chosen: list[Path] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        weights = [p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in _WEIGHT_SUFFIXES]
        plain = [p for p in weights if "." not in p.stem]
        pool = plain or weights
        safe = [p for p in pool if p.suffix.lower() == ".safetensors"]
        chosen.extend(safe or pool)
    return chosen


def _is_refiner_index(index: Mapping[str, Any]) -> bool:
    """An SDXL ``model_index.json`` of the refiner: one text encoder (``text_encoder_2``, with
    ``text_encoder`` null or absent) or an aesthetic-score UNet."""

    def present(name: str) -> bool:
        value = index.get(name)
        return isinstance(value, list) and bool(value) and value[0] is not None

    one_encoder = present("text_encoder_2") and not present("text_encoder")
    return one_encoder or index.get("requires_aesthetics_score") is True


def inspect_folder(folder: Path) -> ModelEntry:
    files.check_folder_code(folder)
    index = _read_json(folder / "model_index.json")
    class_name = str(index.get("_class_name", ""))
    unet = _read_json(folder / "unet" / "config.json")
    if not unet:
        raise StudioError(
            f"{folder.name} has no unet/config.json; Studio can use Stable Diffusion folders "
            "(UNet, VAE, text encoder) only."
        )
    cross = unet.get("cross_attention_dim")
    if isinstance(cross, list):
        cross = cross[0] if cross else None
    if "XL" in class_name or unet.get("addition_embed_type") == "text_time":
        arch = "sdxl-refiner" if _is_refiner_index(index) else "sdxl"
    elif cross == 1024:
        arch = "sd2"
    elif cross == 768:
        arch = "sd1"
    else:
        arch = "unknown"
    weights = weight_files(folder)
    size = sum(p.stat().st_size for p in weights)
    dtypes: set[str] = set()
    pickled = False
    for p in weights:
        fmt = files.sniff_format(p)
        if fmt is FileFormat.SAFETENSORS:
            dtypes |= files.read_safetensors_header(p).dtypes()
        elif fmt.is_pickle:
            pickled = True
    return ModelEntry(
        id=entry_id(folder),
        name=folder.name,
        path=str(folder),
        kind=FOLDER,
        arch=arch,
        inpainting=unet.get("in_channels") == 9,
        size_bytes=size,
        precision=precision_of(dtypes) if not pickled or dtypes else "unknown",
        file_format="folder",
        needs_consent=pickled,
    )


def inspect_file(path: Path) -> ModelEntry:
    fmt = files.sniff_format(path)
    size = path.stat().st_size
    common = dict(
        id=entry_id(path), name=path.stem, path=str(path), kind=SINGLE_FILE, size_bytes=size
    )
    if fmt is FileFormat.SAFETENSORS:
        header = files.read_safetensors_header(path)
        arch, inpainting = classify_checkpoint_keys({k: t.shape for k, t in header.tensors.items()})
        return ModelEntry(
            **common,
            arch=arch,
            inpainting=inpainting,
            precision=precision_of(header.dtypes()),
            file_format="safetensors",
        )
    if fmt.is_pickle:  # not opened: reading it needs the user's consent
        return ModelEntry(**common, arch="unknown", file_format="pickle", needs_consent=True)
    files.read_state_dict(path)  # raises the precise "not a model file" / "truncated" message
    raise AssertionError("unreachable")  # pragma: no cover


def inspect_run(folder: Path) -> ModelEntry | None:
    """An entry for a Studio run whose family takes prompts, else None."""
    from studio.engine.runs import RunFolder

    run = RunFolder(folder)
    if not run.exists() or not _family_takes_prompts(_run_family(run)):
        return None
    weights = run.model_dir / "model.safetensors"
    dtypes: set[str] = set()
    with contextlib.suppress(files.ModelFileError):
        if weights.is_file():
            dtypes = files.read_safetensors_header(weights).dtypes()
    size = (
        sum(p.stat().st_size for p in run.model_dir.glob("*") if p.is_file())
        if run.model_dir.is_dir()
        else 0
    )
    return ModelEntry(
        id=f"run:{folder.name}",
        name=folder.name,
        path=str(folder),
        kind=STUDIO_RUN,
        arch="studio",
        resolution=run_resolution(run),
        size_bytes=size,
        precision=precision_of(dtypes),
        file_format="safetensors",
    )


def run_resolution(run: Any) -> int:
    """The size a Studio run (a ``RunFolder``) trained at and draws at; 0 if unknown."""
    try:
        return int(run.read_config().get("train", {}).get("resolution") or 0)
    except Exception:  # noqa: BLE001 - a run with an unreadable config still lists
        return 0


def _run_family(run: Any) -> str:
    try:
        return str(run.train_config().family)
    except (StudioError, KeyError, TypeError):
        return ""


def _family_takes_prompts(family: str) -> bool:
    from studio.models.base import Capability
    from studio.models.registry import get_family

    text = getattr(Capability, "TEXT", None)  # added with the prompt-conditioned diffusion family
    if text is None or not family:
        return False
    try:
        return bool(get_family(family).info.capabilities & text)
    except (KeyError, ImportError, AttributeError):
        return False


def inspect_model(path: str | os.PathLike[str]) -> ModelEntry:
    """Classify ``path`` (a diffusers folder, a checkpoint file or a Studio run) without loading it.

    Raises :class:`StudioError` (often a :class:`files.ModelFileError`) with what is wrong.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise StudioError(f"{path} does not exist.")
    if not (path.is_file() or path.is_dir()):  # never opened: a FIFO would block forever
        raise StudioError(
            f"{path.name} is not a regular file (a pipe, socket or device); choose a model file "
            "or folder."
        )
    if path.is_file():
        return inspect_file(path)
    if (path / "model_index.json").is_file():
        return inspect_folder(path)
    from studio.engine.runs import RunFolder

    if RunFolder(path).exists():
        entry = inspect_run(path)
        if entry is None:
            raise StudioError(
                f"{path.name} is a Studio run whose model does not take prompts; train a "
                "text-conditioned diffusion model to use it here."
            )
        return entry
    raise StudioError(
        f"{path.name} is not a model Studio can use: choose a diffusers folder (one with "
        "model_index.json) or a single .safetensors checkpoint file."
    )


# -- the library ------------------------------------------------------------------------------


class ModelLibrary:
    """The user's added models, persisted as JSON; Studio runs that take prompts are listed too.

    A damaged ``models.json`` is kept aside as ``models.json.damaged`` and the library starts
    empty, with :attr:`warning` saying so.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else studio_home() / LIBRARY_FILE
        self.warning = ""
        self._entries: list[ModelEntry] = self._read()

    def _read(self) -> list[ModelEntry]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [ModelEntry.from_dict(d) for d in data["models"]]
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            aside = self.path.with_name(self.path.name + ".damaged")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            self.warning = (
                f"The model list {self.path} was damaged ({type(err).__name__}) and was moved to "
                f"{aside.name}; add your models again."
            )
            return []

    def _write(self) -> None:
        atomic.write_json(self.path, {"version": 1, "models": [e.to_dict() for e in self._entries]})

    def entries(self) -> list[ModelEntry]:
        """Added models in the order they were added, then Studio runs that take prompts."""
        return [*self._entries, *self.run_entries()]

    def run_entries(self) -> list[ModelEntry]:
        from studio.engine.runs import list_runs

        out = []
        for run in list_runs(runs_dir()):
            if _family_takes_prompts(run.family):
                entry = inspect_run(run.path)
                if entry is not None:
                    out.append(entry)
        return out

    def get(self, id: str) -> ModelEntry | None:
        for entry in self.entries() if id.startswith("run:") else self._entries:
            if entry.id == id:
                return entry
        return None

    def find(self, path: str | os.PathLike[str]) -> ModelEntry | None:
        key = entry_id(path)
        return next((e for e in self._entries if e.id == key), None)

    def add(self, path: str | os.PathLike[str], name: str | None = None) -> ModelEntry:
        """Inspect ``path`` and add it; a model already in the library is refused with its name."""
        existing = self.find(path)
        if existing is not None:
            raise StudioError(f"This model is already in the library as {existing.name!r}.")
        entry = inspect_model(path)
        if entry.kind == STUDIO_RUN and Path(entry.path).parent == runs_dir().resolve():
            raise StudioError(f"{entry.name} is a Studio run; it is listed in the library already.")
        updates = {"id": entry_id(entry.path), "name": name or entry.name, "added": time.time()}
        entry = ModelEntry.from_dict({**entry.to_dict(), **updates})
        self._entries.append(entry)
        self._write()
        return entry

    def update(self, id: str, **changes: Any) -> ModelEntry:
        """Change fields of one added model (``arch=...``, ``inpainting=...``) and save; the
        updated entry. Nothing is rescanned. Runs are read from their folders, not stored."""
        allowed = {f.name for f in fields(ModelEntry)} - {"id", "path"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)} of a library entry")
        for i, entry in enumerate(self._entries):
            if entry.id == id:
                self._entries[i] = ModelEntry.from_dict({**entry.to_dict(), **changes})
                self._write()
                return self._entries[i]
        raise StudioError("That model is not in the library (it may have been removed already).")

    def remove(self, id: str) -> ModelEntry:
        """Forget an added model (its files stay where they are). Runs cannot be removed here."""
        for i, entry in enumerate(self._entries):
            if entry.id == id:
                del self._entries[i]
                self._write()
                return entry
        if id.startswith("run:"):
            raise StudioError(
                "Studio runs are listed while their folder exists; delete the run to remove it."
            )
        raise StudioError("That model is not in the library (it may have been removed already).")


def record_architecture(
    path: str | os.PathLike[str], arch: str, inpainting: bool, library: ModelLibrary | None = None
) -> ModelEntry | None:
    """What a load found a file to be (a pickle is listed as "unknown" until it is read): the
    library entry for ``path`` takes that ``arch`` and ``inpainting``, so the model list shows
    it and offers only the modes it supports. The updated entry, or None when the library has
    no entry for ``path``, said so already, or cannot be written now (that never fails a load).
    Call it off the GUI thread: it reads and writes ``models.json``."""
    try:
        library = library if library is not None else ModelLibrary()
        entry = library.find(path)
        if entry is None or (entry.arch, entry.inpainting) == (arch, inpainting):
            return None
        return library.update(entry.id, arch=arch, inpainting=inpainting)
    except OSError:
        return None
