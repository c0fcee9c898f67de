"""The switch of a continual run to another folder (studio.engine.continual says what it
protects and how): checks, the replay model, the Fisher estimate and the folder left's
held-out images written whole, then config.json; and :func:`continue_job`, the switch
followed by training."""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from studio.core.continual import check_settings
from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress
from studio.engine import checkpoint as ckpt
from studio.engine.continual import (
    CONTINUAL_DIR,
    EWC_FILE,
    HELDOUT_FILE,
    HELDOUT_IMAGES,
    REPLAY_DIR,
    datasets_of,
    fisher_diagonal,
    load_tensors,
    switch_dir,
)
from studio.engine.data import ImageDataset, split_holdout
from studio.engine.device import resolve_device
from studio.engine.runs import RunFolder
from studio.engine.train import build_model, prepare_dataset, train_job
from studio.models.base import Capability, GenerativeModel
from studio.models.registry import get_family


@dataclass(frozen=True)
class Switch:
    """A switch made: the step the new folder starts at, the total to train to and the new
    folder's images."""

    step: int
    total: int
    dataset: ImageDataset


def check_new_folder(config: dict[str, Any], new_data: str | Path) -> Path:
    """The new folder, resolved; refused when missing, not a folder, or one the run has
    trained on already."""
    path = Path(new_data).expanduser()
    if not path.exists():
        raise StudioError(f"The folder {path} does not exist.")
    if not path.is_dir():
        raise StudioError(f"{path} is a file, not a folder of images.")
    path = path.resolve()
    for i, entry in enumerate(datasets_of(config), 1):
        if entry.get("path") and Path(entry["path"]).expanduser().resolve() == path:
            now = i == len(datasets_of(config))
            raise StudioError(
                f"{path} is the folder this run "
                + ("trains on now" if now else f"trained on already (folder {i})")
                + ": choose another folder to continue on."
            )
    return path


def continue_job(
    run_dir: str | Path,
    token: CancelToken,
    new_data: str | Path,
    *,
    replay: float = 0.0,
    ewc: float = 0.0,
    steps: int | None = None,
    cache_dir: Path | None = None,
    device_override: str | None = None,
) -> Generator[Progress, None, Any]:
    """Switch ``run_dir`` to ``new_data`` (:func:`switch_job`), then train it there to
    ``steps`` in total (default: the switch step plus the run's ``steps`` setting)."""
    switch = yield from switch_job(
        run_dir, new_data, replay=replay, ewc=ewc, steps=steps, cache_dir=cache_dir,
        device_override=device_override,
    )  # fmt: skip
    return (
        yield from train_job(
            run_dir, token, None, steps=switch.total, dataset=switch.dataset, cache_dir=cache_dir,
            device_override=device_override,
        )
    )  # fmt: skip


