"""Continual learning: a run goes on to another folder without forgetting the one it learned.

The switch (:func:`switch_job`) happens between checkpoints: the run's newest checkpoint is
the model "as it was". From there the run trains on the new folder, protected against
forgetting in two ways, each a setting:

* generative replay (``replay``, a share of every batch): a frozen copy of the model as it
  was at the switch generates that share of each batch, ``round(share * batch)`` images,
  in place of new-folder images, so the model keeps being trained on what it drew before;
* elastic weight consolidation (``ewc``, its lambda): ``lambda / 2 * sum F (w - w*)^2``,
  with ``w*`` the weights at the switch and ``F`` a diagonal Fisher estimate, the mean
  squared gradient of the family's per-example loss
  (:meth:`studio.models.base.GenerativeModel.example_losses`) over images of the folder
  being left, computed once at the switch. A second switch adds the new estimate to the
  old one (online EWC) and moves ``w*`` to the weights of that switch.

What the switch writes, complete before config.json names it::

    <run>/continual/switch_00000400/
        replay/              the model at the switch (safetensors + studio.json), with replay
        ewc.safetensors      fisher.<weight> and anchor.<weight>, with EWC
        heldout.safetensors  up to 64 held-out images of the folder left (uint8), for its
                             live metric
    config.json  "datasets": every folder in turn (path, fingerprint, step it started at),
                 "continual": the switch in force (its folder, replay share, EWC lambda)

A resume reads those back (:func:`load_continual`), so it continues exactly: the replayed
images come from a generator seeded by (run seed, step), like the batches.
"""

from __future__ import annotations

import shutil
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from studio.core.continual import check_settings, replay_count
from studio.core.errors import CheckpointError, StudioError
from studio.core.jobs import CancelToken, Progress
from studio.engine import checkpoint as ckpt
from studio.engine.data import ImageDataset, split_holdout
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.runs import RunFolder
from studio.models.base import Batch, Capability, GenerativeModel, eval_mode
from studio.models.registry import get_family

CONTINUAL_DIR = "continual"
REPLAY_DIR = "replay"
EWC_FILE = "ewc.safetensors"
HELDOUT_FILE = "heldout.safetensors"
FISHER_IMAGES = 128  # images of the folder left that the Fisher estimate averages over
HELDOUT_IMAGES = 64  # held-out images per folder for the live per-folder metrics


