"""Which thread runs Python's cyclic garbage collector.

Python collects cycles on whichever thread happens to allocate past a threshold, and runs the
finalizers of what it frees right there. In the GUI that thread is often the engine thread,
and what it frees can be Qt wrappers made on the GUI thread (a lambda connected to a signal,
a widget in a cycle). Destroying those off the GUI thread takes Qt's locks in the opposite
order to the GUI thread, which holds them while it waits for the GIL: both threads stopped,
the window frozen for good (seen in the test suite: the engine thread waiting on a lock
inside ``gc.collect()``, the GUI thread waiting for the GIL).

So while an engine thread runs beside the GUI, the GUI thread *owns* collection
(:func:`own`): automatic collection is switched off and the owner calls :func:`tick` a few
times a second, which collects the generations Python would have collected by then (the same
thresholds). Code on another thread that needs a full collection now (to free memory after an
out-of-memory error) calls :func:`collect`, which asks the owner and waits for it, for a
bounded time. Without an owner (the command line, a script) :func:`collect` is
``gc.collect()`` and nothing else changes.

Ownership is counted: each :func:`own` needs one :func:`disown`, and automatic collection
comes back as it was when the last one ends. This module imports neither Qt nor torch.
"""

from __future__ import annotations

import gc
import threading

#: How long :func:`collect` on another thread waits for the owner's full collection.
WAIT_S = 2.0

_cond = threading.Condition()
_owner: int | None = None
_owners = 0
_was_enabled = True
_full_done = 0  # full collections run by the owner since it took over
_full_wanted = False


def own() -> None:
    """Make the calling thread the only one that collects (counted; see :func:`disown`)."""
    global _owner, _owners, _was_enabled
    with _cond:
        me = threading.get_ident()
        if _owners and _owner != me:
            raise RuntimeError("garbage collection is already owned by another thread")
        if not _owners:
            _owner, _was_enabled = me, gc.isenabled()
            gc.disable()
        _owners += 1


def disown() -> None:
    """End one :func:`own`; the last one gives collection back to every thread."""
    global _owner, _owners, _full_wanted
    with _cond:
        if not _owners:
            return
        _owners -= 1
        if _owners:
            return
        _owner, _full_wanted = None, False
        if _was_enabled:
            gc.enable()
        _cond.notify_all()  # waiters in collect() collect for themselves now


def owner() -> int | None:
    """The thread ident that owns collection, or None."""
    return _owner


def tick() -> int | None:
    """On the owner thread: collect what Python's thresholds call for (or a full collection
    someone asked for); returns the generation collected, or None."""
    global _full_done, _full_wanted
    if _owner != threading.get_ident():
        return None
    counts, limits = gc.get_count(), gc.get_threshold()
    if _full_wanted:
        generation = 2
    elif limits[0] and counts[0] > limits[0]:  # what would have triggered a collection
        # the oldest generation whose count is over its threshold, as Python picks
        generation = next((g for g in (2, 1) if counts[g] > limits[g]), 0)
    else:
        return None
    gc.collect(generation)
    if generation == 2:
        with _cond:
            _full_done += 1
            _full_wanted = False
            _cond.notify_all()
    return generation


def collect(timeout_s: float = WAIT_S) -> bool:
    """A full collection, done on the owner thread when there is one; True once it has run
    (False if the owner did not get to it within ``timeout_s``)."""
    global _full_wanted
    with _cond:
        if _owner is not None and _owner != threading.get_ident():
            target = _full_done + 1
            _full_wanted = True
            if not _cond.wait_for(lambda: _owner is None or _full_done >= target, timeout_s):
                return False
            if _owner is not None:
                return True  # the owner collected
    gc.collect()  # no owner (any more), or this thread is it
    return True


_heap_frozen = False


def freeze_startup_heap() -> None:
    """Exempt every object alive now from the cyclic garbage collector, once per process.

    After the model families are imported (torch, diffusers, the GUI) the heap holds a few
    hundred thousand long-lived objects, and each full (generation 2) collection walks all of
    them: 200-400 ms with the GIL held, a frozen window, whichever thread triggers it. Frozen
    objects (``gc.freeze()``) are skipped, so later collections only walk what was made since.
    The young garbage is collected first (cheap); what survives is modules, classes and the
    window, which live as long as the process anyway.
    """
    global _heap_frozen
    if _heap_frozen:
        return
    _heap_frozen = True
    gc.collect(1)
    gc.freeze()