def switch_job(
    run_dir: str | Path,
    new_data: str | Path,
    *,
    replay: float = 0.0,
    ewc: float = 0.0,
    steps: int | None = None,
    cache_dir: Path | None = None,
    device_override: str | None = None,
) -> Generator[Progress, None, Switch]:
    """Make the run at ``run_dir`` train on ``new_data`` from its newest checkpoint on:
    save the replay model, the Fisher estimate and the folder left's held-out images, then
    record the switch in config.json (last, so a failed switch changes nothing the run
    reads). ``steps``: the total to train to, above the switch step (default: the switch
    step plus the run's ``steps`` setting)."""
    run = RunFolder(run_dir)
    raw = run.read_config()
    config = run.train_config()
    check_settings(replay, ewc)
    family = get_family(config.family)
    name = family.info.display_name
    if Capability.PAIRED in family.info.capabilities:
        raise StudioError(f"{name} learns from pairs of folders: it cannot continue on another.")
    if Capability.TEXT in family.info.capabilities:
        raise StudioError(
            f"{name} is conditioned on captions; continuing on another folder is for "
            "unconditional models for now."
        )
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise StudioError(
            "Continue on another folder in one process (it writes the switch once); then "
            "resume the run under the launcher with --resume."
        )
    if replay > 0 and Capability.SAMPLE not in family.info.capabilities:
        raise StudioError(f"{name} cannot sample, so it cannot replay: set the replay share to 0.")
    path = check_new_folder(raw, new_data)
    latest = ckpt.latest_checkpoint(run.state_dir)
    if latest is None:
        raise StudioError(f"{run.path} has no checkpoint yet: train it before continuing it.")
    sequence = datasets_of(raw)

    yield Progress("load", message=f"Reading the new folder {path}")
    new = yield from prepare_dataset(str(path), config.resolution, cache_dir)
    for i, entry in enumerate(sequence, 1):
        if entry.get("fingerprint") == new.fingerprint:
            raise StudioError(
                f"{path} holds the same images as {entry['path']} (folder {i} of this run): "
                "choose a folder with new images."
            )

    device = resolve_device(device_override or config.device)
    classes = len(raw.get("dataset", {}).get("class_names", []))
    model = build_model(config, classes, device, (), raw.get("model"))
    if int(model.config.to_dict().get("num_classes", 0) or 0) > 0:
        raise StudioError(
            f"This {name} is class-conditional; continuing on another folder is for "
            "unconditional models for now (train it with its class setting off)."
        )
    meta, skipped = ckpt.load_latest(run.state_dir, model, restore_rng=False)
    for line in skipped:
        yield Progress("load", message=line)
    assert meta is not None  # a checkpoint exists, and load_latest raises when none loads
    step = int(meta["step"])
    if sequence[-1].get("step", 0) >= step and len(sequence) > 1:
        raise StudioError(
            f"This run switched to {sequence[-1]['path']} at step {step:,} and has not "
            "trained on it yet: resume it first, or start a new run."
        )
    total = step + int(config.steps) if steps is None else int(steps)
    if total <= step:
        raise StudioError(f"The run is at step {step:,}: the steps to train to must be above that.")

    old = yield from _read_left_folder(config, ewc > 0, cache_dir)
    fisher: dict[str, Tensor] = {}
    if ewc > 0:
        assert old is not None
        yield Progress("train", message=f"Estimating the Fisher information on {config.data}")
        found = fisher_diagonal(model, _images(old, np.arange(len(old))), config.seed)
        if found is None:
            raise StudioError(
                f"{name} has no per-example loss, so EWC is not available for it: use replay."
            )
        fisher = _add_previous_fisher(run, raw, found)

    rel = f"{CONTINUAL_DIR}/{ckpt.checkpoint_name(step).replace(ckpt.PREFIX, 'switch_')}"
    _write_switch(run, rel, model, replay, fisher, old, config)
    entry = {"path": str(path), "fingerprint": new.fingerprint, "step": step, "images": len(new)}
    entry.update(replay=float(replay), ewc=float(ewc), switch=rel)
    raw["datasets"] = [*sequence, entry]
    raw["continual"] = {"step": step, "replay": float(replay), "ewc": float(ewc), "switch": rel}
    raw["train"] = {**raw.get("train", {}), "data": str(path)}
    train_idx, held_idx = split_holdout(len(new), config.holdout_fraction, config.seed)
    raw["dataset"] = {
        "path": str(path),
        "fingerprint": new.fingerprint,
        "images": len(new),
        "train_images": int(len(train_idx)),
        "held_out_images": int(len(held_idx)),
        "class_names": list(new.class_names),
        "skipped": len(new.skipped),
    }
    run.write_config(raw)
    yield Progress(
        "load",
        message=f"Continuing on {path} from step {step:,} (replay {replay:g}, EWC {ewc:g})",
    )
    return Switch(step, total, new)


def _read_left_folder(
    config: Any, needed: bool, cache_dir: Path | None
) -> Generator[Progress, None, ImageDataset | None]:
    """The images of the folder being left: EWC needs them; without EWC a folder that has
    gone only costs its live metric."""
    try:
        return (yield from prepare_dataset(config.data, config.resolution, cache_dir))
    except StudioError as err:
        if needed:
            raise StudioError(
                f"EWC estimates what mattered on the folder this run trained on, "
                f"{config.data}, and it cannot be read: {err}"
            ) from None
        yield Progress("load", message=f"No held-out metric for {config.data}: {err}")
        return None


def _images(dataset: ImageDataset, idx: np.ndarray) -> Tensor:
    """uint8 N x C x H x W of ``dataset``'s images at ``idx``."""
    return torch.from_numpy(np.ascontiguousarray(dataset.images[idx])).permute(0, 3, 1, 2)


def _write_switch(
    run: RunFolder,
    rel: str,
    model: GenerativeModel,
    replay: float,
    fisher: dict[str, Tensor],
    old: ImageDataset | None,
    config: Any,
) -> None:
    """The switch's folder, built in a hidden sibling and renamed into place when whole."""
    from safetensors.torch import save_file

    final = run.path / rel
    partial = final.with_name(f".partial-{final.name}")
    for stale in (partial, final):  # ours: left by a switch that failed before config.json
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
    partial.mkdir(parents=True)
    if replay > 0:
        model.save(partial / REPLAY_DIR)
    if fisher:
        anchors = {n: p.detach() for n, p in model.named_parameters() if n in fisher}
        tensors = {f"fisher.{n}": f.contiguous().cpu() for n, f in fisher.items()}
        tensors.update({f"anchor.{n}": a.contiguous().cpu().clone() for n, a in anchors.items()})
        save_file(tensors, str(partial / EWC_FILE))
    if old is not None:
        _, held = split_holdout(len(old), config.holdout_fraction, config.seed)
        if len(held):
            images = _images(old, held[:HELDOUT_IMAGES]).contiguous()
            save_file({"images": images}, str(partial / HELDOUT_FILE))
    partial.rename(final)


def _add_previous_fisher(
    run: RunFolder, raw: dict[str, Any], fisher: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Online EWC: the estimate of an earlier switch added to this one."""
    previous = raw.get("continual") or {}
    if not previous.get("ewc"):
        return fisher
    saved = load_tensors(switch_dir(run, previous.get("switch", "")) / EWC_FILE)
    for key, value in saved.items():
        if key.startswith("fisher.") and key[7:] in fisher:
            fisher[key[7:]] = fisher[key[7:]] + value.to(fisher[key[7:]].device)
    return fisher
