"""studio.core.threads: one thread lowers its own CPU priority, the others keep theirs."""

from __future__ import annotations

import sys
import threading

import pytest

from studio.core.threads import MAX_NICE, lower_thread_priority, thread_nice

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")


def _in_thread(fn):
    """Run ``fn()`` on a fresh thread; return (its result, that thread's native id)."""
    out: dict = {}

    def body() -> None:
        out["tid"] = threading.get_native_id()
        out["result"] = fn()
        out["nice"] = thread_nice()

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return out


@linux_only
def test_lowering_one_thread_leaves_the_caller_alone() -> None:
    mine = thread_nice()
    assert mine is not None
    out = _in_thread(lambda: lower_thread_priority(3))
    assert out["result"] == min(MAX_NICE, mine + 3) == out["nice"]
    assert thread_nice() == mine  # the calling (here: main) thread is untouched


@linux_only
def test_threads_started_afterwards_inherit_the_lower_priority() -> None:
    mine = thread_nice()
    assert mine is not None

    def lower_then_spawn() -> int | None:
        lower_thread_priority(2)
        return _in_thread(lambda: None)["nice"]

    out = _in_thread(lower_then_spawn)
    assert out["result"] == out["nice"] == min(MAX_NICE, mine + 2)


@linux_only
def test_nice_is_capped_and_a_zero_increment_changes_nothing() -> None:
    mine = thread_nice()
    assert mine is not None
    out = _in_thread(lambda: lower_thread_priority(0))
    assert out["result"] is None and out["nice"] == mine
    out = _in_thread(lambda: lower_thread_priority(100))
    assert out["result"] == MAX_NICE == out["nice"]


def test_other_platforms_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert thread_nice() is None
    assert lower_thread_priority(5) is None
