"""A guard against Qt bindings that leak references to Python singletons.

PySide6 6.12.0 on Python 3.11 drops one reference to ``True`` on every ``Signal.emit()`` (and to
``None`` on void calls); after about ten thousand emits Python aborts with
``Fatal Python error: bool_dealloc``. The training view emits ~30 times a second, so a long run
would crash the window. pyproject.toml excludes that release; this test fails on any binding
that leaks this way (on Python 3.12+ the singletons are immortal and it passes trivially).
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel


class _Emitter(QObject):
    fired = Signal(int)


def test_signal_emits_and_void_calls_keep_singleton_refcounts(qapp) -> None:
    emitter, label, seen = _Emitter(), QLabel(), []
    emitter.fired.connect(seen.append)
    true_before, none_before = sys.getrefcount(True), sys.getrefcount(None)
    for i in range(2000):
        emitter.fired.emit(i)
        label.setText("x")
    assert len(seen) == 2000
    assert abs(sys.getrefcount(True) - true_before) < 100
    assert abs(sys.getrefcount(None) - none_before) < 100
