"""GUI-thread stalls while a model trains: does the window stay responsive?

A 1 ms precise QTimer on the GUI thread measures how late each of its ticks fires. Lateness is
time the event loop could not run: painting, our slots, or waiting for the GIL while the engine
thread runs Python. Measured twice in the real window: idle (the baseline), then while a
training job started from the Train workspace runs to its end. Targets: p99 < 16 ms (one frame
at 60 Hz) and max < 50 ms.

    python benchmarks/gui_stall.py --steps 200
    python benchmarks/gui_stall.py --steps 500 --device cuda --torch-threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_P99_MS = 16.0
TARGET_MAX_MS = 50.0


class StallProbe:
    """Records how late a 1 ms timer fires, in milliseconds."""

    def __init__(self, interval_ms: int = 1) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.interval = interval_ms / 1000
        self.lateness: list[float] = []
        self.times: list[float] = []  # when each tick fired (perf_counter)
        # GUI-thread CPU time per gap: a stall with little CPU time was spent waiting (for the
        # GIL, or for a core), not working in our own slots or painting.
        self.cpu_ms: list[float] = []
        self._last = 0.0
        self._last_cpu = 0.0
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_tick)

    def start(self) -> None:
        self.lateness, self.times, self.cpu_ms = [], [], []
        self._last = time.perf_counter()
        self._last_cpu = time.thread_time()
        self._timer.start()

    def stop(self) -> np.ndarray:
        self._timer.stop()
        return np.asarray(self.lateness)

    def _on_tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.lateness.append(max(0.0, (now - self._last - self.interval) * 1000))
        self.times.append(now)
        self.cpu_ms.append((cpu - self._last_cpu) * 1000)
        self._last, self._last_cpu = now, cpu

    def worst(self, n: int) -> list[tuple[float, float, float]]:
        """The ``n`` longest stalls: ``(time they ended, milliseconds, GUI CPU milliseconds)``."""
        order = np.argsort(self.lateness)[::-1][:n]
        return [(self.times[i], self.lateness[i], self.cpu_ms[i]) for i in order]


def summarize(name: str, late: np.ndarray, seconds: float) -> tuple[float, float]:
    p50, p99, worst = (float(np.percentile(late, q)) for q in (50, 99, 100))
    print(
        f"{name:<10} ticks {len(late):>6}  over {seconds:5.1f} s   "
        f"p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {worst:6.2f} ms"
    )
    return p99, worst


def run_loop_until(done, timeout_s: float) -> None:
    """Run a real event loop (as the app does) until ``done()`` or the timeout."""
    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    loop = QEventLoop()
    check = QTimer()
    check.setInterval(10)
    check.timeout.connect(lambda: loop.quit() if done() or time.monotonic() > deadline else None)
    check.start()
    loop.exec()
    check.stop()


def open_training_window(args, home: Path):
    """A themed main window on a fresh demo dataset with ``args.family`` picked in the Train
    workspace: ``(app, window)``, or an exit code when that failed. Shared with ui_latency.py."""
    from studio.core.jobs import run_sync
    from studio.engine.demo import make_demo_dataset
    from studio.qt.app import create_application
    from studio.qt.main_window import MainWindow
    from studio.qt.settings import AppSettings
    from studio.qt.theme import apply_theme

    data = home / "data"
    run_sync(make_demo_dataset(data, count=args.images, size=args.resolution))
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)

    app = create_application()
    apply_theme(app)
    window = MainWindow(AppSettings.at_path(home / "settings.ini"))
    window.resize(1360, 860)
    window.show()
    panel = window.train_panel
    run_loop_until(panel.families_loaded, 120)
    scanned: list[int] = []
    window.dataset_panel.dataset_changed.connect(lambda _f, n: scanned.append(n))
    window.dataset_panel.set_folder(data)
    run_loop_until(lambda: bool(scanned), 120)
    if not scanned or not scanned[0]:
        print("the dataset could not be loaded", file=sys.stderr)
        return 2
    window.show_workspace(window.TRAIN)
    if not panel.picker.set_current_key(args.family):
        print(f"unknown family {args.family}", file=sys.stderr)
        return 2
    return app, window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--family", default="gan.dcgan")
    parser.add_argument("--resolution", type=int, default=32, choices=(32, 64, 128))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--images", type=int, default=512, help="demo images to train on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=0, help="0 = torch's default")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--show-worst", type=int, default=0, help="list the N worst stalls")
    args = parser.parse_args(argv)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = Path(tempfile.mkdtemp(prefix="studio-gui-stall-"))
    os.environ["STUDIO_HOME"] = str(home)  # runs and caches go to a scratch folder

    opened = open_training_window(args, home)
    if isinstance(opened, int):
        return opened
    app, window = opened
    panel = window.train_panel
    panel.options_form.set_values(
        {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "sample_every": args.sample_every,
            "device": args.device,
        }
    )

    probe = StallProbe()
    print(f"{platform.platform()}; Python {platform.python_version()}; {os.cpu_count()} CPUs")
    print(f"{args.family} at {args.resolution} px, batch {args.batch_size}, {args.steps} steps")
    t0 = time.perf_counter()
    probe.start()
    run_loop_until(lambda: False, args.idle_seconds)
    idle = probe.stop()
    idle_s = time.perf_counter() - t0

    outcomes = []
    events: list[tuple[float, str]] = []  # what the job reported, to explain the worst stalls
    window.runner.job_finished.connect(lambda _h, outcome: outcomes.append(outcome))
    window.runner.job_events.connect(
        lambda _h, reports: events.extend((time.perf_counter(), r.message) for r in reports)
    )
    t0 = time.perf_counter()
    probe.start()
    panel.start()
    run_loop_until(lambda: bool(outcomes), 1800)
    busy = probe.stop()
    busy_s = time.perf_counter() - t0
    window.close()

    if not outcomes or not outcomes[0].ok:
        error = outcomes[0].error if outcomes else "timed out"
        print(f"training did not finish: {error}", file=sys.stderr)
        return 2
    summarize("idle", idle, idle_s)
    p99, worst = summarize("training", busy, busy_s)
    if args.show_worst:
        print("worst stalls while training: ms late, GUI CPU ms in it, when, last job message")
        for at, ms, cpu_ms in probe.worst(args.show_worst):
            before = [m for t, m in events if t <= at]
            last = before[-1] if before else "-"
            print(f"  {ms:7.1f}  {cpu_ms:7.1f}  {at - t0:7.2f} s  {last}")
    print(
        f"training: {outcomes[0].result.step} steps; status line: {panel.view.status_label.text()}"
    )
    ok = p99 < TARGET_P99_MS and worst < TARGET_MAX_MS
    verdict = "PASS" if ok else "FAIL"
    print(f"{verdict}: target p99 < {TARGET_P99_MS:.0f} ms and max < {TARGET_MAX_MS:.0f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
