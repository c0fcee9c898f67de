"""Runs that build on other runs: the model side of a base run setting.

A family declares a :func:`studio.core.schema.run_setting` (the VQ-VAE under a prior over its
codes) and calls :func:`attach_base_runs` in its constructor. The base run's model is loaded
frozen through the loader the engine registers (:func:`set_run_loader`; the models layer
never imports the engine), kept outside the family's modules (so it is neither trained,
saved with the family's weights nor checked as its own), and recorded in the new run as its
resolved path, family and a SHA-256 of its weights. A run read back later compares that
record with the base run it finds (:func:`verify_base_records`): a base run that is gone or
whose weights changed is a :class:`~studio.core.errors.BaseRunError` naming it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from studio.core.errors import BaseRunError
from studio.core.schema import RunRequirement, run_settings

if TYPE_CHECKING:
    from torch import nn

GenerativeModel = Any  # studio.models.base.GenerativeModel (which imports this module)
# (run folder, requirement, setting label) -> the run's model, frozen, on the CPU
RunLoader = Callable[[Path, RunRequirement, str], GenerativeModel]
_loader: list[RunLoader] = []


def set_run_loader(loader: RunLoader) -> None:
    """The engine's way to open a run (``studio.engine.run_model`` registers it on import)."""
    _loader[:] = [loader]


def weights_sha256(module: nn.Module) -> str:
    """A hash of a model's weights: every state-dict entry's name, dtype, shape and bytes, in
    name order. Independent of the file they came from."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def attach_base_runs(model: GenerativeModel) -> dict[str, GenerativeModel]:
    """Load every run setting of ``model.config`` (frozen, eval mode), keep them on
    ``model`` (``model.base(name)``) and record them (``model.base_records``)."""
    bases: dict[str, GenerativeModel] = {}
    for name, requires in run_settings(type(model.config)).items():
        label = _label(model, name)
        value = str(getattr(model.config, name) or "").strip()
        if not value:
            raise BaseRunError(
                f"{model.info.display_name} builds on {requires.what}: choose one for "
                f"'{label}' (studio train --set {name}=PATH)."
            )
        path = Path(value).expanduser()
        if not _loader:
            raise BaseRunError(
                f"Cannot open the base run {path}: no run loader (import studio.engine first)."
            )
        base = _loader[0](path, requires, label)
        if not requires.accepts(base.info.key, base.info.capabilities):
            raise BaseRunError(
                f"The base run {path} is a {base.info.display_name} run; '{label}' needs "
                f"{requires.what}."
            )
        base.eval()
        base.requires_grad_(False)
        bases[name] = base
        setattr(model.config, name, str(path.resolve()))  # saved absolute: any working folder
        model.base_records[name] = {
            "path": str(path.resolve()),
            "family": base.info.key,
            "sha256": weights_sha256(base),
        }
    model.attach_bases(bases)
    return bases


def verify_base_records(
    model: GenerativeModel, expected: Mapping[str, Any] | None, where: str
) -> None:
    """Refuse a model whose base runs are not those ``expected`` recorded (``where`` names the
    record: a run's config.json, a model's studio.json). A record without base runs (a family
    without run settings) passes."""
    for name, record in (expected or {}).items():
        found = model.base_records.get(name)
        if not isinstance(record, Mapping) or found is None:
            raise BaseRunError(f"{where} records a base run '{name}' that this model lacks.")
        if found["sha256"] != record.get("sha256"):
            raise BaseRunError(
                f"The base run {found['path']} changed since this run was made from it "
                f"({where} records weights {str(record.get('sha256'))[:12]}…, it now holds "
                f"{found['sha256'][:12]}…; trained further or replaced?). This run learned "
                "the old weights: put the base run back as it was, or train a new run on it."
            )


def _label(model: GenerativeModel, name: str) -> str:
    import dataclasses

    for f in dataclasses.fields(model.config):
        if f.name == name:
            return str(f.metadata.get("label") or name)
    return name
