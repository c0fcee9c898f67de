"""The results strip: thumbnails of the images a generation made, and Send to canvas."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.qt.canvas.jobs import THUMB_SIZE
from studio.qt.imaging import numpy_to_qimage
from studio.qt.prompt.jobs import PromptResult


class ResultsStrip(QWidget):
    """``image_chosen(image)`` when a thumbnail is selected; ``send_requested(image, name)``
    on Send to canvas or a double-click."""

    image_chosen = Signal(object)
    send_requested = Signal(object, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: PromptResult | None = None
        self.can_send = False
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setFlow(QListView.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        self.list.setFixedHeight(THUMB_SIZE + 56)  # the icon, its caption, a scroll bar
        self.list.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setSpacing(4)
        self.list.currentRowChanged.connect(self._on_row_changed)
        self.list.itemDoubleClicked.connect(lambda _item: self.send_current())
        self.send_button = QPushButton("Send to canvas")
        self.send_button.setToolTip(
            "Open the selected image on the Canvas (double-click works too)"
        )
        self.send_button.clicked.connect(self.send_current)
        buttons = QVBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.send_button)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.list, 1)
        row.addLayout(buttons)
        self._update()

    def set_result(self, result: PromptResult) -> None:
        """Show ``result``'s thumbnails (replacing any) and select the first."""
        self.result = result
        self.list.blockSignals(True)
        self.list.clear()
        for i, (thumb, seed) in enumerate(zip(result.thumbnails, result.seeds)):
            item = QListWidgetItem(QIcon(QPixmap.fromImage(numpy_to_qimage(thumb))), str(seed))
            item.setToolTip(f"Image {i + 1}, seed {seed}: double-click to open it on the Canvas")
            self.list.addItem(item)
        self.list.blockSignals(False)
        if result.images:
            self.list.setCurrentRow(0)
        self._update()

    def count(self) -> int:
        return self.list.count()

    def choose(self, row: int) -> None:
        self.list.setCurrentRow(row)

    def current_image(self) -> np.ndarray | None:
        row, result = self.list.currentRow(), self.result
        if result is None or not 0 <= row < len(result.images):
            return None
        return result.images[row]

    def send_current(self) -> None:
        image = self.current_image()
        if image is not None and self.can_send and self.result is not None:
            self.send_requested.emit(image, f"Prompt {self.result.seeds[self.list.currentRow()]}")

    def set_can_send(self, can: bool) -> None:
        self.can_send = can
        self._update()

    def _on_row_changed(self, _row: int) -> None:
        image = self.current_image()
        if image is not None:
            self.image_chosen.emit(image)
        self._update()

    def _update(self) -> None:
        self.send_button.setEnabled(self.can_send and self.current_image() is not None)
