"""Workspaces hear about their own jobs through :class:`studio.qt.job_calls.JobCalls` only.

A module that connects to a runner's ``job_started``/``job_progress``/``job_events``/
``job_finished`` signals directly has to filter other jobs out by hand ("is this my job?"),
the filters issue 14 removed. Only the runner itself, ``JobCalls`` and the modules that
observe other workspaces' jobs on purpose (listed in ``ALLOWED``) may connect to them.
"""

from __future__ import annotations

import re
from pathlib import Path

QT = Path(__file__).resolve().parents[1] / "studio" / "qt"
# Issue 14: besides the runner and JobCalls, only observers of *other* workspaces' jobs: the
# main window's status bar (every job) and Explore's TrainingEnds (a training run ending, to
# reload its newest weights), which no JobCalls of theirs could hear.
ALLOWED = {"engine_thread.py", "job_calls.py", "main_window.py", "latent/live_weights.py"}
CONNECT = re.compile(r"\.job_(started|progress|events|finished)\s*\.\s*connect\s*\(")


def direct_connections(source: str) -> list[str]:
    """``"line: signal"`` for every direct connection to a job signal in ``source``."""
    return [
        f"{source.count(chr(10), 0, m.start()) + 1}: job_{m.group(1)}"
        for m in CONNECT.finditer(source)
    ]


def test_the_scan_finds_a_direct_connection() -> None:
    source = "x = 1\nrunner.job_finished.connect(self._on_job_finished)\n"
    assert direct_connections(source) == ["2: job_finished"]
    assert direct_connections("self._runner.job_events .connect (f)") == ["1: job_events"]
    assert direct_connections("calls.submit('x', f, on_done=g)") == []


def test_no_workspace_connects_to_the_runners_job_signals() -> None:
    found = []
    for path in sorted(QT.rglob("*.py")):
        rel = path.relative_to(QT).as_posix()
        if rel in ALLOWED:
            continue
        found += [f"studio/qt/{rel}:{hit}" for hit in direct_connections(path.read_text())]
    assert not found, "use studio.qt.job_calls.JobCalls instead of:\n" + "\n".join(found)
