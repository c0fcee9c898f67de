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
import collections
import gc
import os
import platform
import sys
import tempfile
import threading
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


def _thread_cpu_s(ident: int) -> float:
    """CPU seconds a thread (by ``threading.get_ident()``) has used; NaN if it is gone."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (OSError, AttributeError, OverflowError):
        return float("nan")


def _run_delay_s(native_id: int) -> float:
    """Seconds a thread has waited on the OS run queue (Linux schedstat); NaN elsewhere."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


def _where(frame, depth: int = 3) -> str:
    """The innermost ``depth`` frames of a stack, innermost first, as ``file:line fn``."""
    parts = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        parts.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return " < ".join(parts) or "-"


def _ours(frame) -> str:
    """The innermost frame in the studio's own code (or a benchmark), else the innermost."""
    first = frame
    while frame is not None:
        name = frame.f_code.co_filename
        if "/studio/" in name or "/benchmarks/" in name:
            return f"{Path(name).name}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return _where(first, 1)


class _EventSpy:
    """An application event filter that remembers the last event the GUI thread dispatched
    (type and receiver), so a stall spent in Qt's C++ code (no Python frame) can be named.

    It also keeps a timeline of every event the GUI thread began: ``(perf_counter, GUI thread
    CPU seconds, "Type -> receiver")``. The CPU spent between one event's start and the next's
    is charged to the first (its handler, or Qt's painting for a Paint/UpdateRequest), which
    splits a stall into the events it was made of.
    """

    @staticmethod
    def install() -> _EventSpy:
        from PySide6.QtCore import QCoreApplication, QEvent, QObject

        quiet = (QEvent.Type.Timer, QEvent.Type.MetaCall)

        class Spy(QObject):
            last = "-"

            def __init__(self) -> None:
                super().__init__()
                self.timeline: collections.deque = collections.deque(maxlen=200_000)
                self._mine = threading.get_ident()

            def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
                if threading.get_ident() != self._mine:
                    return False
                kind = event.type()
                name = obj.objectName() or type(obj).__name__
                if not obj.objectName() and kind == QEvent.Type.Paint:
                    parent = obj.parent()  # a bare QWidget: name its container too
                    if parent is not None:
                        name += f" in {parent.objectName() or type(parent).__name__}"
                label = f"{kind.name} -> {name}"
                self.timeline.append((time.perf_counter(), time.thread_time(), label))
                if kind not in quiet:
                    self.last = label
                return False

            def remove(self) -> None:
                QCoreApplication.instance().removeEventFilter(self)

            def costs(self, start: float, end: float, top: int = 3) -> list[tuple[str, float]]:
                """The events that used the most GUI CPU between ``start`` and ``end``."""
                spent: collections.Counter = collections.Counter()
                rows = list(self.timeline)
                times = [r[0] for r in rows]
                i = max(0, int(np.searchsorted(times, start)) - 1)
                j = int(np.searchsorted(times, end))
                for a, b in zip(rows[i:j], rows[i + 1 : j + 1]):
                    spent[a[2]] += (b[1] - a[1]) * 1000
                return [(k, v) for k, v in spent.most_common(top) if v >= 1.0]

        spy = Spy()
        QCoreApplication.instance().installEventFilter(spy)
        return spy  # type: ignore[return-value]