def datasets_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every folder the run has trained on, in turn: ``path``, ``fingerprint``, ``step`` (the
    step it started at). A run that never switched has its one folder, from step 0."""
    if config.get("datasets"):
        return [dict(d) for d in config["datasets"]]
    ds = config.get("dataset", {})
    entry = {"path": ds.get("path", config.get("train", {}).get("data", "")), "step": 0}
    entry.update(fingerprint=ds.get("fingerprint", ""), images=ds.get("images", 0))
    return [entry]


# -- the switch -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Switch:
    """A switch made: the step the new folder starts at, the total to train to by default
    (as many steps again as the run's ``steps`` setting) and the new folder's images."""

    step: int
    default_total: int
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
    from studio.engine.train import train_job

    switch = yield from switch_job(
        run_dir, new_data, replay=replay, ewc=ewc, cache_dir=cache_dir,
        device_override=device_override,
    )  # fmt: skip
    total = switch.default_total if steps is None else int(steps)
    if total <= switch.step:
        raise StudioError(
            f"The run is at step {switch.step:,}: the total steps must be above that to train "
            "on the new folder (it has switched; resume it with more steps)."
        )
    return (
        yield from train_job(
            run_dir, token, None, steps=total, dataset=switch.dataset, cache_dir=cache_dir,
            device_override=device_override,
        )
    )  # fmt: skip


def switch_job(
    run_dir: str | Path,
    new_data: str | Path,
    *,
    replay: float = 0.0,
    ewc: float = 0.0,
    cache_dir: Path | None = None,
    device_override: str | None = None,
) -> Generator[Progress, None, Switch]:
    """Make the run at ``run_dir`` train on ``new_data`` from its newest checkpoint on:
    save the replay model, the Fisher estimate and the folder left's held-out images, then
    record the switch in config.json (last, so a failed switch changes nothing the run
    reads)."""
    from studio.engine.train import build_model, prepare_dataset

    run = RunFolder(run_dir)
    raw = run.read_config()
    config = run.train_config()
    check_settings(replay, ewc)
    family = get_family(config.family)
    name = family.info.display_name
    if Capability.PAIRED in family.info.capabilities:
        raise StudioError(f"{name} learns from pairs of folders: it cannot continue on another.")
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
    return Switch(step, step + int(config.steps), new)


def _read_left_folder(
    config: Any, needed: bool, cache_dir: Path | None
) -> Generator[Progress, None, ImageDataset | None]:
    """The images of the folder being left: EWC needs them; without EWC a folder that has
    gone only costs its live metric."""
    from studio.engine.train import prepare_dataset

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
    saved = _load_tensors(_switch_dir(run, previous.get("switch", "")) / EWC_FILE)
    for key, value in saved.items():
        if key.startswith("fisher.") and key[7:] in fisher:
            fisher[key[7:]] = fisher[key[7:]] + value.to(fisher[key[7:]].device)
    return fisher


# -- the Fisher estimate and the penalty ------------------------------------------------------


def fisher_diagonal(
    model: GenerativeModel, images: Tensor, seed: int, limit: int = FISHER_IMAGES
) -> dict[str, Tensor] | None:
    """The mean squared gradient of each weight over up to ``limit`` of ``images`` (uint8
    N x C x H x W), one image at a time, in eval mode: a diagonal Fisher estimate. None
    when the family has no per-example loss."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    gen = cpu_generator(seed + 17)
    count = min(limit, len(images))
    with eval_mode(model):
        for i in range(count):
            x = images[i : i + 1].to(model.device).float().div(127.5).sub(1)
            losses = model.example_losses(Batch(images=x), gen)
            if losses is None:
                return None
            names = [n for n in params]
            grads = torch.autograd.grad(losses.sum(), [params[n] for n in names], allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    total[n] += g.detach().float().pow(2).to(total[n].dtype)
    return {n: t / max(1, count) for n, t in total.items()}


class EWCPenalty:
    """``lam / 2 * sum F (w - w*)^2`` over the weights each optimizer updates."""

    def __init__(
        self,
        model: GenerativeModel,
        fisher: dict[str, Tensor],
        anchor: dict[str, Tensor],
        lam: float,
    ) -> None:
        self.lam = float(lam)
        named = dict(model.named_parameters())
        by_id = {id(p): n for n, p in named.items()}
        self.terms: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {}
        for opt_name, opt in model.optimizers.items():
            for group in opt.param_groups:
                for p in group["params"]:
                    n = by_id.get(id(p))
                    if n in fisher and n in anchor:
                        f, a = fisher[n].to(p.device, p.dtype), anchor[n].to(p.device, p.dtype)
                        self.terms.setdefault(opt_name, []).append((p, f, a))
        self.last: dict[str, Tensor] = {}

    def __call__(self, name: str) -> Tensor | None:
        terms = self.terms.get(name)
        if not terms or self.lam == 0:
            return None
        value = sum((f * (p - a).pow(2)).sum() for p, f, a in terms)
        penalty = 0.5 * self.lam * value
        self.last[name] = penalty.detach()
        return penalty

    def logged(self) -> Tensor | None:
        """The sum of the latest penalties (for the plots), or None before any."""
        if not self.last:
            return None
        return torch.stack([v.float().reshape(()) for v in self.last.values()]).sum()


# -- what the trainer uses -------------------------------------------------------------------


class Continual:
    """A switched run's protection in the training loop, and its folders' held-out images."""

    def __init__(
        self,
        share: float,
        replay: GenerativeModel | None,
        ewc: EWCPenalty | None,
        seed: int,
        folders: dict[int, np.ndarray],
        current: int,
    ) -> None:
        self.share, self.replay, self.ewc, self.seed = share, replay, ewc, seed
        self.folders = folders  # folder number (1 = the first) -> held-out uint8 N x H x W x C
        self.current = current  # the number of the folder trained on now

    def mix(self, batch: Batch, step: int) -> Batch:
        """``batch`` with its last ``replay_count`` images generated by the replay model,
        from a generator seeded by (run seed, step): a resume draws the same ones."""
        if self.replay is None:
            return batch
        n = len(batch.images)
        k = replay_count(n, self.share)
        if k == 0:
            return batch
        gen = cpu_generator(self.seed * 1_000_003 + step * 7919 + 11)
        with torch.no_grad(), eval_mode(self.replay):
            made = self.replay.sample(k, gen).to(batch.images.device, batch.images.dtype)
        images = torch.cat([batch.images[: n - k], made.clamp(-1, 1)])
        captions = None if batch.captions is None else (*batch.captions[: n - k], *("",) * k)
        return replace(batch, images=images, captions=captions)

    def metrics(self) -> dict[str, Tensor]:
        value = self.ewc.logged() if self.ewc is not None else None
        return {} if value is None else {"ewc_penalty": value}

    def close(self, model: GenerativeModel) -> None:
        model.set_penalty(None)


def _switch_dir(run: RunFolder, rel: str) -> Path:
    """A switch folder named in config.json, refused unless it is inside the run's
    ``continual/`` folder (config.json may have been edited)."""
    base = (run.path / CONTINUAL_DIR).resolve()
    path = (run.path / rel).resolve()
    if not rel or base not in path.parents:
        raise CheckpointError(
            f"{run.config_path}: the continual switch folder {rel!r} is not inside "
            f"{run.path / CONTINUAL_DIR}."
        )
    return path


def _load_tensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the run cannot continue exactly.") from None
    except Exception as err:  # safetensors raises its own error types on damage
        raise CheckpointError(f"{path} is damaged: {err}") from err


def load_continual(
    run: RunFolder, model: GenerativeModel, device: torch.device, seed: int
) -> Continual | None:
    """What a switched run trains with (None for a run that never switched): the replay
    model, the EWC penalty (installed in ``model``) and each folder's held-out images."""
    raw = run.read_config()
    state = raw.get("continual")
    if not state:
        return None
    folder = _switch_dir(run, str(state.get("switch", "")))
    share, lam = float(state.get("replay", 0.0)), float(state.get("ewc", 0.0))
    try:
        check_settings(share, lam)
    except StudioError as err:
        raise CheckpointError(f"{run.config_path}: {err}") from None
    replay = None
    if share > 0:
        try:
            replay = type(model).load(folder / REPLAY_DIR, device)
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(
                f"The replay model in {folder / REPLAY_DIR} cannot be read: {err}"
            ) from err
        replay.eval().requires_grad_(False)
    ewc = None
    if lam > 0:
        saved = _load_tensors(folder / EWC_FILE)
        fisher = {k[7:]: v for k, v in saved.items() if k.startswith("fisher.")}
        anchor = {k[7:]: v for k, v in saved.items() if k.startswith("anchor.")}
        ewc = EWCPenalty(model, fisher, anchor, lam)
        model.set_penalty(ewc)
    folders: dict[int, np.ndarray] = {}
    sequence = datasets_of(raw)
    for number, entry in enumerate(sequence[1:], 1):  # entry k started where folder k ended
        path = _switch_dir(run, str(entry.get("switch", ""))) / HELDOUT_FILE
        if path.is_file():
            images = _load_tensors(path)["images"]
            folders[number] = images.permute(0, 2, 3, 1).contiguous().numpy()
    return Continual(share, replay, ewc, seed, folders, len(sequence))
