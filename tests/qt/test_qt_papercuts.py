"""Papercuts of the Train workspace (issue 16, point 10): counters update one log line in
place, and a launch prints no known third-party warnings."""

from __future__ import annotations

import subprocess
import sys

from studio.core.jobs import Progress
from studio.qt.train_panel import TrainPanel, progress_key


def test_counters_update_one_log_line_in_place(qtbot, runner, app_settings, tmp_path) -> None:
    panel = TrainPanel(runner, app_settings)
    qtbot.addWidget(panel)
    reports = [Progress("scan", i, 3000, message=f"Checking images: {i}/3000") for i in range(20)]
    reports.insert(5, Progress("scan", 5, 3000, message="Skipped 2 files (see the Dataset page)"))
    reports += [Progress("decode", i, 3000, message=f"Decoding images: {i}/3000") for i in (1, 2)]
    reports += [
        Progress("decode", i, 3000, message=f"Decoding images: {i:,}/3,000") for i in (3000,)
    ]
    reports += [
        Progress("train", 0, 100, message="Training DCGAN on cpu"),
        Progress("train", 10, 100, message="Checkpoint saved at step 10"),
        Progress("train", 20, 100, message="Checkpoint saved at step 20"),
    ]
    for start in range(0, len(reports), 4):  # delivered a few at a time, as the engine does
        panel._on_job_events(reports[start : start + 4])
    lines = [line.split("  ", 1)[1] for line in panel.view.log_lines()]
    assert lines == [
        "Checking images: 4/3000",
        "Skipped 2 files (see the Dataset page)",  # a message between counts stays
        "Checking images: 19/3000",
        "Decoding images: 3,000/3,000",
        "Training DCGAN on cpu",
        "Checkpoint saved at step 10",  # training's own lines are never replaced
        "Checkpoint saved at step 20",
    ]
    panel.grab().save(str(tmp_path / "log.png"))
    assert progress_key(Progress("scan", 3, 9, message="Checking images: 3/9")) == (
        "scan: Checking images"
    )
    assert progress_key(Progress("train", 3, 9, message="Steps 3/9")) is None


QUIET_CHECK = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from transformers.utils import logging as tlog
from studio.qt.app import create_application
if sys.argv[1] == "app":
    create_application()
log = tlog.get_logger("transformers.utils.import_utils")
log.warning_once("`CLIPImageProcessor` requires torchvision (not installed); falling back")
log.warning("something else the user should see")
"""


def test_a_launch_prints_no_known_third_party_warnings() -> None:
    def stderr(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", QUIET_CHECK, mode], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "requires torchvision" in stderr("bare")  # what every launch printed
    quiet = stderr("app")
    assert "requires torchvision" not in quiet
    assert "something else the user should see" in quiet  # only the known ones go