class StallAttributor:
    """Finds out what the GUI thread was doing during each stall of a :class:`StallProbe`.

    A watchdog thread polls every ``poll_ms``: it records the GUI thread's CPU time and OS
    run-queue wait, the other threads' CPU time and the process CPU time; whenever the probe's
    heartbeat is late by more than ``threshold_ms`` it also captures every thread's Python stack
    (``sys._current_frames()``). ``gc.callbacks`` time every collection. :meth:`report` then
    classifies each stall longer than the threshold:

    - ``gc``: a garbage collection (any thread) covered more than half of it;
    - ``gui``: the GUI thread was on a core for more of it than it waited for one (and for
      over 30%): our work on the GUI thread, located by its most frequent stack (and the last Qt
      event dispatched, for work in Qt's C++ code);
    - ``os``: the GUI thread waited for a core longer than it ran (run-queue wait over 30%):
      the machine's load, not ours;
    - ``gil``: the GUI thread sat off-core while another thread ran (waiting for the GIL or a
      lock), located by that thread's most frequent stack;
    - ``idle``: neither thread used the time (the process was not scheduled, timer coalescing).
    """

    def __init__(self, probe: StallProbe, threshold_ms: float = 30.0, poll_ms: float = 2.0) -> None:
        self.probe = probe
        self.threshold = threshold_ms / 1000
        self.poll = poll_ms / 1000
        self.gui_ident = threading.get_ident()
        self.gui_native = threading.get_native_id()
        self.readings: list[tuple[float, float, float, float, float]] = []
        self.samples: list[tuple[float, str, str, str, str]] = []  # t, gui where/ours, other
        self.collections: list[tuple[float, float, int, int]] = []  # start, end, gen, thread
        self._gc_start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.readings, self.samples, self.collections = [], [], []
        self._stop.clear()
        gc.callbacks.append(self._on_gc)
        self._events = _EventSpy.install()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._events.remove()

    def _on_gc(self, phase: str, info: dict) -> None:
        ident = threading.get_ident()
        if phase == "start":
            self._gc_start[ident] = time.perf_counter()
        elif ident in self._gc_start:
            start = self._gc_start.pop(ident)
            self.collections.append((start, time.perf_counter(), info["generation"], ident))

    def _watch(self) -> None:
        me = threading.get_ident()
        last_cpu: dict[int, float] = {}
        while not self._stop.wait(self.poll):
            now = time.perf_counter()
            others = [i for i in sys._current_frames() if i not in (me, self.gui_ident)]
            cpu_now = {i: _thread_cpu_s(i) for i in others}
            other_cpu = sum(cpu_now.values())
            self.readings.append(
                (
                    now,
                    _thread_cpu_s(self.gui_ident),
                    _run_delay_s(self.gui_native),
                    other_cpu,
                    time.process_time(),
                )
            )
            if now - self.probe._last - self.probe.interval > self.threshold:
                frames = sys._current_frames()
                gui = frames.get(self.gui_ident)
                # The other thread that used the most CPU since the last poll.
                busy = sorted(
                    (
                        (_thread_cpu_s(i) - last_cpu.get(i, 0.0), f)
                        for i, f in frames.items()
                        if i not in (me, self.gui_ident)
                    ),
                    key=lambda b: -b[0],
                )
                other = _where(busy[0][1], 4) if busy else "-"
                other_ours = _ours(busy[0][1]) if busy else "-"
                self.samples.append(
                    (
                        now,
                        _where(gui, 4) if gui else "-",
                        f"{_ours(gui) if gui else '-'} [{self._events.last}]",
                        other,
                        other_ours,
                    )
                )
                del frames, gui, busy
            last_cpu = cpu_now

    def _delta(self, start: float, end: float) -> np.ndarray:
        """Counter increases (GUI CPU, GUI run wait, others' CPU, process CPU) over a window."""
        times = np.asarray([r[0] for r in self.readings])
        if len(times) < 2:
            return np.full(4, np.nan)
        i = max(0, int(np.searchsorted(times, start)) - 1)
        j = min(len(times) - 1, int(np.searchsorted(times, end)))
        return np.asarray(self.readings[j][1:]) - np.asarray(self.readings[i][1:])

    def report(self, top: int = 6) -> None:
        probe = self.probe
        stalls = [
            (
                probe.times[k] - (probe.lateness[k] / 1000) - probe.interval,
                probe.times[k],
                probe.lateness[k],
            )
            for k in range(len(probe.lateness))
            if probe.lateness[k] > self.threshold * 1000
        ]
        if not stalls:
            print(f"  no stall over {self.threshold * 1000:.0f} ms")
            return
        t0 = self.readings[0][0] if self.readings else 0.0
        tally: dict[str, list[float]] = {}
        places: dict[str, collections.Counter] = {}
        print(
            f"  stalls over {self.threshold * 1000:.0f} ms: ms, cause, GUI CPU/run-wait, "
            "others' CPU, process CPU ms, where"
        )
        for start, end, ms in sorted(stalls, key=lambda s: -s[2]):
            span = end - start
            gui_cpu, wait, other_cpu, proc = self._delta(start, end) * 1000
            gc_ms = sum(
                (min(e, end) - max(s, start)) * 1000
                for s, e, _g, _t in self.collections
                if e > start and s < end
            )
            inside = [s for s in self.samples if start <= s[0] <= end + self.poll]
            ours = collections.Counter(s[2] for s in inside).most_common(1)
            gui_where = ours[0][0] if ours else "?"
            if gc_ms > 0.5 * span * 1000:
                gens = {g for s, e, g, _t in self.collections if e > start and s < end}
                cause, where = "gc", f"gen {max(gens)} collection, {gc_ms:.0f} ms"
            elif gui_cpu >= wait and gui_cpu > 0.3 * span * 1000:
                cause, where = "gui", gui_where
            elif wait > 0.3 * span * 1000:
                cause, where = "os", f"waiting for a core; GUI in {gui_where}"
            elif other_cpu > 0.5 * span * 1000:
                theirs = collections.Counter(s[4] for s in inside).most_common(1)
                cause, where = "gil", theirs[0][0] if theirs else "?"
            else:
                cause, where = "idle", "nobody ran"
            tally.setdefault(cause, []).append(ms)
            places.setdefault(cause, collections.Counter())[where] += 1
            if top > 0:
                top -= 1
                print(
                    f"  {ms:7.1f}  {cause:<4}  {gui_cpu:5.0f}/{wait:5.0f}  {other_cpu:6.0f}  "
                    f"{proc:6.0f}  at {start - t0:5.2f} s  {where}"
                )
                spent = self._events.costs(start, end)
                if spent:
                    print(
                        "           GUI CPU by event: "
                        + ", ".join(f"{k} {v:.0f} ms" for k, v in spent)
                    )
                stacks = collections.Counter(s[1] for s in inside).most_common(2)
                for stack, n in stacks:
                    print(f"           GUI x{n}: {stack}")
                others = collections.Counter(s[3] for s in inside).most_common(1)
                for stack, n in others:
                    print(f"           other x{n}: {stack}")
        print(
            "  by cause: "
            + "; ".join(
                f"{c} {len(v)} (max {max(v):.0f} ms, sum {sum(v):.0f} ms)" for c, v in tally.items()
            )
        )
        for cause, counter in places.items():
            for where, n in counter.most_common(3):
                print(f"    {cause:<4} x{n}: {where}")
        gcs = [(e - s) * 1000 for s, e, g, _t in self.collections if g == 2]
        if gcs:
            print(f"  gen-2 collections: {len(gcs)}, longest {max(gcs):.1f} ms")


def thread_table() -> list[tuple[int, str, int, float]]:
    """This process's threads (Linux ``/proc``): ``(native id, name, nice, CPU seconds)``, the
    busiest first; empty elsewhere. Shows which threads did the work and at what priority."""
    rows = []
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for task in Path("/proc/self/task").glob("*") if Path("/proc/self/task").is_dir() else []:
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()  # fields[0] is the state (field 3)
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime + stime (fields 14, 15)
        rows.append((int(task.name), name, int(fields[16]), cpu))  # nice (field 19)
    return sorted(rows, key=lambda r: -r[3])


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
    # The run's own setting: the trainer sets its thread count from it (a torch.set_num_threads
    # here would be overridden by one thread per physical core, studio/engine/speed.py).
    panel.options_form.set_values({"cpu_threads": max(0, args.torch_threads)})
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
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="the run's CPU threads (0: the trainer's default)",
    )
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
