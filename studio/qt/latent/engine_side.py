"""What Explore's jobs use on the engine thread: the opened latent space and the job bodies.

The window has one engine thread (:mod:`studio.qt.engine_thread`); Explore runs every job
there, through :class:`~studio.qt.job_calls.JobCalls` (:mod:`studio.qt.latent.explore_jobs`).
The :class:`~studio.engine.latent.LatentSpace` a run opens into (a model loaded for Explore
alone) lives in a :class:`SpaceHolder` that only jobs touch: loading it is a job, every decode
and task reads it inside its job, and the GUI thread never calls it.

Task factories are ``f(holder, token) -> job generator``. Those marked :func:`uses_model` run
the model; while the explored run trains in this window they run instead on a latent space over
its *current* weights (:func:`live_task_job`, :func:`studio.engine.peek.latent_peek`), between
two training steps: one body serves both paths, since it reads ``holder.space`` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studio.core.jobs import CancelToken, Progress


class SpaceHolder:
    """The explored run's latent space (None before a load): used by jobs only, on the engine
    thread."""

    def __init__(self) -> None:
        self.space: Any = None  # studio.engine.latent.LatentSpace, typed loosely: lazy torch
        self.decode_count = 0  # slider decodes run on it (tests and the benchmark read it)


TaskFactory = Callable[[SpaceHolder, CancelToken], Generator[Progress, None, Any]]
Job = Callable[[CancelToken], Generator[Progress, None, Any]]


@dataclass(frozen=True)
class DecodeResult:
    """A decoded latent: the request it answers, the image, and the decode time in ms."""

    request: int
    image: Any  # QImage
    array: np.ndarray
    decode_ms: float
    live: bool = False  # decoded with a training run's current weights
    step: int | None = None  # their training step, when live


@dataclass(frozen=True)
class LiveArgs:
    """What a job on a training run's current weights needs besides the latent."""

    run: Path
    label: int | None
    options: dict[str, Any] | None  # a diffusion run's DDIM steps / refinements
    device: str


def uses_model(factory: TaskFactory) -> TaskFactory:
    """Mark a task factory as one that runs the model (so it follows a training run's live
    weights); returns it."""
    factory.uses_model = True  # type: ignore[attr-defined]
    return factory


def needs_model(factory: Any) -> bool:
    return bool(getattr(factory, "uses_model", False))


def holder_job(holder: SpaceHolder, factory: TaskFactory) -> Job:
    """The engine job of a task on the holder's space."""

    def job(token: CancelToken) -> Generator[Progress, None, Any]:
        return (yield from factory(holder, token))

    return job


def drop_space(holder: SpaceHolder) -> Job:
    """Free the model on the thread that used it."""

    def job(token: CancelToken) -> Generator[Progress, None, None]:
        holder.space = None
        return
        yield  # a generator that reports nothing

    return job


def decode_job(
    holder: SpaceHolder, request: int, z: np.ndarray, detail_seed: int | None = None
) -> Job:
    """A slider decode on the holder's space; None before a run is open. It reports nothing
    (no progress crosses threads): the result is all the GUI waits for. ``detail_seed``: the
    levels below a hierarchical latent drawn from it (``LatentSpace.decode``)."""

    def job(token: CancelToken) -> Generator[Progress, None, DecodeResult | None]:
        from studio.qt.imaging import numpy_to_qimage

        space = holder.space
        if space is None:
            return None
        start = time.perf_counter()
        array = space.decode(z, detail_seed)
        ms = (time.perf_counter() - start) * 1000
        holder.decode_count += 1
        return DecodeResult(request, numpy_to_qimage(array), array, ms)
        yield  # a generator

    return job


def live_decode_job(
    request: int, z: np.ndarray, live: LiveArgs, detail_seed: int | None = None
) -> Job:
    """A slider decode with a training run's current weights
    (:func:`studio.engine.peek.decode_peek`); the QImage is built here too."""

    def job(token: CancelToken) -> Generator[Progress, None, DecodeResult]:
        from studio.engine import live as registry
        from studio.engine.peek import decode_peek
        from studio.qt.imaging import numpy_to_qimage

        start = time.perf_counter()
        array = yield from decode_peek(
            live.run, z, live.label, live.device, live.options, detail_seed
        )
        ms = (time.perf_counter() - start) * 1000
        entry = registry.get(live.run)  # None: it stopped training; the saved model decoded
        step = entry.step if entry is not None else None
        return DecodeResult(request, numpy_to_qimage(array), array, ms, entry is not None, step)

    return job


def live_task_job(factory: TaskFactory, live: LiveArgs) -> Job:
    """``factory``'s body on a latent space over the run's current weights; the job returns a
    :class:`studio.engine.peek.LatentPeekResult` (the value and which weights made it)."""

    def job(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.peek import latent_peek

        def task(space: Any) -> Generator[Progress, None, Any]:
            holder = SpaceHolder()  # for this job alone: latent_peek drops the space after
            holder.space = space
            return (yield from factory(holder, token))

        return (yield from latent_peek(live.run, task, live.label, live.options, live.device))

    return job
