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
seconds it took; :meth:`LiveRun.info` turns that into ``peek_cost``, the fraction of wall time
since its last call spent on such work (time while paused does not count).

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
    step: int = 0  # the last step the trainer reported through info(); peeks show it
    interleaved_s: float = 0.0  # seconds of other work run between this run's steps
    peeks: int = 0
    _window_start: float = field(default_factory=lambda: time.monotonic())
    _window_charged: float = 0.0
    _cost: float | None = None

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` of other work done between steps (ignored while paused)."""
        if self.token is not None and self.token.paused:
            return
        self.interleaved_s += max(0.0, seconds)
        self.peeks += 1

    def info(self, step: int | None = None) -> dict[str, float]:
        """``peek_cost`` (fraction of wall time spent on interleaved work since the last call,
        smoothed like the trainer's throughput) and ``peek_s`` (seconds in all)."""
        if step is not None:
            self.step = int(step)
        now = time.monotonic()
        wall = now - self._window_start
        if wall > 0:
            share = min(1.0, (self.interleaved_s - self._window_charged) / wall)
            self._cost = share if self._cost is None else 0.7 * self._cost + 0.3 * share
        self.restart_window(now)
        return {"peek_cost": float(self._cost or 0.0), "peek_s": float(self.interleaved_s)}

    def restart_window(self, now: float | None = None) -> None:
        """Start a new measuring window (after a pause, whose time must not dilute the cost)."""
        self._window_start = time.monotonic() if now is None else now
        self._window_charged = self.interleaved_s

    def while_paused(self, token: CancelToken, report: Progress) -> Generator[Progress, None, None]:
        """Yield ``report`` every :data:`PAUSE_TICK_S` (at once when a peek is waiting) until
        the token is resumed, stopped or cancelled: the trainer's paused state, during which
        the engine thread can run interactive jobs."""
        self.step = report.step
        while token.paused:
            if _wake.wait(PAUSE_TICK_S):
                _wake.clear()
            yield report
        self.restart_window()


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


def charge(seconds: float) -> None:
    """Charge interleaved work to every run training on this thread."""
    me = threading.get_ident()
    with _lock:
        entries = [e for e in _runs.values() if e.thread_id == me]
    for entry in entries:
        entry.charge(seconds)


def wake() -> None:
    """An interactive job is waiting: a paused trainer should yield now, not at its next tick."""
    _wake.set()
