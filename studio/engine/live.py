"""Runs training right now in this process, so short jobs can use their current weights.

The trainer registers its model when the step loop starts (:func:`register`) and unregisters it
when the job ends, whatever the ending (:func:`unregister`, from ``train_job``'s ``finally``).
While registered, a *peek* job (:mod:`studio.engine.peek`) may sample, decode or inpaint with the
model that is training, without stopping it and without reading any file.

The rule that makes this safe: a live model is used only on the thread that trains it, and only
while the training job is suspended at a ``yield`` (between two steps). :func:`get` enforces the
first half (it answers None on any other thread); the engine thread's interleaving
(``studio/qt/engine_thread.py``) provides the second: it runs interactive jobs to completion
inside the training job's progress callback, before the next step starts.

Cost accounting: whoever runs other work between a run's steps calls :func:`charge` with the
seconds it took and the kind of work ("Peek", "Explore", "Canvas", "Compare", "Prompt");
:meth:`LiveRun.info` turns that into ``peek_cost``, the share of the run's training time (wall
time since its step loop started, pauses left out) spent on such work, ``peek_s`` its seconds,
and ``peek_kinds``, the same share per kind. Work run while paused is not charged.

This module imports neither torch nor Qt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.jobs import CancelToken, Progress

PAUSE_TICK_S = 0.05  # a paused trainer yields at least this often, so peeks run while paused

_lock = threading.Lock()
_runs: dict[Path, LiveRun] = {}
_wake = threading.Event()  # set when an interactive job is waiting: a paused trainer yields now


def _key(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


@dataclass(eq=False)
class LiveRun:
    """One training run's model, reachable by its run folder while it trains."""

    path: Path
    model: Any  # a studio.models.base.GenerativeModel (typed loosely: no torch import here)
    token: CancelToken | None = None
    thread_id: int = field(default_factory=threading.get_ident)
    step: int = 0  # the trainer's last step; peeks show it, waiting jobs say it
    total: int = 0  # the step it trains to (0: not known)
    # A run of a family that translates images (Capability.PAIRED): its fixed held-out inputs
    # (N x C x H x W in [-1, 1], on the model's device), which peeks translate.
    inputs: Any = None
    interleaved_s: float = 0.0  # seconds of other work run between this run's steps
    peeks: int = 0
    by_kind: dict[str, float] = field(default_factory=dict)  # those seconds per kind of work
    _started: float = field(default_factory=lambda: time.monotonic())
    _paused_s: float = 0.0  # wall time spent paused: not training time

    def charge(self, seconds: float, kind: str = "Other") -> None:
        """Count ``seconds`` of ``kind`` work done between steps (ignored while paused)."""
        if self.token is not None and self.token.paused:
            return
        seconds = max(0.0, seconds)
        self.interleaved_s += seconds
        self.by_kind[kind] = self.by_kind.get(kind, 0.0) + seconds
        self.peeks += 1

    def training_s(self, now: float | None = None) -> float:
        """Wall time since the step loop started, pauses left out."""
        now = time.monotonic() if now is None else now
        return max(0.0, now - self._started - self._paused_s)

    def info(self, step: int | None = None) -> dict[str, Any]:
        """``peek_cost`` (the share of training time spent on interleaved work, since the run
        started here), ``peek_s`` (its seconds) and ``peek_kinds`` (the share per kind)."""
        if step is not None:
            self.step = int(step)
        wall = self.training_s()
        share = (lambda s: min(1.0, s / wall)) if wall > 0 else (lambda s: 0.0)
        kinds = {kind: share(s) for kind, s in self.by_kind.items()}
        return {
            "peek_cost": float(share(self.interleaved_s)),
            "peek_s": float(self.interleaved_s),
            "peek_kinds": kinds,
        }

    def while_paused(self, token: CancelToken, report: Progress) -> Generator[Progress, None, None]:
        """Yield ``report`` every :data:`PAUSE_TICK_S` (at once when a peek is waiting) until
        the token is resumed, stopped or cancelled: the trainer's paused state, during which
        the engine thread can run interactive jobs."""
        self.step = report.step
        start = time.monotonic()
        try:
            while token.paused:
                if _wake.wait(PAUSE_TICK_S):
                    _wake.clear()
                yield report
        finally:
            self._paused_s += time.monotonic() - start


def register(run_dir: str | Path, model: Any, token: CancelToken | None = None) -> LiveRun:
    """Make ``model`` (training in ``run_dir`` on this thread) reachable by peeks."""
    entry = LiveRun(_key(run_dir), model, token)
    with _lock:
        _runs[entry.path] = entry
    return entry


def unregister(run_dir: str | Path) -> None:
    """Forget the run's model (training ended, failed or was cancelled). Safe to repeat."""
    with _lock:
        _runs.pop(_key(run_dir), None)


def get(run_dir: str | Path) -> LiveRun | None:
    """The run's live entry when it trains on *this* thread, else None (use its files)."""
    with _lock:
        entry = _runs.get(_key(run_dir))
    if entry is None or entry.thread_id != threading.get_ident():
        return None
    return entry


def is_live(run_dir: str | Path) -> bool:
    """Whether the run trains right now in this process (on any thread). For the GUI, to
    decide whether a request should be interleaved with that training."""
    with _lock:
        return _key(run_dir) in _runs


def live_paths() -> list[Path]:
    with _lock:
        return list(_runs)


def progress() -> tuple[int, int] | None:
    """``(step, total)`` of a run training in this process (the furthest along), or None:
    for a job that waits for the training to end to say how long (from any thread)."""
    with _lock:
        entries = list(_runs.values())
    if not entries:
        return None
    entry = max(entries, key=lambda e: e.step)
    return entry.step, entry.total


def charge(seconds: float, kind: str = "Other") -> None:
    """Charge ``kind`` work (a job's kind: "Explore", "Canvas"...) to every run training on
    this thread."""
    me = threading.get_ident()
    with _lock:
        entries = [e for e in _runs.values() if e.thread_id == me]
    for entry in entries:
        entry.charge(seconds, kind)


def wake() -> None:
    """An interactive job is waiting: a paused trainer should yield now, not at its next tick."""
    _wake.set()
