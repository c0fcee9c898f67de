"""Checkpoints: safetensors and JSON only, written whole and atomically, verified, rotated.

A checkpoint is a folder ``state/step_00001234/`` holding the model weights, every optimizer's
state, the RNG states and the trainer's state. It is built in a hidden ``.partial`` folder,
each file fsynced, the manifest (with every file's size and SHA-256) written last, and only
then renamed into place. Older checkpoints are deleted only after the new one verifies, and
never the last complete one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from studio.core import atomic
from studio.core.errors import CheckpointError, NonFiniteLoss
from studio.models.base import GenerativeModel

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
PREFIX = "step_"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


# -- optimizer state <-> flat tensors + JSON ------------------------------------------------


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into tensors (for safetensors) and plain JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    return tensors, meta


def optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# -- finiteness: every tensor a checkpoint would hold -------------------------------------------


def nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the floating-point tensors holding a NaN or an infinity (one host sync per
    device)."""
    groups: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, t in named:
        if t.is_floating_point() or t.is_complex():
            groups.setdefault(t.device, []).append((name, t))
    bad: list[str] = []
    for group in groups.values():
        ok = torch.stack([torch.isfinite(t).all() for _, t in group]).tolist()
        bad += [name for (name, _), good in zip(group, ok) if not good]
    return bad


def state_tensors(model: GenerativeModel) -> Iterable[tuple[str, torch.Tensor]]:
    """Every tensor a checkpoint saves: parameters and buffers (batch-norm statistics, EMA
    copies) and each optimizer's state, named for a message."""
    yield from model.state_dict(keep_vars=False).items()
    names = {id(p): n for n, p in model.named_parameters()}
    for opt_name, opt in model.optimizers.items():
        for param, entry in opt.state.items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    yield (
                        f"{key} of {names.get(id(param), 'a parameter')} (optimizer {opt_name})",
                        value,
                    )


def describe_names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# -- writing ---------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(path))
    atomic.give_ordinary_mode(path)  # safetensors writes 0600
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = state
    return out


