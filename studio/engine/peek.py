"""Peek jobs: sample, decode and inpaint with a run's *current* weights while it trains.

When the run trains on this thread (:func:`studio.engine.live.get`), a peek borrows the training
model between two steps; otherwise it loads the run's saved model, like any other job. A
borrowed model is given back exactly as it was, so training continues bit-identically (on the
CPU; see ``tests/test_peek.py``):

- every module's ``training`` flag and every parameter's ``requires_grad`` are restored;
- no gradients are computed for the weights (``no_grad``; latent inpainting differentiates with
  respect to its latent only, through ``torch.autograd.grad``);
- randomness comes from the peek's own seeded CPU generator, and the global RNG state (CPU and,
  on CUDA, the model's device) is saved and restored around the peek (``fork_rng``), so any
  stray draw inside a model cannot shift the training noise.

Diffusion runs sample from their EMA UNet (``model.sample`` does that); the other families
have no EMA and sample from their trained weights.

The borrow spans the job's yields, which is safe only because the engine thread runs an
interactive job to completion before the training job takes its next step.

Beyond single decodes, :func:`latent_peek` runs any of the Explore workspace's latent-space
tasks (directions, encoding, projection, strips, samples) on a :class:`LatentSpace` built over
the borrowed model, and :func:`compare_panel_peek` samples and scores one panel of a comparison
(:mod:`studio.engine.compare`) with it. Each says whether it used the live weights, and of which
step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.core.errors import StudioError
from studio.core.imaging import make_grid
from studio.core.jobs import Progress
from studio.engine import live
from studio.engine.device import resolve_device
from studio.models.base import Capability, GenerativeModel, images_to_uint8

MAX_PEEK_SAMPLES = 64


@dataclass(frozen=True)
class PeekResult:
    """``images`` N x H x W x 3 uint8 and their ``grid``; ``step`` is the training step the
    weights come from when ``live``, else None (the run's saved model)."""

    images: np.ndarray
    grid: np.ndarray
    live: bool
    step: int | None
    seed: int
    seconds: float


@contextlib.contextmanager
def borrowed(model: GenerativeModel) -> Iterator[GenerativeModel]:
    """Use a (possibly training) model in eval mode, without gradients, and give it back
    untouched: modes, ``requires_grad`` flags and the global RNG state are restored."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    device = model.device
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for param, flag in flags:
            param.requires_grad_(flag)


def _model_for(
    run_dir: str | Path, device: str
) -> Generator[Progress, None, tuple[GenerativeModel, live.LiveRun | None]]:
    entry = live.get(run_dir)
    if entry is not None:
        return entry.model, entry
    from studio.engine.sample import load_run_model

    yield Progress("load", message=f"Loading {Path(run_dir).name}")
    return load_run_model(run_dir, resolve_device(device)), None


def sample_peek(
    run_dir: str | Path, n: int = 16, seed: int = 0, device: str = "auto", **conditions: Any
) -> Generator[Progress, None, PeekResult]:
    """``n`` samples from the run's current weights (live) or its saved model."""
    from studio.engine.sample import sample_job

    if not 1 <= int(n) <= MAX_PEEK_SAMPLES:
        raise StudioError(f"Ask for 1 to {MAX_PEEK_SAMPLES} samples.")
    start = time.perf_counter()
    model, entry = yield from _model_for(run_dir, device)
    if Capability.PAIRED in model.info.capabilities and "image" not in conditions:
        images, grid = yield from _translation_peek(run_dir, model, entry, int(n), int(seed))
    else:
        with borrowed(model):
            images = yield from sample_job(run_dir, int(n), int(seed), model=model, **conditions)
        grid = make_grid(images)
    step = entry.step if entry is not None else None
    return PeekResult(images, grid, entry is not None, step, int(seed), time.perf_counter() - start)


def _translation_peek(
    run_dir: str | Path, model: GenerativeModel, entry: live.LiveRun | None, n: int, seed: int
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """A translating family's peek: its run's first ``n`` fixed held-out inputs and their
    translations, in turn (input, output, ...), and a grid of input | output rows."""
    from studio.engine.sample import sample_job

    inputs = entry.inputs if entry is not None else None
    if inputs is None:
        raise StudioError(
            f"{model.info.display_name} translates images: Peek shows translations of the "
            "run's held-out images while it trains. Use studio translate --run RUN --image IMG "
            "on a finished run."
        )
    take = inputs[:n]
    with borrowed(model):
        out = yield from sample_job(run_dir, len(take), seed, model=model, image=take)
    from studio.engine.monitor import upsampled

    shown = upsampled(torch.as_tensor(take).float().cpu(), out.shape[1:3])  # a smaller input
    images = np.stack([images_to_uint8(shown).numpy(), out], 1).reshape(-1, *out.shape[1:])
    return images, make_grid(images, nrow=2)


def decode_peek(
    run_dir: str | Path,
    z: np.ndarray,
    label: int | None = None,
    device: str = "auto",
    options: dict[str, Any] | None = None,
    detail_seed: int | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Decode latents (``dim`` or ``N x dim``) with the run's current weights: the Explore
    workspace's decodes while its run trains. Returns uint8 image(s), as ``LatentSpace.decode``
    (``detail_seed`` as there). ``options``: the latent space's own settings (a diffusion run's
    DDIM ``steps``/``refine``)."""
    from studio.engine.latent import open_latent_space, open_space

    entry = live.get(run_dir)
    if entry is None:  # not training here (any more): the run's saved model
        yield Progress("load", message=f"Loading {Path(run_dir).name}")
        space = open_latent_space(run_dir, resolve_device(device), label=label)
        for name, value in (options or {}).items():
            setattr(space, name, value)  # a diffusion space's DDIM steps / refinements
        return space.decode(z, detail_seed)
    yield Progress("decode")
    with borrowed(entry.model) as model:
        # LatentSpace switches the model to eval and freezes its weights; borrowed() undoes both.
        return open_space(model, label=label, **(options or {})).decode(z, detail_seed)


def inpaint_peek(
    run_dir: str | Path, request: Any, device: str = "auto"
) -> Generator[Progress, None, list[np.ndarray]]:
    """Inpaint ``request`` (an :class:`~studio.engine.inpaint.InpaintRequest`) with the run's
    current weights, or its saved model when it is not training here."""
    from studio.engine.inpaint import inpaint_job, inpaint_run_job

    entry = live.get(run_dir)
    if entry is None:
        return (yield from inpaint_run_job(run_dir, request, device))
    with borrowed(entry.model) as model:
        return (yield from inpaint_job(model, request))


def saved_step(run_dir: str | Path) -> int | None:
    """The training step of the run's newest complete checkpoint (what a load from its files
    gives), or None when it has none."""
    from studio.core.errors import CheckpointError
    from studio.engine.checkpoint import latest_checkpoint, read_trainer_state
    from studio.engine.runs import RunFolder

    latest = latest_checkpoint(RunFolder(run_dir).state_dir)
    if latest is None:
        return None
    try:
        return int(read_trainer_state(latest)["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Weights:
    """Which weights a result was made with: the training model's at ``step`` (``live``), or
    the run's saved model (``step``: its newest checkpoint's, None when unknown)."""

    live: bool
    step: int | None


@dataclass(frozen=True)
class LatentPeekResult:
    """What a latent-space task returned (``value``) and the weights it used."""

    value: Any
    weights: Weights


LatentTask = Callable[[Any], Generator[Progress, None, Any]]  # LatentSpace -> job


def latent_peek(
    run_dir: str | Path,
    task: LatentTask,
    label: int | None = None,
    options: dict[str, Any] | None = None,
    device: str = "auto",
) -> Generator[Progress, None, LatentPeekResult]:
    """Run ``task(space)`` on a latent space over the run's current weights (live) or, when it
    is not training here, over its saved model. ``label``: the class (conditional models);
    ``options``: the space's own settings (a diffusion run's DDIM ``steps``/``refine``).

    The space is built for this job alone and dropped after it: the task must not keep it."""
    from studio.engine.latent import open_latent_space, open_space

    entry = live.get(run_dir)
    if entry is None:
        yield Progress("load", message=f"Loading {Path(run_dir).name}")
        space = open_latent_space(run_dir, resolve_device(device), label=label)
        for name, value in (options or {}).items():
            setattr(space, name, value)
        value = yield from task(space)
        return LatentPeekResult(value, Weights(False, saved_step(run_dir)))
    with borrowed(entry.model) as model:
        # LatentSpace switches the model to eval and freezes its weights; borrowed() undoes both.
        space = open_space(model, label=label, **(options or {}))
        space.run_dir = Path(run_dir)
        value = yield from task(space)
    return LatentPeekResult(value, Weights(True, entry.step))


@dataclass(frozen=True)
class PanelPeek:
    """One compared run's :class:`~studio.engine.compare.PanelResult` and the weights used."""

    panel: Any
    weights: Weights


def compare_panel_peek(prep: Any, index: int) -> Generator[Progress, None, PanelPeek]:
    """Sample and score panel ``index`` of a comparison prepared by
    :func:`studio.engine.compare.prepare_compare`, with the run's current weights when it
    trains here, else its saved model. Returns a :class:`PanelPeek`."""
    from studio.engine.compare import run_panel

    path = prep.runs[index]
    entry = live.get(path)
    if entry is None:
        panel = yield from run_panel(prep, index)
        return PanelPeek(panel, Weights(False, panel.step))
    with borrowed(entry.model) as model:
        panel = yield from run_panel(prep, index, model=model, step=entry.step)
    return PanelPeek(panel, Weights(True, entry.step))
