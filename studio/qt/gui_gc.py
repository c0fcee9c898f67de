"""Garbage collection on the GUI thread only, while an engine thread runs beside it.

:mod:`studio.core.gcpolicy` says why: a collection on the engine thread can destroy Qt
wrappers made on the GUI thread and deadlock the two threads. :func:`acquire` (one per
:class:`~studio.qt.engine_thread.JobRunner`) makes the GUI thread the owner and starts a timer
that collects there a few times a second; :func:`release` undoes it when the last user ends.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer

from studio.core import gcpolicy

TICK_MS = 200  # how often the GUI thread collects what Python's thresholds call for

_timer: QTimer | None = None


def acquire() -> None:
    """Called on the GUI thread: from now on it alone collects (counted by gcpolicy)."""
    global _timer
    gcpolicy.own()
    if _timer is None:
        _timer = QTimer()  # made here, so it fires on the GUI thread
        _timer.setInterval(TICK_MS)
        _timer.timeout.connect(gcpolicy.tick)
    _timer.start()


def release() -> None:
    """End one :func:`acquire`; after the last one every thread collects again."""
    gcpolicy.disown()
    if gcpolicy.owner() is None and _timer is not None:
        _timer.stop()
