"""JobCalls: each job's callbacks hear that job only; lanes are latest-wins; forget drops."""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress, Stage
from studio.qt.engine_thread import JobRunner
from studio.qt.job_calls import JobCalls


def counting(n: int, result: str, gate: threading.Event | None = None):
    def factory(token: CancelToken) -> Generator[Progress, None, str]:
        for i in range(n):
            if gate is not None:
                gate.wait(5)
            yield Progress("work", i + 1, n, message=result, metrics={"x": float(i)})
        return result

    return factory


def failing(token: CancelToken) -> Generator[Progress, None, None]:
    yield Progress("work", 0)
    raise StudioError("no good")


def test_each_job_is_heard_by_its_own_callbacks_only(qtbot, runner: JobRunner) -> None:
    a, b = JobCalls(runner), JobCalls(runner)
    heard: list[tuple[str, object]] = []
    ends: list[str] = []
    a.submit(
        "a",
        counting(3, "A"),
        on_done=lambda r: heard.append(("a-done", r)),
        on_progress=lambda p, _i, _pts: heard.append(("a-progress", p.message)),
        on_end=lambda o: ends.append("a"),
    )
    b.submit(
        "b",
        failing,
        on_done=lambda r: heard.append(("b-done", r)),
        on_failed=lambda m: heard.append(("b-failed", m)),
        on_end=lambda o: ends.append("b"),
    )
    # A job submitted to the runner directly (someone else's) is heard by neither.
    runner.submit("other", counting(2, "OTHER"))
    qtbot.waitUntil(lambda: len(ends) == 2 and not runner.is_busy(), timeout=20_000)
    assert ("a-done", "A") in heard and ("b-failed", "no good") in heard
    assert all(msg in ("A",) for kind, msg in heard if kind == "a-progress")
    assert not any(kind == "b-done" for kind, _ in heard)
    assert "OTHER" not in [value for _, value in heard]
    assert a.pending() == 0 and b.pending() == 0


def test_a_lane_cancels_the_older_request(qtbot, runner: JobRunner) -> None:
    calls = JobCalls(runner)
    gate = threading.Event()
    done: list[str] = []
    cancelled: list[str] = []
    ends: list[str] = []
    for name in ("first", "second", "third"):
        calls.submit(
            name,
            counting(2, name, gate),
            on_done=done.append,
            on_cancelled=lambda name=name: cancelled.append(name),
            on_end=lambda o, name=name: ends.append(name),
            lane="decode",
        )
    assert len(calls.active("decode")) == 3
    gate.set()
    qtbot.waitUntil(lambda: len(ends) == 3, timeout=20_000)
    assert done == ["third"] and sorted(cancelled) == ["first", "second"]
    assert calls.active("decode") == []


def test_forget_drops_a_job_unheard(qtbot, runner: JobRunner) -> None:
    calls = JobCalls(runner)
    gate = threading.Event()
    heard: list[str] = []
    handle = calls.submit(
        "slow",
        counting(3, "slow", gate),
        on_done=heard.append,
        on_end=lambda o: heard.append("end"),
    )
    calls.forget(handle)
    gate.set()
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=20_000)
    assert heard == [] and handle.token.cancelled and calls.pending() == 0


@dataclass(frozen=True)
class _Found:
    """A typed payload, as a job hands its caller one finished piece of work."""

    index: int
    values: tuple[float, ...]


def test_a_kept_reports_payload_reaches_on_events_unchanged(qtbot, runner: JobRunner) -> None:
    sent: list[_Found] = []

    def factory(token: CancelToken) -> Generator[Progress, None, str]:
        for i in range(5):
            yield Progress("sample", i, 5, message="between")  # coalesced away, never kept
            found = _Found(i, (float(i), 0.5))
            sent.append(found)
            yield Progress("panel", i + 1, 5, info={"panel": i}, payload=found)
        return "done"

    calls = JobCalls(runner)
    events: list[Progress] = []
    ends: list[str] = []
    calls.submit(
        "payloads",
        factory,
        on_events=events.extend,
        on_end=lambda o: ends.append(o.status.value),
        keep=lambda p: isinstance(p.payload, _Found),
    )
    qtbot.waitUntil(lambda: ends == ["finished"], timeout=20_000)
    assert [report.payload for report in events] == sent
    assert all(r.payload is s for r, s in zip(events, sent, strict=True))  # the very objects
    assert [r.stage for r in events] == [Stage.PANEL] * 5
