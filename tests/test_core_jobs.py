"""Pure tests of jobs, cancel tokens and progress coalescing (no torch, no Qt)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress, ProgressMailbox, Status, run_sync


def counting_job(n: int, log: list[int]):
    for i in range(n):
        log.append(i)
        yield Progress("work", i + 1, n, metrics={"value": float(i)})
    return "done"


def test_run_sync_returns_result_and_reports_every_progress():
    seen: list[Progress] = []
    outcome = run_sync(counting_job(5, []), CancelToken(), seen.append)
    assert outcome.status is Status.FINISHED and outcome.ok
    assert outcome.result == "done"
    assert [p.step for p in seen] == [1, 2, 3, 4, 5]
    assert seen[-1].fraction == 1.0


def test_cancel_stops_at_the_next_yield_and_returns_no_result():
    token, log = CancelToken(), []

    def on_progress(p: Progress) -> None:
        if p.step == 3:
            token.cancel()

    outcome = run_sync(counting_job(100, log), token, on_progress)
    assert outcome.status is Status.CANCELLED
    assert outcome.result is None
    assert len(log) == 4  # the step in flight finishes, the next yield notices


def test_cancel_before_start_runs_nothing():
    token, log = CancelToken(), []
    token.cancel()
    assert run_sync(counting_job(3, log), token).status is Status.CANCELLED
    assert log == []


def test_failures_become_outcomes_with_messages():
    def bad():
        yield Progress("work")
        raise StudioError("The folder is empty.")

    def crash():
        yield Progress("work")
        raise ZeroDivisionError("boom")

    user = run_sync(bad())
    assert user.status is Status.FAILED and user.error == "The folder is empty."
    assert user.details is None
    crashed = run_sync(crash())
    assert crashed.status is Status.FAILED
    assert "ZeroDivisionError" in crashed.error and "Traceback" in crashed.details


def test_job_is_closed_so_its_finally_blocks_run():
    closed = []

    def job():
        try:
            while True:
                yield Progress("work")
        finally:
            closed.append(True)

    token = CancelToken()
    run_sync(job(), token, lambda p: token.cancel())
    assert closed == [True]


def test_pause_blocks_until_resume_and_cancel_wakes_a_paused_job():
    token = CancelToken()
    token.pause()
    assert token.paused
    woke = threading.Event()

    def waiter():
        token.wait_while_paused(poll=0.01)
        woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    assert not woke.is_set()
    token.resume()
    t.join(2)
    assert woke.is_set()

    token2 = CancelToken()
    token2.pause()
    errors = []

    def waiter2():
        try:
            token2.wait_while_paused(poll=0.01)
        except Exception as err:  # noqa: BLE001
            errors.append(type(err).__name__)

    t2 = threading.Thread(target=waiter2)
    t2.start()
    token2.cancel()
    t2.join(2)
    assert errors == ["Cancelled"]


def test_stop_is_not_cancel_but_counts_as_stop_requested():
    token = CancelToken()
    token.stop()
    assert token.stop_requested and not token.cancelled
    token.pause()  # pausing a stopping job is ignored
    assert not token.paused


def test_mailbox_coalesces_but_keeps_every_metric_point_and_the_newest_image():
    box = ProgressMailbox()
    wakes = 0
    img = np.zeros((2, 2, 3), np.uint8)
    for i in range(1000):
        wakes += box.put(
            Progress("train", i, 1000, metrics={"loss": float(i)}, image=img if i == 10 else None)
        )
    assert wakes == 1  # one wake-up while the consumer was away
    latest, image, points = box.take()
    assert latest.step == 999
    assert image is img
    assert [s for s, _ in points] == list(range(1000))
    assert box.take() == (None, None, [])
    assert box.put(Progress("train", 1)) is True  # empty again: wake the consumer


def test_mailbox_points_are_bounded():
    box = ProgressMailbox(max_points=10)
    for i in range(100):
        box.put(Progress("train", i, metrics={"loss": 1.0}))
    _, _, points = box.take()
    assert [s for s, _ in points] == list(range(90, 100))


@pytest.mark.parametrize(
    "total,step,expected", [(None, 3, None), (0, 0, None), (10, 5, 0.5), (10, 20, 1.0)]
)
def test_progress_fraction(total, step, expected):
    assert Progress("work", step, total).fraction == expected


def test_stages_come_from_one_enumeration() -> None:
    import ast
    from pathlib import Path

    from studio.core.jobs import Stage

    assert Progress("train").stage is Stage.TRAIN and Progress("train").stage == "train"
    with pytest.raises(ValueError, match="unknown progress stage"):
        Progress("trian")
    # Every stage the code names is a member (a typo fails here, not in a user's window).
    named = set()
    for path in (Path(__file__).resolve().parents[1] / "studio").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Progress":
                arg = node.args[0] if node.args else None
                arg = arg or next((k.value for k in node.keywords if k.arg == "stage"), None)
                if isinstance(arg, ast.Constant):
                    named.add(arg.value)
    assert named and named <= {s.value for s in Stage}, named - {s.value for s in Stage}


def test_a_payload_rides_a_report_through_the_mailbox_unchanged() -> None:
    from dataclasses import FrozenInstanceError, dataclass

    @dataclass(frozen=True)
    class Piece:
        index: int

    assert Progress("work").payload is None
    piece = Piece(3)
    box = ProgressMailbox()
    box.put(Progress("panel", 1, 2, payload=piece))
    latest, _image, _points = box.take()
    assert latest is not None and latest.payload is piece
    with pytest.raises(FrozenInstanceError):
        latest.payload = Piece(4)  # type: ignore[misc]


def test_train_status_reads_the_trainers_info_with_defaults() -> None:
    from studio.core.jobs import TrainStatus

    info = {"images_per_s": np.float32(812.5), "eta_s": 83, "device": "CPU", "memory": 1.5e9}
    status = TrainStatus.read({**info, "peek_cost": 0.021, "peek_s": 1.3})
    assert status == TrainStatus(812.5, 83.0, "CPU", 1_500_000_000, 0.021, 1.3)
    # Missing or malformed values (an older run's reports) fall back to "unknown".
    assert TrainStatus.read({"images_per_s": "fast", "eta_s": None, "memory": True}) == (
        TrainStatus()
    )
