"""The "Overlay runs…" dialog: tick other runs to draw their metrics beside this one's.

The list of runs is read on a worker thread (it opens every run's config and checkpoints), so
the dialog opens at once and fills in when the list arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

PATH_ROLE = Qt.ItemDataRole.UserRole


class OverlayPicker(QDialog):
    """Checkable list of runs; ``chosen()`` is what was ticked when OK was pressed."""

    def __init__(self, ticked: Iterable[Path] = (), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Overlay runs")
        self._ticked = {Path(p) for p in ticked}
        self.hint = QLabel("Looking for runs…")
        self.hint.setObjectName("hint")
        self.hint.setWordWrap(True)
        self.runs = QListWidget()
        self.runs.setMinimumSize(420, 260)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.hint)
        layout.addWidget(self.runs, 1)
        layout.addWidget(buttons)

    def set_runs(self, summaries: Iterable[Any], exclude: Path | None = None) -> None:
        """Fill the list from ``list_runs`` summaries (``path``, ``family``, ``step``, ``steps``)."""
        self.runs.clear()
        for summary in summaries:
            path = Path(summary.path)
            if exclude is not None and path == Path(exclude):
                continue
            item = QListWidgetItem(
                f"{path.name}    {summary.family}, step {summary.step:,} / {summary.steps:,}"
            )
            item.setData(PATH_ROLE, str(path))
            item.setToolTip(str(path))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = path in self._ticked
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.runs.addItem(item)
        count = self.runs.count()
        self.hint.setText(
            "Tick runs to draw their metrics (dashed) on these plots; a run that is still "
            "training keeps adding to its curves."
            if count
            else "No other runs found in the runs folder."
        )

    def show_error(self, text: str) -> None:
        self.hint.setText(text)

    def set_checked(self, path: Path, checked: bool = True) -> None:
        for i in range(self.runs.count()):
            item = self.runs.item(i)
            if Path(item.data(PATH_ROLE)) == Path(path):
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def chosen(self) -> list[Path]:
        out = []
        for i in range(self.runs.count()):
            item = self.runs.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(Path(item.data(PATH_ROLE)))
        return out
