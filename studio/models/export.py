"""What ``studio export`` asks of a family: its files for use outside the studio.

A family declares the formats it writes in ``GenerativeModel.export_formats`` (known before
any weights load) and writes them in ``GenerativeModel.export_files(folder, format, context)``,
which returns :class:`ExportNotes`: what the folder holds, the lines of Python that use it, and
what does not carry over. The engine (``studio.engine.export``) checks the run and the target,
calls the hook into a temp folder, adds the model card and moves the folder into place; it
never asks which family it exports.

Every family exports ``safetensors`` by default (:func:`export_state_dict`: its state dict and
its settings). The diffusion families add ``diffusers`` (``studio/models/diffusion/export.py``).
A family whose ``save()`` already writes a diffusers folder can export that folder as it is
with :func:`export_saved_layout`.

This module imports no studio model code (``base.py`` imports it), only core helpers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from studio.core import atomic
from studio.core.schema import EXPORT_FORMATS as EXPORT_FORMATS  # declared without torch

#: The single weights file of the ``safetensors`` format, and its settings.
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ExportContext:
    """What the run knows that its model does not: the dataset's class names, in label order."""

    class_names: Sequence[str] = ()


@dataclass(frozen=True)
class ExportNotes:
    """What a family's export wrote, for the model card: ``layout`` (a sentence or two),
    ``usage`` (Python that loads and uses it, without the studio), ``not_included`` (what does
    not carry over, one line each) and ``details`` (more lines for the card)."""

    layout: str
    usage: str = ""
    not_included: tuple[str, ...] = ()
    details: tuple[str, ...] = field(default_factory=tuple)


def cpu_tensors(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (safetensors refuses views that share memory), keys prefixed."""
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    with atomic.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    atomic.give_ordinary_mode(path)


def export_state_dict(model: Any, folder: Path, context: ExportContext) -> ExportNotes:
    """Any family's ``safetensors`` export: ``model.safetensors`` (the whole state dict, every
    network the family keeps, EMA copies included, under the studio's own names) and
    ``config.json`` (the family and its settings, as ``model/studio.json``)."""
    folder = Path(folder)
    save_tensors(
        folder / WEIGHTS_FILE,
        cpu_tensors(model.state_dict()),
        {"family": model.info.key, "format": "studio-state-dict"},
    )
    described = dict(model.describe())
    if context.class_names:
        described["class_names"] = list(context.class_names)
    atomic.write_json(folder / CONFIG_FILE, described)
    not_included = [
        f"The network's code: {model.info.display_name} is Studio's own model "
        f"({type(model).__module__}); the tensor names follow its modules."
    ]
    for name, record in (getattr(model, "base_records", None) or {}).items():
        not_included.append(
            f"The run it builds on ('{name}': {record.get('path', '?')}, "
            f"{record.get('family', '?')}), frozen and not part of these weights; export it too."
        )
    usage = (
        "from safetensors.torch import load_file\n"
        "import json\n\n"
        f'weights = load_file("{WEIGHTS_FILE}")  # name -> tensor\n'
        f'settings = json.load(open("{CONFIG_FILE}"))["config"]'
    )
    return ExportNotes(
        layout=f"`{WEIGHTS_FILE}`: every tensor of the model under Studio's names; "
        f"`{CONFIG_FILE}`: the family and its settings.",
        usage=usage,
        not_included=tuple(not_included),
    )


def export_saved_layout(model: Any, folder: Path, skip: Sequence[str] = ()) -> list[str]:
    """Copy what ``model.save()`` writes (a family whose model folder is already a diffusers
    layout) into ``folder``, leaving out ``studio.json`` and the names in ``skip`` (the trained,
    non-EMA weights, say). Returns the names copied."""
    folder = Path(folder)
    skipped = {"studio.json", *skip}
    copied = []
    with tempfile.TemporaryDirectory(prefix=".saved.", dir=folder) as tmp:
        model.save(Path(tmp))
        for entry in sorted(Path(tmp).iterdir()):
            if entry.name in skipped:
                continue
            entry.rename(folder / entry.name)
            copied.append(entry.name)
    return copied
