"""Continual learning: a run goes on to another folder without forgetting the one it learned.

The switch (:func:`studio.engine.switch.switch_job`) happens between checkpoints: the run's newest checkpoint is
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

The switch itself is :mod:`studio.engine.switch`. A resume reads what it wrote back
(:func:`load_continual`), so it continues exactly: the replayed images come from a generator
seeded by (run seed, step), like the batches.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from studio.core.continual import check_settings, replay_count
from studio.core.errors import CheckpointError, StudioError
from studio.engine.device import cpu_generator
from studio.engine.runs import RunFolder
from studio.models.base import Batch, GenerativeModel, eval_mode

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


def switch_dir(run: RunFolder, rel: str) -> Path:
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


def load_tensors(path: Path) -> dict[str, Tensor]:
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
    folder = switch_dir(run, str(state.get("switch", "")))
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
        saved = load_tensors(folder / EWC_FILE)
        fisher = {k[7:]: v for k, v in saved.items() if k.startswith("fisher.")}
        anchor = {k[7:]: v for k, v in saved.items() if k.startswith("anchor.")}
        ewc = EWCPenalty(model, fisher, anchor, lam)
        model.set_penalty(ewc)
    folders: dict[int, np.ndarray] = {}
    sequence = datasets_of(raw)
    for number, entry in enumerate(sequence[1:], 1):  # entry k started where folder k ended
        path = switch_dir(run, str(entry.get("switch", ""))) / HELDOUT_FILE
        if path.is_file():
            images = load_tensors(path)["images"]
            folders[number] = images.permute(0, 2, 3, 1).contiguous().numpy()
    return Continual(share, replay, ewc, seed, folders, len(sequence))
