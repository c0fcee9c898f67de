"""The history panel: past generations as thumbnails; Recall puts their settings back.

The history (PNG files with their settings, and an index) is read on the engine thread
(:func:`studio.qt.prompt.jobs.load_history`); new generations are prepended as they finish,
without reading the disk again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.qt.imaging import numpy_to_qimage
from studio.qt.job_calls import JobCalls
from studio.qt.prompt import jobs

ICON = 88


def describe(metadata: dict[str, Any]) -> str:
    """A tooltip: the prompt and the settings that matter when choosing one to recall."""
    prompt = str(metadata.get("prompt", "")) or "(no prompt)"
    parts = [
        str(metadata.get("mode", "")),
        f"seed {metadata.get('seed', '?')}",
        f"{metadata.get('steps', '?')} steps",
        str(metadata.get("scheduler_label", metadata.get("scheduler", ""))),
        f"guidance {metadata.get('guidance', '?')}",
        f"{metadata.get('width', '?')}x{metadata.get('height', '?')}",
    ]
    model = metadata.get("model_name") or metadata.get("model", "")
    text = f"{prompt}\n{', '.join(p for p in parts if p)}\n{model}"
    negative = metadata.get("negative_prompt")
    return text + (f"\nNegative: {negative}" if negative else "")


class HistoryPanel(QWidget):
    """``recall_requested(metadata)``: the user asked for a past generation's settings."""

    recall_requested = Signal(dict)
    history_loaded = Signal(int)

    def __init__(self, calls: JobCalls, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._calls = calls
        self.loaded = False
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setIconSize(QSize(ICON, ICON))
        self.list.setSpacing(4)
        self.list.setUniformItemSizes(True)
        self.list.itemDoubleClicked.connect(lambda _item: self.recall())
        self.list.currentRowChanged.connect(self._update_buttons)
        self.status = QLabel("No generations yet")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        self.recall_button = QPushButton("Recall")
        self.recall_button.setToolTip(
            "Put this generation's settings back (double-click works too)"
        )
        self.recall_button.clicked.connect(self.recall)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        buttons = QHBoxLayout()
        buttons.addWidget(self.recall_button)
        buttons.addStretch(1)
        buttons.addWidget(self.refresh_button)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.list, 1)
        column.addWidget(self.status)
        column.addLayout(buttons)
        self._update_buttons()

    def refresh(self) -> None:
        self.refresh_button.setEnabled(False)
        self.status.setText("Reading the history…")
        self._calls.submit(
            "Read the history",
            jobs.load_history(),
            self._on_loaded,
            self._on_failed,
            on_end=lambda _o: self.refresh_button.setEnabled(True),
            interactive=True,  # a short file read: between training steps, never after them
        )

    def _on_loaded(self, items: list[jobs.HistoryItem]) -> None:
        self.loaded = True
        self.list.clear()
        for item in items:
            self._add(item.path, item.metadata, item.thumbnail, at_top=False)
        self._update_status()
        self.history_loaded.emit(len(items))

    def _on_failed(self, message: str) -> None:
        self.status.setText(f"The history could not be read: {message}")

    def add_results(self, result: jobs.PromptResult) -> None:
        """Prepend just-finished images (newest first)."""
        paths = result.paths or [""] * len(result.images)
        for path, metadata, thumb in zip(paths, result.metadata, result.thumbnails):
            self._add(path, metadata, thumb, at_top=True)
        self._update_status()

    def _add(
        self, path: str, metadata: dict[str, Any], thumb: np.ndarray | None, *, at_top: bool
    ) -> None:
        item = QListWidgetItem(str(metadata.get("seed", "")))
        if thumb is not None:
            item.setIcon(QIcon(QPixmap.fromImage(numpy_to_qimage(thumb))))
        item.setToolTip(describe(metadata) + (f"\n{path}" if path else ""))
        item.setData(Qt.ItemDataRole.UserRole, metadata)
        item.setData(Qt.ItemDataRole.UserRole + 1, path)
        if at_top:
            self.list.insertItem(0, item)
        else:
            self.list.addItem(item)

    def count(self) -> int:
        return self.list.count()

    def metadata_at(self, row: int) -> dict[str, Any]:
        return dict(self.list.item(row).data(Qt.ItemDataRole.UserRole))

    def recall(self, row: int | None = None) -> None:
        row = self.list.currentRow() if row is None else row
        if 0 <= row < self.list.count():
            self.recall_requested.emit(self.metadata_at(row))

    def _update_status(self) -> None:
        n = self.list.count()
        self.status.setText(
            f"{n} generation{'s' if n != 1 else ''}: double-click one to recall its settings"
            if n
            else "No generations yet"
        )
        self._update_buttons()

    def _update_buttons(self, *_: object) -> None:
        self.recall_button.setEnabled(self.list.currentRow() >= 0)
