"""Thread helpers with no Qt and no torch: the CPU priority of one thread.

The window's engine thread trains beside the GUI thread; on a machine with few cores the GUI
thread then waits for a core in the middle of a repaint (docs/performance.md, "GUI stalls").
Linux keeps a nice value per thread, so the engine thread can lower its own priority without
touching the GUI thread's; threads it creates afterwards (torch's OpenMP workers among them)
inherit it. Elsewhere ``setpriority`` would act on the whole process, so this does nothing.
"""

from __future__ import annotations

import os
import sys
import threading

MAX_NICE = 19


def thread_nice(native_id: int | None = None) -> int | None:
    """The nice value of a thread of this process (default: the calling one); None where the
    platform keeps no per-thread nice."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return os.getpriority(os.PRIO_PROCESS, native_id or threading.get_native_id())
    except OSError:
        return None


def lower_thread_priority(increment: int) -> int | None:
    """Raise the calling thread's nice value by ``increment`` (capped at 19) on Linux.

    Returns the thread's nice value afterwards, or None when nothing was changed (another
    platform, ``increment <= 0``, or the call was refused). A thread can lower its priority but
    not raise it back without privileges, so call this on a thread that keeps it for life.
    """
    if increment <= 0:
        return None
    current = thread_nice()
    if current is None:
        return None
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, current + increment))
    except OSError:
        return None
    return thread_nice()
