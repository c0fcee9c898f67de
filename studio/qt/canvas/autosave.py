"""Autosave and crash recovery for the canvas.

A QTimer asks the core :class:`~studio.engine.canvas_io.Autosaver` for a snapshot every few
seconds; it gives one only when the document changed and ``interval_s`` passed since the last
write. The snapshot (a mask copy and the header) is taken on the GUI thread, the slow part
(PNG encoding, zip, fsync) runs on a worker, because the engine thread may be training.
A clean exit discards the autosave; after a crash the next start offers it back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from studio.core.canvas import CanvasDocument
from studio.engine.canvas_io import (
    Autosaver,
    CanvasSnapshot,
    RecoveryInfo,
    discard_recovery,
    pending_recoveries,
)
from studio.qt.canvas.tasks import TaskPool

INTERVAL_S = 30.0
TICK_MS = 2_000


class AutosaveController(QObject):
    """Drives one :class:`Autosaver` for whatever document the canvas shows.

    ``autosaved(path)`` after each write; ``autosave_failed(message)`` when a write failed
    (the next change tries again).
    """

    autosaved = Signal(str)
    autosave_failed = Signal(str)

    def __init__(
        self,
        document: Callable[[], CanvasDocument | None],
        parent: QObject | None = None,
        *,
        interval_s: float = INTERVAL_S,
        tick_ms: int = TICK_MS,
    ) -> None:
        super().__init__(parent)
        self._document = document
        self._interval_s = interval_s
        self.saver = Autosaver(interval_s=interval_s)
        self._tasks = TaskPool(self)
        self._writing = False
        self.timer = QTimer(self)
        self.timer.setInterval(tick_ms)
        self.timer.timeout.connect(self._on_tick)
        self.timer.start()

    @property
    def writing(self) -> bool:
        return self._writing

    def save_now(self) -> bool:
        """Write a snapshot now (on the worker) whatever the interval; False if nothing to."""
        doc = self._document()
        if doc is None or self._writing:
            return False
        return self._write(self.saver.snapshot(doc, force=True))

    def adopt(self, doc_id: str) -> None:
        """Keep saving over the autosave ``doc_id`` (a recovered one) instead of our own."""
        self._tasks.wait()
        self.saver.discard()
        self.saver = Autosaver(interval_s=self._interval_s, doc_id=doc_id)

    def discard(self) -> None:
        """Delete the autosave (the document was saved, or Studio is closing cleanly)."""
        self._tasks.wait()
        self.saver.discard()

    def shutdown(self) -> None:
        """Stop the timer, let a write in flight finish, and delete the autosave."""
        self.timer.stop()
        self.discard()

    def _on_tick(self) -> None:
        doc = self._document()
        if doc is None or self._writing or doc.stroking:
            return  # mid-stroke the mask is half painted; the next tick saves the whole stroke
        self._write(self.saver.snapshot(doc))

    def _write(self, snap: CanvasSnapshot | None) -> bool:
        if snap is None:
            return False
        self._writing = True
        saver = self.saver
        self._tasks.submit(lambda: saver.write(snap), self._on_written, self._on_write_failed)
        return True

    def _on_written(self, path: Path) -> None:
        self._writing = False
        self.autosaved.emit(str(path))

    def _on_write_failed(self, message: str) -> None:
        self._writing = False
        self.autosave_failed.emit(message)

    def wait(self, timeout_ms: int = 30_000) -> bool:
        return self._tasks.wait(timeout_ms)


def ask_recovery(parent: QWidget | None, exclude: list[str]) -> RecoveryInfo | None:
    """If crashed sessions left autosaves, ask whether to recover the newest one.

    Returns the one to recover, or None. Declined autosaves are deleted; damaged ones cannot
    be recovered and are deleted too (the question says so). Older intact ones are kept and
    offered next time, so nothing the user did not turn down is lost.
    """
    found = pending_recoveries(exclude=exclude)
    damaged = [info for info in found if not info.ok]
    good = [info for info in found if info.ok]
    for info in damaged:
        discard_recovery(info)
    if not good:
        return None
    newest = good[0]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(newest.saved_at or time.time()))
    size = f"{newest.size[0]}x{newest.size[1]}, " if newest.size else ""
    text = (
        "Studio did not close properly last time.\n\n"
        f"Recover the canvas \u201c{newest.name}\u201d ({size}autosaved {when}) with its mask?\n"
        "No deletes the autosave."
    )
    if len(good) > 1:
        text += f"\n\n{len(good) - 1} older autosave(s) will be offered next time."
    if damaged:
        text += f"\n\n{len(damaged)} damaged autosave(s) could not be read and were removed."
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(
        parent, "Recover canvas", text, buttons, QMessageBox.StandardButton.Yes
    )
    if answer == QMessageBox.StandardButton.Yes:
        return newest
    discard_recovery(newest)
    return None
