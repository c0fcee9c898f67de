"""Follow a run folder as it grows: new ``metrics.jsonl`` lines and new sample grids.

A run opened in the window may still be training: in another process, on another machine whose
folder is synced here, or headless from the command line. A timer polls about once a second;
every read happens on a worker thread (``BackgroundReader``) and only the results come back to
the GUI thread, so a slow disk or a network share never freezes the window.

The metrics file is tailed from a byte offset. If it shrinks or is replaced (a resume rewrites
it atomically without the lines logged after its checkpoint) the watcher reads it again from the
start and says so, and the plot replaces its history. If it disappears (the run was deleted) the
watcher says so the same way, with no points, and picks the file up again should it return.

The run view uses one watcher for the run it shows and one per overlaid run; the overlay
watchers share a single reader, so however many runs are overlaid one thread reads for them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from studio.qt.series import columns

POLL_MS = 1000
SAMPLE_NAME = re.compile(r"^step_(\d+)\.png$")
# What a family shows beside its samples (GenerativeModel.extra_images): samples/<name>.png,
# a lower-case word, rewritten at every sample step
EXTRA_NAME = re.compile(r"^([a-z][a-z0-9_]*)\.png$")
# (name, path, (modification time ns, size)): the stamp changes when the trainer rewrites it
Extra = tuple[str, Path, tuple[int, int]]
Columns = dict[str, tuple[np.ndarray, np.ndarray]]


class BackgroundReader(QObject):
    """Runs small file reads on a private pool thread; results arrive on the GUI thread.

    ``finished(ticket, result, error)``: exactly one of ``result`` and ``error`` is set.
    The pool belongs to this object, and deleting it waits for a read in progress (reads are
    short), so no thread outlives the widget that asked.
    """

    finished = Signal(int, object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # reads queue up in order; none compete for the disk
        self._tickets = itertools.count(1)
        self._pending = 0
        self.finished.connect(self._on_finished)

    def submit(self, fn: Callable[[], Any]) -> int:
        ticket = next(self._tickets)
        self._pending += 1

        def task() -> None:
            try:
                result, error = fn(), None
            except Exception as err:  # noqa: BLE001 - handed to the GUI thread as a value
                result, error = None, err
            # RuntimeError: the reader was deleted meanwhile, and nobody is listening.
            with contextlib.suppress(RuntimeError):
                self.finished.emit(ticket, result, error)

        self._pool.start(task)
        return ticket

    def busy(self) -> bool:
        return self._pending > 0

    def wait(self, ms: int = 5000) -> bool:
        """Block until queued reads are done (tests, shutdown)."""
        return self._pool.waitForDone(ms)

    def _on_finished(self, *_args: Any) -> None:
        self._pending = max(0, self._pending - 1)


# -- what one poll reads (runs on the worker thread) ----------------------------------------


@dataclass
class Poll:
    """New metrics since ``offset`` (as columns) and the sample grids on disk."""

    cols: Columns = field(default_factory=dict)
    records: int = 0
    offset: int = 0
    identity: tuple[int, int] | None = None
    reset: bool = False  # the file was replaced, shrank or vanished: ``cols`` is the whole history
    samples: list[tuple[int, Path]] | None = None
    extras: list[Extra] | None = None


def extra_files(folder: Path) -> list[Extra]:
    """Every extra image (``<name>.png``, not a sample grid) in ``folder``, by name, with a
    stamp that changes when the file is rewritten. Links and other non-files are left out."""
    out = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = EXTRA_NAME.match(entry.name)
                if not match or SAMPLE_NAME.match(entry.name):
                    continue
                if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                out.append((match.group(1), Path(entry.path), (st.st_mtime_ns, st.st_size)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(out)


def sample_files(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_N.png`` in ``folder``, by step."""
    out = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = SAMPLE_NAME.match(entry.name)
                if match and entry.is_file():
                    out.append((int(match.group(1)), Path(entry.path)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(out)


def poll_run(
    path: Path,
    offset: int,
    identity: tuple[int, int] | None,
    metrics: bool = True,
    samples: bool = True,
) -> Poll:
    """Read what is new in run folder ``path`` (tail of the metrics file, sample list)."""
    from studio.engine.runs import RunFolder

    run = RunFolder(path)
    poll = Poll(offset=offset, identity=identity)
    if metrics:
        try:
            st = os.stat(run.metrics_path)
        except FileNotFoundError:
            st = None
            if offset or identity is not None:  # it was there: deleted (or moved away)
                poll.offset, poll.identity, poll.reset = 0, None, True
        if st is not None:
            ident = (st.st_dev, st.st_ino)
            if st.st_size < offset or (identity is not None and ident != identity):
                offset, poll.reset = 0, True
            records, poll.offset = run.read_metrics(offset)
            poll.identity, poll.records = ident, len(records)
            poll.cols = columns(records)
    if samples:
        poll.samples = sample_files(run.samples_dir)
        poll.extras = extra_files(run.samples_dir)
    return poll


# -- the watcher ----------------------------------------------------------------------------


class RunWatcher(QObject):
    """Polls one run folder on a timer and reports what is new.

    ``metrics_arrived(cols, reset)``: new points as ``{name: (steps, values)}``; with
    ``reset`` the columns are the whole history and replace what the plot holds.
    ``samples_found(list[(step, path)])``: every sample grid on disk (when the list changed).
    ``extras_found(list[(name, path, stamp)])``: every extra image on disk (when the list or a
    file changed).
    ``poll_finished(error)``: after every completed poll, ``None`` or the exception it raised
    (the watcher itself shrugs errors off and tries again on the next tick).

    ``reader``: a ``BackgroundReader`` to share with other watchers (each answer carries a
    ticket, so a watcher ignores the others' reads); by default the watcher has its own.
    """

    metrics_arrived = Signal(object, bool)
    samples_found = Signal(object)
    extras_found = Signal(object)
    poll_finished = Signal(object)

    def __init__(
        self,
        parent: QObject | None = None,
        interval_ms: int = POLL_MS,
        reader: BackgroundReader | None = None,
    ) -> None:
        super().__init__(parent)
        self.reader = reader if reader is not None else BackgroundReader(self)
        self.reader.finished.connect(self._on_read)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll_now)
        self._path: Path | None = None
        self._metrics = True
        self._samples_too = True
        self._offset = 0
        self._identity: tuple[int, int] | None = None
        self._ticket = 0  # the read in flight (0: none); reset to drop a stale answer
        self._samples: list[tuple[int, Path]] = []
        self._extras: list[Extra] | None = None  # None: not reported yet for this folder
        self.polls = 0  # completed polls (tests)

    @property
    def path(self) -> Path | None:
        return self._path

    def watch(
        self, path: str | Path, offset: int = 0, metrics: bool = True, samples: bool = True
    ) -> None:
        """Follow ``path`` from metrics byte ``offset``; ``metrics=False`` follows samples only
        (while this window's own training job delivers the points), ``samples=False`` metrics
        only (an overlaid run)."""
        self._path, self._offset, self._metrics = Path(path), int(offset), metrics
        self._samples_too = samples
        self._identity, self._samples, self._extras = None, [], None
        self._ticket = 0
        self._timer.start()
        self.poll_now()

    def set_interval(self, ms: int) -> None:
        self._timer.setInterval(int(ms))

    def follow_metrics(self, on: bool, offset: int | None = None) -> None:
        self._metrics = on
        self._ticket = 0  # a read in flight used the old setting
        if offset is not None:
            self._offset, self._identity = int(offset), None

    def stop(self) -> None:
        self._timer.stop()
        self._path = None
        self._ticket = 0

    def is_watching(self) -> bool:
        return self._path is not None

    def poll_now(self) -> None:
        if self._path is None or self._ticket:
            return  # one read at a time; a slow disk skips ticks instead of queueing them
        args = (self._path, self._offset, self._identity, self._metrics, self._samples_too)
        self._ticket = self.reader.submit(lambda: poll_run(*args))

    def _on_read(self, ticket: int, poll: Poll | None, error: BaseException | None) -> None:
        if ticket != self._ticket:
            return
        self._ticket = 0
        if self._path is None:
            return
        self.polls += 1
        if error is not None or poll is None:
            # A vanished or unreadable folder: try again next tick.
            self.poll_finished.emit(error if error is not None else RuntimeError("no answer"))
            return
        if self._metrics:
            self._offset, self._identity = poll.offset, poll.identity
            if poll.cols or poll.reset:
                self.metrics_arrived.emit(poll.cols, poll.reset)
        if poll.samples is not None and poll.samples != self._samples:
            self._samples = poll.samples
            self.samples_found.emit(list(poll.samples))
        if poll.extras is not None and poll.extras != self._extras and self._path is not None:
            self._extras = poll.extras
            self.extras_found.emit(list(poll.extras))
        if self._path is not None:  # (a slot above may have stopped the watcher)
            self.poll_finished.emit(None)
