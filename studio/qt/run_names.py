"""Runs by the name the user gave them: "Rename…", and the recent-runs menus' labels.

A run's name is stored as ``name`` in its ``config.json`` (an atomic rewrite of a file the
studio wrote; the folder keeps its name, so paths in settings, overlays and reports stay
valid). The menus read "name — family, dataset, step N" from a small cache that worker
threads fill (reading config.json and the newest checkpoint's step), never the GUI thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QInputDialog, QPushButton, QWidget

from studio.core.errors import StudioError
from studio.qt.canvas.tasks import TaskPool
from studio.qt.engine_jobs import known_family

MAX_NAME = 80


@dataclass(frozen=True)
class RunLabel:
    """What a menu says about one run."""

    path: Path
    name: str
    family: str
    dataset: str
    step: int

    def text(self) -> str:
        spec = known_family(self.family)
        family = spec.display_name if spec is not None else self.family or "unknown model"
        data = f", {self.dataset}" if self.dataset else ""
        return f"{self.name or self.path.name} — {family}{data}, step {self.step:,}"


def clean_name(name: str) -> str:
    return " ".join(str(name).split())[:MAX_NAME]


def label_from_config(path: Path, config: dict, step: int) -> RunLabel:
    train = config.get("train", {}) if isinstance(config.get("train"), dict) else {}
    family = str(config.get("family") or train.get("family") or "")
    data = (config.get("dataset") or {}).get("path") or train.get("data") or ""
    return RunLabel(Path(path), str(config.get("name") or ""), family, Path(str(data)).name, step)


def read_label(path: str | Path) -> RunLabel:
    """Read a run's label (worker thread: file reads)."""
    from studio.engine.checkpoint import latest_checkpoint, read_trainer_state
    from studio.engine.runs import RunFolder

    run = RunFolder(path)
    config = run.read_config()
    step = 0
    latest = latest_checkpoint(run.state_dir)
    if latest is not None:
        try:
            step = int(read_trainer_state(latest)["step"])
        except (StudioError, KeyError, TypeError, ValueError, OSError):
            step = 0
    return label_from_config(run.path, config, step)


def write_name(path: str | Path, name: str) -> RunLabel:
    """Store ``name`` in the run's config.json (worker thread); "" removes it."""
    from studio.engine.runs import RunFolder

    run = RunFolder(path)
    config = run.read_config()
    if not isinstance(config, dict):
        raise StudioError(f"The settings of {run.path.name} cannot be read.")
    name = clean_name(name)
    if name:
        config["name"] = name
    else:
        config.pop("name", None)
    run.write_config(json.loads(json.dumps(config)))
    return read_label(run.path)


class RunLabels(QObject):
    """The labels of the runs the menus list, read on a worker. ``changed`` when any came."""

    changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._labels: dict[str, RunLabel] = {}
        self._pool = TaskPool(self)

    def text(self, path: str | Path) -> str:
        """The run's label, or its folder's name until the label has been read."""
        label = self._labels.get(str(path))
        return label.text() if label is not None else Path(path).name

    def label(self, path: str | Path) -> RunLabel | None:
        return self._labels.get(str(path))

    def put(self, label: RunLabel) -> None:
        self._labels[str(label.path)] = label
        self.changed.emit()

    def refresh(self, paths: list[str]) -> None:
        """Read the labels of ``paths`` again, off the GUI thread."""
        paths = list(paths)

        def read() -> list[RunLabel]:
            found = []
            for p in paths:
                try:
                    found.append(read_label(p))
                except (StudioError, OSError, ValueError):
                    continue  # a moved or damaged run: the menu shows its folder name
            return found

        self._pool.submit(read, self._on_read)

    def rename(self, path: str | Path, name: str, on_failed: Callable[[str], None]) -> None:
        """Store the run's new name (on a worker); ``changed`` follows."""
        self._pool.submit(lambda: write_name(path, name), self.put, on_failed)

    def wait(self, timeout_ms: int = 5_000) -> bool:
        return self._pool.wait(timeout_ms)

    def _on_read(self, labels: list[RunLabel]) -> None:
        for label in labels:
            self._labels[str(label.path)] = label
        self.changed.emit()


_LABELS: RunLabels | None = None


def run_labels() -> RunLabels:
    """The window's one cache (made on first use, on the GUI thread)."""
    global _LABELS
    if _LABELS is None:
        _LABELS = RunLabels()
    return _LABELS


def ask_name(parent: QWidget, current: str) -> str | None:
    """Ask for a run's name; None when cancelled."""
    text, ok = QInputDialog.getText(
        parent,
        "Rename run",
        "Name (shown in the recent-runs menus; the folder keeps its name):",
        text=current,
    )
    return clean_name(text) if ok else None


class RenameButton(QPushButton):
    """*Rename…* for the run ``run_path()`` returns (disabled until one is open).

    ``show(title, error)``: the run's title for its view ("name  (folder)", or the folder's
    name when it has none) after a rename or when it is opened; ``error`` when the name could
    not be stored.
    """

    def __init__(
        self,
        run_path: Callable[[], Path | None],
        show: Callable[[str | None, str | None], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Rename…", parent)
        self._run_path, self._show = run_path, show
        self.setToolTip("Give the open run a name for the recent-runs menus")
        self.setEnabled(False)
        self.clicked.connect(self.rename)
        run_labels().changed.connect(self.show_title)

    def rename(self) -> None:
        """Ask for a name and store it in the run's config.json (on a worker)."""
        path = self._run_path()
        if path is None:
            return
        label = run_labels().label(path)
        name = ask_name(self, label.name if label is not None else "")
        if name is not None:
            run_labels().rename(path, name, lambda message: self._show(None, message))

    def show_title(self) -> None:
        path = self._run_path()
        if path is None:
            return
        label = run_labels().label(path)
        named = label is not None and label.name
        self._show(f"{label.name}  ({path.name})" if named else path.name, None)
