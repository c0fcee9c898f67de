"""The Dataset workspace's scan lane: folders are checked on a thread of their own, so a scan
neither waits for a training run on the engine thread nor stalls it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QThread

from studio.core.jobs import CancelToken, Progress, Status


def _write_folder(folder: Path, n: int, size: int = 16) -> Path:
    rng = np.random.default_rng(n)
    for i in range(n):
        sub = folder / f"kind_{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i:03d}.png")
    return folder


def _snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file below ``folder``: size, mtime and content hash."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _start_paused_training(qtbot, win) -> Any:
    """Start the tiny DCGAN, wait for real training steps, pause it; return its handle."""
    steps: list[int] = []

    def on_progress(handle: Any, progress: Progress, *_: Any) -> None:
        if progress.stage == "train":
            steps.append(progress.step)

    win.runner.job_progress.connect(on_progress)
    win.train_panel.start()
    qtbot.waitUntil(lambda: len(steps) > 0, timeout=60_000)
    win.runner.job_progress.disconnect(on_progress)
    handle = win.runner.engine.running_job()
    assert handle is not None and handle.name.startswith("Train")
    win.train_panel.pause()
    qtbot.waitUntil(win.train_panel.is_paused, timeout=5_000)
    return handle


def _end_training(qtbot, win, handle: Any) -> None:
    with qtbot.waitSignal(win.runner.job_finished, timeout=30_000) as blocker:
        handle.token.cancel()  # a test run: nothing to keep
    assert blocker.args[0] is handle
    assert blocker.args[1].status is Status.CANCELLED


def test_a_folder_is_scanned_while_a_model_trains(
    qtbot, trainable_window, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import studio.engine.data as data

    win = trainable_window
    panel = win.dataset_panel
    real_scan = data.scan_folder
    threads: dict[str, str] = {}  # folder scanned -> the thread that scanned it

    def recording_scan(root: Any, **kwargs: Any) -> Generator[Progress, None, Any]:
        threads[str(root)] = QThread.currentThread().objectName()
        return (yield from real_scan(root, **kwargs))

    import studio.engine.run_data as run_data

    monkeypatch.setattr(data, "scan_folder", recording_scan)
    monkeypatch.setattr(run_data, "scan_folder", recording_scan)  # the trainer's reference
    training = _start_paused_training(qtbot, win)
    nxt = _write_folder(tmp_path / "next", 12)
    win.show_workspace(win.DATASET)  # the artist prepares the next dataset meanwhile

    # A paused run holds the engine thread indefinitely: a scan queued behind it never ends.
    with qtbot.waitSignal(panel.dataset_changed, timeout=30_000) as blocker:
        panel.set_folder(nxt)
        assert panel.busy_row.isVisible()
    assert blocker.args == [str(nxt), 12]
    assert threads[str(nxt)] == "studio-scans"  # its own lane, never the engine thread
    assert threads[str(tiny_dataset)] == "studio-engine"  # training checks its own folder
    assert win.runner.engine.running_job() is training and not training.token.cancelled
    assert panel.count_label.text() == "12 images found"
    assert panel.thumbnails.count() == 12
    assert "kind_0, kind_1" in panel.classes_label.text()
    assert not panel.busy_row.isVisible()
    assert panel.banner.isVisible() and panel.banner.level() == "info"
    assert "new runs will use this folder" in panel.banner.text()
    qtbot.waitUntil(lambda: "Scan" in win.statusBar().currentMessage(), timeout=5_000)
    # The next run will train on the new folder; the one running keeps its own.
    assert win.train_panel.is_training()
    _end_training(qtbot, win, training)
    assert win.train_panel.start_button.isEnabled()


def test_rescanning_the_folder_being_trained_on_writes_nothing(
    qtbot, trainable_window, tiny_dataset: Path, studio_home: Path
) -> None:
    win = trainable_window
    training = _start_paused_training(qtbot, win)
    cache = studio_home / "cache"
    # Training decoded the folder before its first step and cached the array (atomically).
    assert list(cache.glob("images-*.npy"))
    before = (_snapshot(cache), _snapshot(tiny_dataset))

    with qtbot.waitSignal(win.dataset_panel.dataset_changed, timeout=30_000) as blocker:
        win.dataset_panel.set_folder(tiny_dataset)
    assert blocker.args == [str(tiny_dataset), 32]
    assert (_snapshot(cache), _snapshot(tiny_dataset)) == before
    assert win.runner.engine.running_job() is training
    _end_training(qtbot, win, training)


def test_a_new_scan_cancels_the_one_running(qtbot, window, tmp_path: Path) -> None:
    panel = window.dataset_panel
    big = tmp_path / "big"
    big.mkdir()
    for i in range(300):
        Image.new("RGB", (64, 64), (i % 256, 0, 0)).save(big / f"{i:03d}.png")
    small = _write_folder(tmp_path / "small", 6)
    outcomes: dict[str, Any] = {}
    panel.scan_runner.job_finished.connect(lambda h, o: outcomes.__setitem__(h.name, o))

    panel.set_folder(big)
    qtbot.waitUntil(lambda: panel.thumbnails.count() > 0, timeout=20_000)
    first = panel.scan_runner.engine.running_job()
    assert first is not None and first.name == f"Scan {big}"
    with qtbot.waitSignal(panel.dataset_changed, timeout=30_000) as blocker:
        panel.set_folder(small)
    assert first.token.cancelled
    assert blocker.args == [str(small), 6]  # only the newest scan reports
    qtbot.waitUntil(lambda: len(outcomes) == 2, timeout=10_000)
    assert outcomes[f"Scan {big}"].status is Status.CANCELLED
    assert outcomes[f"Scan {small}"].status is Status.FINISHED
    assert panel.thumbnails.count() == 6  # none of the first scan's thumbnails are left
    assert panel.count_label.text() == "6 images found"


def test_closing_the_window_cancels_the_scan_and_waits(
    qtbot, trainable_window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import studio.qt.engine_jobs as engine_jobs

    win = trainable_window
    training = _start_paused_training(qtbot, win)
    seen: list[str] = []
    ended = threading.Event()

    def endless_scan(folder: Any, thumbnails: int = 0) -> Any:
        def factory(token: CancelToken) -> Generator[Progress, None, Any]:
            seen.append(str(folder))
            try:
                while True:  # only a cancel ends it
                    yield Progress("scan", message="Listing files")
                    token.wait_while_paused(0.01)
                    threading.Event().wait(0.01)
            finally:
                ended.set()

        return factory

    monkeypatch.setattr(engine_jobs, "scan", endless_scan)
    panel = win.dataset_panel
    panel.set_folder(tmp_path)
    qtbot.waitUntil(lambda: panel.progress_label.text() == "Listing files", timeout=10_000)
    lane = panel.scan_runner.engine
    assert lane.isRunning() and seen == [str(tmp_path)]

    win.close()
    assert ended.is_set()  # the scan was cancelled, and its thread waited for
    assert not lane.isRunning()
    assert not win.runner.engine.isRunning()
    assert training.token.stop_requested  # training was asked to stop (it keeps a checkpoint)
    # (the autouse fixture also fails the test if any engine thread is left running)


# -- the scan rests while a model trains ----------------------------------------------------


def _timed_job(clock: list[float], steps: int, ended: list[bool]) -> Any:
    """A job whose every stretch of work takes 0.1 s on the fake clock; returns "done"."""

    def factory(token: CancelToken) -> Generator[Progress, None, str]:
        try:
            for i in range(steps):
                clock[0] += 0.1
                yield Progress("scan", i + 1, steps)
            return "done"
        finally:
            ended.append(True)

    return factory


@pytest.mark.parametrize(
    ("training", "share", "rests"),
    [(False, 0.5, []), (True, 0.5, [0.1] * 3), (True, 0.25, [0.25] * 3)],  # 0.3 s capped
)
def test_a_scan_rests_only_while_a_model_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, training: bool, share: float, rests: list
) -> None:
    from types import SimpleNamespace

    from studio.core.jobs import run_sync
    from studio.engine import live
    from studio.qt import dataset_panel

    clock, slept, ended = [0.0], [], []
    fake_time = SimpleNamespace(perf_counter=lambda: clock[0], sleep=slept.append)
    monkeypatch.setattr(dataset_panel, "time", fake_time)
    if training:
        live.register(tmp_path / "run", object())
    try:
        outcome = run_sync(
            dataset_panel.gentle(_timed_job(clock, 3, ended), share)(CancelToken()), CancelToken()
        )
    finally:
        live.unregister(tmp_path / "run")
    assert outcome.status is Status.FINISHED and outcome.result == "done"
    assert slept == pytest.approx(rests)
    assert ended == [True]


def test_a_cancelled_gentle_job_closes_the_job_it_wraps() -> None:
    from studio.core.jobs import run_sync
    from studio.qt.dataset_panel import gentle

    token, ended = CancelToken(), []
    job = gentle(_timed_job([0.0], 100, ended))(token)
    seen = []

    def on_progress(progress: Progress) -> None:
        seen.append(progress.step)
        if progress.step == 2:
            token.cancel()

    assert run_sync(job, token, on_progress).status is Status.CANCELLED
    assert seen == [1, 2] and ended == [True]
