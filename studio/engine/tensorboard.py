"""TensorBoard event files beside ``metrics.jsonl``, when tensorboard is installed.

``mirror(run)`` returns a run folder whose ``append_metrics`` also writes every numeric value
as a scalar (tag = the metric's name, at the record's step and wall time) into
``<run>/tensorboard/``, so ``tensorboard --logdir <runs folder>`` shows every run. Without the
``tensorboard`` package, or with ``STUDIO_TENSORBOARD=0``, it returns the run unchanged: the
metrics file stays the one record the app reads. A failure to write events never stops
training; the mirror switches itself off instead.

A resumed run drops the metrics logged after its checkpoint; its event writer opens with
``purge_step`` at its first new step, so TensorBoard discards the stale events the same way.

The events are written by :mod:`studio.engine.tfevents`, not ``torch.utils.tensorboard``: that
import took ~180 ms, mostly holding the GIL, and froze the GUI at the start of every run.
tensorboard is only needed to view the files, so :func:`enabled` just looks for the package.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from studio.engine import tfevents
from studio.engine.runs import RunFolder

FOLDER = "tensorboard"
ENV_SWITCH = "STUDIO_TENSORBOARD"  # "0" turns the mirror off
SKIPPED = frozenset({"step", "time"})
log = logging.getLogger(__name__)


def enabled() -> bool:
    """True when the environment allows it and the ``tensorboard`` package is installed.

    Only looks the package up (nothing is imported): there is no point writing files that no
    installed tool can show.
    """
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):  # a broken installation, or a module without a spec
        return False


class EventLog:
    """Scalars into one folder; the writer opens at the first record (no empty folders)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._writer: tfevents.EventFileWriter | None = None
        self.failed = False

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        if self.failed:
            return
        try:
            events = [e for record in records if (e := self._write_one(record)) is not None]
            if events and self._writer is not None:
                # One append, flushed: a run followed live, or killed, still has its events.
                self._writer.write(events)
        except Exception as err:  # noqa: BLE001 - the mirror must never stop training
            self.failed = True
            log.warning("TensorBoard events are off for %s: %s", self.folder, err)
            self.close()

    def _write_one(self, record: Mapping[str, Any]) -> bytes | None:
        """``record``'s numeric values as one serialized event (opening the file if needed)."""
        step = int(record.get("step", 0))
        wall = record.get("time")
        values = {
            name: float(value)
            for name, value in record.items()
            if name not in SKIPPED
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        }
        if not values:
            return None
        if self._writer is None:
            self._writer = tfevents.EventFileWriter(self.folder, purge_step=step)
        ok = isinstance(wall, (int, float)) and not isinstance(wall, bool) and math.isfinite(wall)
        wall = float(wall) if ok else time.time()
        scalars = [tfevents.scalar_value(name, value) for name, value in values.items()]
        return tfevents.event(wall, step, values=scalars)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as err:  # noqa: BLE001 - closing must not raise at shutdown
                log.warning("Closing TensorBoard events for %s failed: %s", self.folder, err)


class MirroredRunFolder(RunFolder):
    """A run folder whose metrics also go to TensorBoard (see :func:`mirror`)."""

    def __init__(self, path: str | os.PathLike[str], events: EventLog) -> None:
        super().__init__(path)
        self.events = events
        # Closed when the trainer lets go of the folder (end, stop, cancel or failure).
        weakref.finalize(self, events.close)

    def append_metrics(self, records: list[dict[str, Any]]) -> None:
        super().append_metrics(records)
        self.events.write(records)

    def close_events(self) -> None:
        self.events.close()


def mirror(run: RunFolder) -> RunFolder:
    """``run``, with its metrics also written as TensorBoard events when that is possible."""
    if isinstance(run, MirroredRunFolder) or not enabled():
        return run
    return MirroredRunFolder(run.path, EventLog(run.path / FOLDER))
