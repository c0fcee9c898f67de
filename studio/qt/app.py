"""Start the desktop app. Importing this module is light: no torch, no engine, no window yet."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from studio import resources

ORGANIZATION = "Studio"
APPLICATION = "Studio"


def create_application(argv: Sequence[str] = ()) -> QApplication:
    """The QApplication (an existing one is reused), named so QSettings finds our settings."""
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "studio", *argv])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setWindowIcon(app_icon())
    app.setDesktopFileName("studio")  # resources/studio.desktop: its icon on Wayland docks
    no_tqdm_monitor()
    quiet_known_warnings()
    return app  # type: ignore[return-value]


def app_icon() -> QIcon:
    """The icon set of resources/icons (every size and the SVG), for windows and the dock."""
    icon = QIcon()
    for file in resources.icon_paths():
        icon.addFile(str(file))
    return icon


# Third-party warnings every launch printed to the console that ask nothing of the user:
# (logger name, text in the message). transformers warns for each image processor diffusers
# imports that it "requires torchvision (not installed)" and falls back to its PIL version,
# which is the one the studio uses anyway.
KNOWN_WARNINGS = (("transformers.utils.import_utils", "requires torchvision"),)


class _DropKnown(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_known_warnings() -> None:
    """Silence the known third-party warnings (``KNOWN_WARNINGS``) and only those: a
    filter on each logger drops the messages with that text; every other warning shows."""
    for name, text in KNOWN_WARNINGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) and f.text == text for f in logger.filters):
            logger.addFilter(_DropKnown(text))


def no_tqdm_monitor() -> None:
    """Turn off tqdm's monitor thread for the whole process.

    Libraries the engine uses (diffusers, transformers, huggingface_hub) draw tqdm bars; the
    first bar starts a monitor thread that wakes every 10 s and, beside Qt, has crashed
    PySide6 applications at exit (magicgui does the same). The bars themselves are switched
    off where the pipelines are loaded; this catches any other bar.
    """
    try:
        import tqdm
    except ImportError:  # tqdm comes with huggingface_hub; without it there is no bar at all
        return
    tqdm.tqdm.monitor_interval = 0


def _close_without_asking(window: Any) -> None:
    window.ask_before_quitting = False  # the terminal or a script asked: no question
    window.close()


def run_app(argv: Sequence[str] | None = None, project: str | None = None) -> int:
    """Show the main window (with ``project`` opened, when given: ``studio open PROJECT``)
    and run the event loop; returns the exit code."""
    app = create_application(list(argv or []))
    from studio.qt.main_window import MainWindow
    from studio.qt.theme import apply_theme

    apply_theme(app)
    window = MainWindow()
    window.show()
    if project:
        window.projects.open(project)
    # Ctrl-C in the terminal closes the window (which stops training gracefully). Python
    # handles signals only between bytecodes, so a timer lets the interpreter run now and then.
    signal.signal(signal.SIGINT, lambda *_: _close_without_asking(window))
    tick = QTimer()
    tick.timeout.connect(lambda: None)
    tick.start(250)
    quit_after = os.environ.get("STUDIO_QUIT_AFTER_MS")  # packaging smoke tests
    if quit_after:
        QTimer.singleShot(int(quit_after), lambda: _close_without_asking(window))
    return app.exec()
