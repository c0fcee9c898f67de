"""The Start click's event-loop turn: how long the window cannot respond after Start.

A small offscreen harness around the real window (``gui_stall.open_training_window``): a 1 ms
timer runs, Start is clicked from a timer (as a click arrives), and the harness lists the
click's own gap and every later gap over ``--show-ms`` in the ``--window-ms`` after it, each
split into the GUI thread's CPU (``TrainPanel.start()``, then the rest: the repaint), its wait
on the OS run queue (Linux ``schedstat``) and the rest, off a core (waiting for the GIL while
the engine thread starts the job). Then the job is cancelled (or, with ``--points``, stopped
after that many steps) and the next repeat starts; the first repeat is the process's first
Start (as in ``ui_latency.py``'s "training" phase). ``--switch-ms`` and ``--gui-turn-cap-ms 0``
turn off the app's 1 ms GIL switch interval and its job gate (``engine_thread.py``).

    python benchmarks/start_turn.py --repeats 5
    python benchmarks/start_turn.py --repeats 3 --profile 0   # cProfile of the first Start turn
    python benchmarks/start_turn.py --repeats 3 --points 60   # Starts after finished runs
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gui_stall import (  # noqa: E402
    StallAttributor,
    StallProbe,
    _EventSpy,
    _run_delay_s,
    open_training_window,
    run_loop_until,
)


class _WaitProbe(StallProbe):
    """The 1 ms probe, also recording the GUI thread's run-queue wait in each gap; calls
    ``on_tick`` (once) at the next tick."""

    def __init__(self, native: int) -> None:
        super().__init__()
        self._native = native
        self.wait_ms: list[float] = []
        self._last_wait = 0.0
        self.on_tick = None

    def start(self) -> None:
        self.wait_ms = []
        self._last_wait = _run_delay_s(self._native)
        super().start()

    def _on_tick(self) -> None:
        super()._on_tick()
        wait = _run_delay_s(self._native)
        self.wait_ms.append((wait - self._last_wait) * 1000)
        self._last_wait = wait
        if self.on_tick is not None:
            self.on_tick, callback = None, self.on_tick
            callback()


def _event_costs(spy, start: float, end: float) -> str:
    """GUI CPU between ``start`` and ``end`` by Qt event type (the spy's timeline)."""
    rows = [r for r in spy.timeline if start <= r[0] <= end]
    spent: dict[str, float] = {}
    for a, b in zip(rows, rows[1:]):
        kind = a[2].split(" -> ")[0]
        if kind in ("Paint", "UpdateRequest", "MetaCall", "LayoutRequest"):
            kind = a[2]
        spent[kind] = spent.get(kind, 0.0) + (b[1] - a[1]) * 1000
    top = sorted(spent.items(), key=lambda kv: -kv[1])[:8]
    return ", ".join(f"{k} {v:.1f}" for k, v in top if v >= 0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--family", default="gan.dcgan")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--window-ms", type=int, default=1500, help="how long after the click")
    parser.add_argument("--show-ms", type=float, default=8.0, help="list later gaps over this")
    parser.add_argument("--switch-ms", type=float, default=None, help="sys.setswitchinterval")
    parser.add_argument("--gui-turn-cap-ms", type=float, default=None, help="0: no gate")
    parser.add_argument(
        "--profile",
        type=int,
        default=None,
        metavar="K",
        help="cProfile repeat K's turn (0: the first Start), click to the next timer tick",
    )
    parser.add_argument(
        "--points",
        type=int,
        default=0,
        help="let each run train this many steps (logging every 10), then stop it: it saves "
        "and finishes, leaving the plots as a finished run does; 0: cancel it after the window",
    )
    parser.add_argument("--events", action="store_true", help="GUI CPU per Qt event in the turn")
    parser.add_argument(
        "--attribute", action="store_true", help="gui_stall's report of the stalls over 30 ms"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = Path(tempfile.mkdtemp(prefix="studio-start-turn-"))
    os.environ["STUDIO_HOME"] = str(home)
    from PySide6.QtCore import QTimer

    from studio.qt import engine_thread

    if args.gui_turn_cap_ms is not None:
        engine_thread.GUI_TURN_CAP_S = args.gui_turn_cap_ms / 1000
    opened = open_training_window(args, home)
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000)
    if isinstance(opened, int):
        return opened
    _app, window = opened
    panel = window.train_panel
    panel.options_form.set_values(
        {"steps": 100_000, "batch_size": 32, "sample_every": 1000, "log_every": 10}
    )
    run_loop_until(lambda: False, 1.0)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"switch interval {sys.getswitchinterval() * 1000:.1f} ms, GUI-turn cap "
        f"{engine_thread.GUI_TURN_CAP_S * 1000:.0f} ms"
    )
    print("repeat  at ms  late ms  GUI CPU: start() + rest  run-wait  off-core")
    native = threading.get_native_id()
    rows: list[float] = []  # the click's own turn
    rows2: list[float] = []  # the worst later gap in the window
    off: list[tuple[float, float]] = []  # GUI blocked off-core (the GIL): sum, max per repeat
    for k in range(args.repeats):
        probe = _WaitProbe(native)
        spy = _EventSpy.install() if args.events else None
        clicked: dict[str, float] = {}
        profiler = cProfile.Profile() if args.profile == k else None

        def click(clicked=clicked, profiler=profiler, probe=probe) -> None:
            clicked["t"] = time.perf_counter()
            clicked["cpu"] = time.thread_time()
            if profiler is not None:
                profiler.enable()
                probe.on_tick = profiler.disable  # the whole turn, its repaint included
            panel.start()
            clicked["start_cpu"] = time.thread_time() - clicked["cpu"]

        watch = StallAttributor(probe) if args.attribute else None
        probe.start()
        if watch is not None:
            watch.start()
        run_loop_until(lambda: False, 0.3)
        QTimer.singleShot(0, click)
        run_loop_until(lambda: False, args.window_ms / 1000)
        probe.stop()
        if watch is not None:
            watch.stop()
            watch.report(top=3)
        if spy is not None:
            spy.remove()
        t = clicked["t"]
        # Every gap from the click's turn on that is over --show-ms, with what filled it.
        after = [i for i, at in enumerate(probe.times) if at > t]
        first = after[0]
        rows.append(probe.lateness[first])
        rows2.append(max(probe.lateness[first + 1 :], default=0.0))
        blocked = [
            (probe.times[i] - probe.times[i - 1]) * 1000
            - probe.cpu_ms[i]
            - probe.wait_ms[i]
            - probe.interval * 1000
            for i in after
        ]
        off.append((sum(b for b in blocked if b > 1.0), max(blocked)))
        for i in after:
            late = probe.lateness[i]
            if i != first and late < args.show_ms:
                continue
            gui_ms = probe.cpu_ms[i]
            span_ms = (probe.times[i] - probe.times[i - 1]) * 1000
            wait_ms = probe.wait_ms[i]
            start_ms = clicked["start_cpu"] * 1000 if i == first else 0.0
            print(
                f"{k:>6}  {(probe.times[i] - t) * 1000:6.0f}  {late:7.1f}  {gui_ms:5.1f}: "
                f"{start_ms:5.1f} + {gui_ms - start_ms:5.1f}  {wait_ms:8.1f}  "
                f"{span_ms - gui_ms - wait_ms:8.1f}"
            )
            if spy is not None:
                print("        " + _event_costs(spy, probe.times[i - 1], probe.times[i]))
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        job = panel._job
        if job is not None and args.points:
            run_loop_until(lambda: (panel.view.plot.last_step() or 0) >= args.points, 300)
            job.token.stop()
        elif job is not None:
            job.token.cancel()
        run_loop_until(lambda: panel._job is None, 60)
        run_loop_until(lambda: False, 0.5)
    print(
        f"click turn ms: first Start {rows[0]:.1f}, later Starts max "
        f"{max(rows[1:], default=0):.1f}; worst gap after it: "
        + ", ".join(f"{x:.1f}" for x in rows2)
    )
    print(
        "GUI thread blocked off a core (GIL) in the window, sum / max ms: "
        + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in off)
    )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
