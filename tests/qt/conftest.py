"""Fixtures for the window tests: isolated QSettings, no dangling engine threads, datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QSettings
from qt_steps import configure_tiny_dcgan, load_dataset

from studio.core import gcpolicy
from studio.qt.engine_thread import JobRunner, live_engine_threads
from studio.qt.settings import AppSettings

TEST_ORG = "StudioTests"
TEST_APP = "StudioQtTests"


@pytest.fixture(autouse=True)
def settings_dir(qapp, tmp_path: Path) -> Iterator[Path]:
    """Every QSettings() of the test reads and writes INI files under a temp folder.

    Without this a test would read, and overwrite, the developer's real window settings.
    """
    folder = tmp_path / "qsettings"
    old_org, old_app = qapp.organizationName(), qapp.applicationName()
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.IniFormat, scope, str(folder))
    qapp.setOrganizationName(TEST_ORG)
    qapp.setApplicationName(TEST_APP)
    yield folder
    qapp.setOrganizationName(old_org)
    qapp.setApplicationName(old_app)


@pytest.fixture
def runner(qapp) -> Iterator[JobRunner]:
    """A JobRunner of its own (its engine thread), shut down after the test."""
    runner = JobRunner()
    yield runner
    assert runner.shutdown(10_000), "the engine thread did not stop"


@pytest.fixture
def app_settings(settings_dir: Path) -> AppSettings:
    return AppSettings()


@pytest.fixture(autouse=True)
def no_dangling_engine_threads() -> Iterator[None]:
    """Fail a test that leaves an engine thread running (after qtbot closed its widgets)."""
    yield
    running = [t for t in live_engine_threads() if t.isRunning()]
    if running:
        for thread in running:  # stop them anyway, so one leak does not cascade
            thread.shutdown(10_000, grace_ms=5_000)
        pytest.fail(f"the test left {len(running)} engine thread(s) running")
    if gcpolicy.owner() is not None:  # a JobRunner never shut down keeps the collector here
        while gcpolicy.owner() is not None:
            gcpolicy.disown()
        pytest.fail(
            "the test left garbage collection owned by the GUI thread (a JobRunner not shut down)"
        )


def _write_pngs(folder: Path, n: int, size: int, classes: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"class_{i % classes}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i:04d}.png")


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """32 labelled 16 px PNGs in two class folders, plus two files that must be skipped."""
    folder = tmp_path / "tiny"
    try:
        from helpers import make_tiny_dataset
    except ImportError:  # the shared helper is optional; write the images ourselves
        _write_pngs(folder, 32, 16, 2)
    else:
        make_tiny_dataset(folder, n=32, size=16, classes=2)
    (folder / "broken.png").write_bytes(b"this is not a png")
    (folder / "notes.md").write_text("not a picture\n", encoding="utf-8")
    return folder


@pytest.fixture
def empty_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


# -- the main window -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def quit_without_asking(monkeypatch) -> None:
    """A window closed mid-training (by a test or by pytest-qt's teardown) quits without its
    question (a modal box nobody answers offscreen); a test of the question turns it back on."""
    monkeypatch.setattr("studio.qt.main_window.MainWindow.ask_before_quitting", False)


@pytest.fixture
def window(qtbot, app_settings: AppSettings):
    """A shown MainWindow whose model list has loaded (torch imported on the engine thread)."""
    from studio.qt.main_window import MainWindow

    win = MainWindow(app_settings)
    qtbot.addWidget(win)  # closed by pytest-qt at teardown, which stops the engine thread
    win.close_timeout_ms = 20_000
    win.show()
    qtbot.waitUntil(win.train_panel.families_loaded, timeout=60_000)
    return win


@pytest.fixture
def trainable_window(qtbot, window, tiny_dataset: Path):
    """The window with the tiny dataset chosen and a tiny DCGAN set up, on the Train page."""
    assert load_dataset(qtbot, window, tiny_dataset) == 32
    window.show_workspace(window.TRAIN)
    configure_tiny_dcgan(window, steps=100_000)
    return window