def save_checkpoint(
    state_dir: Path, model: GenerativeModel, step: int, trainer_state: dict[str, Any], keep: int = 2
) -> Path:
    """Write checkpoint ``step`` under ``state_dir``; return its folder."""
    bad = nonfinite(state_tensors(model))
    if bad:  # the trainer checks first; this keeps a non-finite checkpoint from ever counting
        raise NonFiniteLoss(
            f"Not saving checkpoint {step}: {describe_names(bad)} hold NaN or infinite values."
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    final = state_dir / checkpoint_name(step)
    if final.exists() and is_complete(final, verify_hashes=True):
        return final  # already saved at this step (a stop right after a periodic save)
    partial = state_dir / f".{final.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        _save_tensors(partial / "model.safetensors", weights)
        opt_meta: dict[str, Any] = {}
        for name, opt in model.optimizers.items():
            tensors, meta = optimizer_to_flat(opt)
            _save_tensors(partial / f"optim_{name}.safetensors", tensors)
            opt_meta[name] = meta
        _save_tensors(partial / "rng.safetensors", _rng_tensors())
        trainer = {
            "format": FORMAT_VERSION,
            "step": step,
            "family": model.info.key,
            "model_config": model.config.to_dict(),
            "base_runs": model.base_records,
            "optimizers": opt_meta,
            "extra": model.extra_state(),
            "trainer": trainer_state,
        }
        atomic.write_json(partial / "trainer.json", trainer)
        manifest = {
            "format": FORMAT_VERSION,
            "step": step,
            "files": {
                p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                for p in sorted(partial.iterdir())
            },
        }
        atomic.write_json(partial / MANIFEST, manifest)  # last: marks the folder complete
        atomic.fsync_dir(partial)
        if final.exists():  # an incomplete leftover of an earlier crash
            shutil.rmtree(final)
        os.replace(partial, final)
        atomic.fsync_dir(state_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not is_complete(final, verify_hashes=True):
        raise CheckpointError(f"The checkpoint just written at {final} does not verify.")
    rotate(state_dir, keep=keep)
    return final


def rotate(state_dir: Path, keep: int = 2) -> None:
    """Delete all but the newest ``keep`` complete checkpoints (never the last complete one)."""
    for stale in state_dir.glob(f".{PREFIX}*.partial"):  # left by a crash mid-save
        shutil.rmtree(stale, ignore_errors=True)
    complete = [p for p in list_checkpoints(state_dir) if is_complete(p)]
    for old in complete[: max(0, len(complete) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)


# -- reading ---------------------------------------------------------------------------------


def list_checkpoints(state_dir: Path) -> list[Path]:
    if not state_dir.is_dir():
        return []
    found = [p for p in state_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: p.name)


def is_complete(folder: Path, verify_hashes: bool = False) -> bool:
    return problem(folder, verify_hashes) is None


def problem(folder: Path, verify_hashes: bool = True) -> str | None:
    """Why ``folder`` is not a whole checkpoint (a short phrase), or None when it is."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        return "incomplete (no manifest: the save did not finish)"
    except (OSError, ValueError, KeyError, TypeError):
        return "corrupt (its manifest cannot be read)"
    try:
        for name, entry in files.items():
            path = folder / name
            if path.stat().st_size != entry["size"]:
                return f"incomplete or corrupt ({name} has the wrong size)"
            if verify_hashes and _sha256(path) != entry["sha256"]:
                return f"corrupt ({name} does not match its checksum)"
    except FileNotFoundError as err:
        return f"incomplete ({Path(str(err.filename)).name} is missing)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable ({err})"
    return None


def latest_checkpoint(state_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    for folder in reversed(list_checkpoints(state_dir)):
        if is_complete(folder):
            return folder
    return None


def read_trainer_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"Cannot read the checkpoint at {folder}: {err}") from err


def load_latest(
    state_dir: Path, model: GenerativeModel, restore_rng: bool = True
) -> tuple[dict[str, Any] | None, list[str]]:
    """Restore the newest checkpoint that verifies and holds only finite values; return its
    trainer.json (None when ``state_dir`` holds no checkpoint) and one line per newer checkpoint
    skipped, saying why. Raise CheckpointError when there are checkpoints and none can be used."""
    skipped: list[str] = []  # "step_00000030 is corrupt (...)"
    for folder in reversed(list_checkpoints(state_dir)):
        why = problem(folder, verify_hashes=True)
        if why is None:
            meta = _restore(folder, model, restore_rng)
            bad = nonfinite(state_tensors(model))
            if not bad:
                return meta, [
                    f"Skipped checkpoint {s}; resuming from {folder.name}." for s in skipped
                ]
            why = f"not finite (NaN or infinite values in {describe_names(bad)})"
        skipped.append(f"{folder.name} is {why}")
    if skipped:
        raise CheckpointError(f"No checkpoint in {state_dir} can be used: {'; '.join(skipped)}.")
    return None, []


def load_checkpoint(
    folder: Path, model: GenerativeModel, restore_rng: bool = True
) -> dict[str, Any]:
    """Restore model, optimizers, family state and RNG from ``folder``; return trainer.json."""
    why = problem(folder, verify_hashes=True)
    if why is not None:
        raise CheckpointError(f"The checkpoint at {folder} is incomplete or corrupt: {why}.")
    return _restore(folder, model, restore_rng)


def _restore(folder: Path, model: GenerativeModel, restore_rng: bool) -> dict[str, Any]:
    meta = read_trainer_state(folder)
    device = model.device
    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors"), device="cpu"))
        for name, opt in model.optimizers.items():
            tensors = load_file(str(folder / f"optim_{name}.safetensors"), device=str(device))
            optimizer_from_flat(opt, tensors, meta["optimizers"][name])
    except (OSError, KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"The checkpoint at {folder} does not fit this model: {err}") from err
    model.load_extra_state(meta.get("extra", {}))
    if restore_rng:
        rng = load_file(str(folder / "rng.safetensors"))
        torch.set_rng_state(rng["torch_cpu"])
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
                if states:
                    torch.cuda.set_rng_state_all(states)
    return meta
