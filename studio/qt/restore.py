"""Putting the window back as it was: splitter positions, and each workspace's last choice.

The main window saves these when it closes and gives them back when it is built again. Only
cheap checks run on the GUI thread (whether a remembered file or folder still exists: one
``stat`` each); what takes long (a folder scan, opening an image or a run) is a job, as always.
Something remembered that is gone is reported where it would have appeared, never an error.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QSplitter, QWidget

from studio.qt.settings import AppSettings


def _splitters(pages: dict[str, QWidget]) -> list[tuple[str, QSplitter]]:
    found = []
    for name, page in pages.items():
        for i, splitter in enumerate(page.findChildren(QSplitter)):
            found.append((f"{name}/{i}-{splitter.count()}", splitter))
    return found


def save_splitters(settings: AppSettings, pages: dict[str, QWidget]) -> None:
    """Keep every splitter's sizes, keyed by workspace, order and pane count."""
    for key, splitter in _splitters(pages):
        settings.set_splitter_state(key, splitter.saveState())


def restore_splitters(settings: AppSettings, pages: dict[str, QWidget]) -> int:
    """Give back the sizes saved for the splitters that exist now; return how many."""
    restored = 0
    for key, splitter in _splitters(pages):
        state = settings.splitter_state(key)
        if state is not None and splitter.restoreState(state):
            restored += 1
    return restored


def existing_runs(runs: list[str]) -> tuple[list[Path], list[str]]:
    """The remembered runs that are still run folders, and the names of those that are gone."""
    kept, gone = [], []
    for run in runs:
        path = Path(run)
        if (path / "config.json").is_file():
            kept.append(path)
        else:
            gone.append(path.name)
    return kept, gone
