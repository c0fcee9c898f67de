"""The largest batch that fits: try a training step, halve on out-of-memory, repeat.

``find_batch_size`` is generic (two callables, so tests inject an out-of-memory error above a
threshold); ``fit_batch_size`` is what the trainer runs for ``auto_batch`` on a CUDA GPU: each
try builds a fresh copy of the model from the run's settings and takes one step on a synthetic
batch, so the run's own weights never see it. Memory is freed outside the ``except`` block
(the exception's traceback holds the failed step's tensors).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import torch

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.engine.device import autocast_factory, free_memory, is_out_of_memory, step_generator
from studio.engine.runs import TrainConfig
from studio.models.base import Batch, Capability, GenerativeModel, StepContext

T = TypeVar("T")


def find_batch_size(
    build: Callable[[int], T],
    run_step: Callable[[T], Any],
    start: int,
    min: int = 1,  # noqa: A002 - the name the callers use
    on_try: Callable[[int, bool], None] | None = None,
) -> int:
    """The largest of ``start``, ``start // 2``, ... (not below ``min``) for which
    ``run_step(build(size))`` completes without running out of memory. Other errors propagate.
    ``on_try(size, fitted)`` hears about every attempt."""
    size = max(int(start), int(min), 1)
    while True:
        state: Any = None
        failed = False
        try:
            state = build(size)
            run_step(state)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            failed = True
        state = None  # noqa: F841 - dropped before freeing, outside the except block
        free_memory()
        if on_try is not None:
            on_try(size, not failed)
        if not failed:
            return size
        if size <= min:
            raise StudioError(
                f"Even a batch of {size} images does not fit in GPU memory. Use a smaller "
                "resolution or network width, or train on the CPU."
            )
        size = max(int(min), size // 2)


def fit_batch_size(
    config: TrainConfig,
    build: Callable[[TrainConfig], GenerativeModel],
    device: torch.device,
    distributed: bool = False,
) -> Generator[Progress, None, TrainConfig]:
    """``config`` with the batch size ``auto_batch`` found (``batch_size`` is where the search
    starts). Only on a CUDA GPU in a single process; elsewhere ``config`` comes back as is."""
    if not config.auto_batch:
        return config
    if device.type != "cuda" or distributed:
        why = "a data-parallel run" if distributed else "a CUDA GPU"
        yield Progress(
            "load", message=f"Automatic batch size needs {why}; using {config.batch_size}."
        )
        return config
    yield Progress(
        "load", message=f"Finding the largest batch (from {config.batch_size}) that fits..."
    )
    autocast = autocast_factory(device, config.precision)
    shape = (config.model.get("channels", 3), config.resolution, config.resolution)

    def build_try(size: int) -> tuple[GenerativeModel, Batch]:
        model = build(config)
        images = torch.zeros((size, *shape), device=device)
        labels = (
            torch.zeros(size, dtype=torch.long, device=device) if model.config.num_classes else None
        )
        extra = (
            {"captions": ("",) * size}
            if "captions" in {f.name for f in dataclasses.fields(Batch)}
            else {}
        )
        if Capability.PAIRED in model.info.capabilities:
            extra["sources"] = torch.zeros_like(images)
        return model, Batch(images, labels, **extra)

    def step(state: tuple[GenerativeModel, Batch]) -> None:
        model, batch = state
        model.train()
        probe = model.memory_probe_step()  # the heaviest step (a growing GAN's full size)
        ctx = StepContext(probe, step_generator(device, config.seed, probe), autocast)
        model.train_step(batch, ctx)
        torch.cuda.synchronize(device)

    size = find_batch_size(build_try, step, config.batch_size)
    yield Progress("load", message=f"Automatic batch size: {size} images per step.")
    return dataclasses.replace(config, batch_size=size)
