"""studio.core.gcpolicy: while a thread owns garbage collection, cycles are collected on it
alone, at Python's thresholds, and other threads' full collections are done there for them."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from studio.core import gcpolicy


class Cycle:
    """An object in a reference cycle that records the thread that finalized it."""

    freed_on: list[int] = []

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        Cycle.freed_on.append(threading.get_ident())


@pytest.fixture(autouse=True)
def clean_state():
    Cycle.freed_on = []
    was = gc.isenabled()
    yield
    while gcpolicy.owner() is not None:
        gcpolicy.disown()
    assert gc.isenabled() == was


def on_thread(fn):
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(result=fn(), ident=threading.get_ident()))
    t.start()
    return t, out


def test_owning_switches_automatic_collection_off_and_back_as_it_was():
    assert gc.isenabled()
    gcpolicy.own()
    gcpolicy.own()  # counted
    assert not gc.isenabled() and gcpolicy.owner() == threading.get_ident()
    gcpolicy.disown()
    assert not gc.isenabled()
    gcpolicy.disown()
    assert gc.isenabled() and gcpolicy.owner() is None
    gc.disable()
    try:
        gcpolicy.own()
        gcpolicy.disown()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_another_thread_cannot_take_ownership():
    gcpolicy.own()
    t, out = on_thread(lambda: pytest.raises(RuntimeError, gcpolicy.own))
    t.join()
    assert out["result"]


def test_a_full_collection_asked_on_another_thread_runs_on_the_owner():
    gcpolicy.own()
    Cycle()  # garbage, left for the collector
    t, out = on_thread(lambda: gcpolicy.collect(timeout_s=10))
    deadline = time.monotonic() + 10
    while not Cycle.freed_on and time.monotonic() < deadline:
        gcpolicy.tick()  # the owner's timer
        time.sleep(0.01)
    t.join(10)
    assert out["result"] is True
    assert Cycle.freed_on == [threading.get_ident()]  # finalized here, not on the asker


def test_an_unanswered_request_times_out_and_collects_nothing_there():
    gcpolicy.own()
    Cycle()
    t, out = on_thread(lambda: gcpolicy.collect(timeout_s=0.2))
    t.join(5)
    assert out["result"] is False and Cycle.freed_on == []
    assert gcpolicy.tick() == 2  # the request is still served by the owner's next tick
    assert Cycle.freed_on == [threading.get_ident()]


def test_without_an_owner_collect_is_a_plain_full_collection():
    Cycle()
    t, out = on_thread(gcpolicy.collect)
    t.join(5)
    assert out["result"] is True and Cycle.freed_on == [out["ident"]]


def test_ending_ownership_releases_a_waiting_thread():
    gcpolicy.own()
    t, out = on_thread(lambda: gcpolicy.collect(timeout_s=10))
    time.sleep(0.1)
    start = time.monotonic()
    gcpolicy.disown()
    t.join(10)
    assert out["result"] is True and time.monotonic() - start < 5


def test_ticks_follow_pythons_thresholds():
    gcpolicy.own()
    gc.collect()
    assert gcpolicy.tick() is None  # nothing allocated yet: nothing to do
    junk = [[] for _ in range(gc.get_threshold()[0] + 50)]
    assert gcpolicy.tick() == 0
    del junk
    assert gcpolicy.tick() is None
    t, _ = on_thread(lambda: gcpolicy.tick())  # only the owner collects
    t.join()


def test_automatic_collection_does_not_run_on_other_threads_while_owned():
    gcpolicy.own()
    seen: list[int] = []

    def note(phase, info):
        if phase == "start":
            seen.append(threading.get_ident())

    gc.callbacks.append(note)
    try:

        def churn():
            for _ in range(20 * gc.get_threshold()[0]):
                Cycle()

        t, _ = on_thread(churn)
        t.join()
        assert seen == [] and Cycle.freed_on == []
        while gcpolicy.tick() is not None:
            pass
        gcpolicy.collect()
        assert set(seen) == {threading.get_ident()}
        assert len(Cycle.freed_on) == 20 * gc.get_threshold()[0]
    finally:
        gc.callbacks.remove(note)
