"""Learning-rate schedule, gradient clipping and accumulation for every family.

Families call ``GenerativeModel.optimizer_step`` instead of ``backward(); step()``; this module
hands that helper what the run's settings ask for through the ``StepContext``:

* ``lr_scale``: warm-up then constant or cosine decay, a pure function of the step number and
  the run's target step count, applied to each param group's configured rate. Nothing about
  it is saved, so a resumed run continues the curve exactly.
* ``max_grad_norm``: clipping (0 keeps the family's own: DDPM 1, flows 50, others none).
* ``grad_scalers``: with fp16 autocast, the loss is scaled before backward and the
  gradients unscaled before clipping; steps that overflowed are skipped (bf16 needs none).
* ``accumulate``: the trainer splits each step's batch into ``accumulate`` equal micro-batches
  and calls ``train_step`` on each; gradients add up (each loss divided by ``accumulate``) and
  the optimizers step once, after the last. The batch a step sees, its order and the step
  count are unchanged, so resume stays exact; memory scales with the micro-batch. Only
  families that step each optimizer once per ``train_step`` allow it (``supports_accumulation``:
  VAEs, flows, DDPM; not GANs, whose networks update in turn).

:class:`StepRunner` is the per-step piece the training loop calls.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from studio.engine.runs import TrainConfig
from studio.engine.speed import Speed
from studio.models.base import Batch, GenerativeModel, StepContext, linear_warmup


def lr_multiplier(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "constant",
    min_fraction: float = 0.0,
) -> float:
    """The factor on every base learning rate at ``step`` (0-based): a linear warm-up over
    ``warmup_steps``, then 1 (constant) or a half cosine from 1 down to ``min_fraction`` at
    ``total_steps`` (and ``min_fraction`` after it)."""
    warm = linear_warmup(step, warmup_steps)
    if schedule == "constant":
        return warm
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    cosine = min_fraction + (1.0 - min_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * cosine


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """``batch`` cut into ``parts`` consecutive equal micro-batches (every per-example field:
    images, labels, captions)."""
    n = len(batch.images)
    if parts <= 1:
        return [batch]
    if n % parts:
        raise ValueError(f"a batch of {n} does not split into {parts} equal micro-batches")
    size = n // parts
    out = []
    for i in range(parts):
        lo, hi = i * size, (i + 1) * size
        fields = {}
        for f in dataclasses.fields(batch):
            value = getattr(batch, f.name)
            if isinstance(value, (Tensor, tuple, list)) and len(value) == n:
                fields[f.name] = value[lo:hi]
        out.append(dataclasses.replace(batch, **fields))
    return out


def micro_batches(batch_size: int, requested: int) -> int:
    """The largest count <= ``requested`` that divides ``batch_size`` (equal micro-batches)."""
    k = max(1, min(requested, batch_size))
    while batch_size % k:
        k -= 1
    return k


class StepRunner:
    """One training step as the run's settings ask: micro-batches, learning-rate scale,
    clipping, speed options (channels_last inputs, the compile fallback), and the ``lr`` and
    ``grad_norm`` values added to the step's logged losses."""

    def __init__(
        self,
        model: GenerativeModel,
        config: TrainConfig,
        autocast: Callable[[], Any],
        batch_size: int,
        speed: Speed | None = None,
        grad_scaling: bool = False,
    ) -> None:
        self.model, self.config, self.autocast = model, config, autocast
        self.speed = speed or Speed(model.device)
        # fp16 autocast: a loss scaler per optimizer, so networks that update in turn (GANs)
        # keep their own scale; saved with checkpoints (scaler_state), so a resume continues it.
        self.grad_scalers: dict[str, Any] = (
            {name: torch.amp.GradScaler(model.device.type) for name in model.optimizers}
            if grad_scaling
            else {}
        )
        self.messages: list[str] = []
        self.warmup = config.warmup_steps or model.default_warmup_steps()
        self.accumulate = 1
        if config.accumulate > 1:
            if not model.supports_accumulation:
                self.messages.append(
                    f"{model.info.display_name} updates its networks in turn, so gradient "
                    f"accumulation is not available; each step trains on the whole batch of {batch_size}."
                )
            else:
                self.accumulate = micro_batches(batch_size, config.accumulate)
                if self.accumulate != config.accumulate:
                    self.messages.append(
                        f"Accumulating over {self.accumulate} micro-batches, not {config.accumulate}: "
                        f"the batch of {batch_size} must split into equal parts."
                    )
        if not model._base_lrs:  # build_model records them before a checkpoint loads
            model.remember_base_lrs()

    def scaler_state(self) -> dict[str, dict[str, float]]:
        """The loss scalers' state, JSON-able, for the checkpoint (empty without fp16)."""
        return {name: dict(scaler.state_dict()) for name, scaler in self.grad_scalers.items()}

    def load_scaler_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`scaler_state` (names this run has no scaler for are ignored: a run
        resumed in another precision starts its scalers afresh)."""
        for name, saved in state.items():
            if name in self.grad_scalers and saved:
                self.grad_scalers[name].load_state_dict(dict(saved))

    def lr_scale(self, step: int) -> float:
        c = self.config
        return lr_multiplier(step, c.steps, self.warmup, c.lr_schedule, c.min_lr_fraction)

    def take_messages(self) -> list[str]:
        out = self.messages + self.speed.take_messages()
        self.messages = []
        return out

    def run(self, batch: Batch, step: int, generator: torch.Generator) -> list[dict[str, Tensor]]:
        """Train on ``batch`` for ``step``; the losses of each micro-batch, in order."""
        batch = dataclasses.replace(batch, images=self.speed.prepare_inputs(batch.images))
        return self.speed.guard(self.model, lambda: self._run(batch, step, generator), generator)

    def _run(self, batch: Batch, step: int, generator: torch.Generator) -> list[dict[str, Tensor]]:
        scale = self.lr_scale(step)
        outs: list[dict[str, Tensor]] = []
        ctx = StepContext(step, generator, self.autocast)
        for micro, part in enumerate(split_batch(batch, self.accumulate)):
            ctx = StepContext(
                step=step,
                generator=generator,
                autocast=self.autocast,
                lr_scale=scale,
                total_steps=self.config.steps,
                max_grad_norm=self.config.grad_clip,
                accumulate=self.accumulate,
                micro=micro,
                grad_scalers=self.grad_scalers,
                shards=self.speed.shards,
            )
            self.speed.before_step()
            outs.append(dict(self.model.train_step(part, ctx)))
        self._add_metrics(outs[-1], ctx)
        return outs

    def _add_metrics(self, losses: dict[str, Tensor], ctx: StepContext) -> None:
        opts = self.model.optimizers
        if not losses:
            return
        device = next(iter(losses.values())).device
        single = len(opts) == 1
        for name, opt in opts.items():
            lr = opt.param_groups[0]["lr"]
            lr = float(lr) if not isinstance(lr, Tensor) else lr.detach()
            # torch.full launches a fill with the value as an argument: no host-device copy.
            value = lr if isinstance(lr, Tensor) else torch.full((), lr, device=device)
            losses.setdefault("lr" if single else f"lr_{name}", value)
        for name, norm in ctx.grad_norms.items():
            losses.setdefault("grad_norm" if single else f"grad_norm_{name}", norm)
