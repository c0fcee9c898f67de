"""The right side of the Train workspace: what a run is doing and has done.

A banner for failures, the status line, the metric plots, the newest sample grid and a log.
It only displays; the panel decides what to show.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSplitter, QVBoxLayout, QWidget

from studio.qt.plot import MetricsPlot
from studio.qt.widgets import Banner, ImageView

LOG_LINES = 5000


class RunView(QWidget):
    """Banner, status line, plots beside the sample grid, and the message log."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.banner = Banner()
        self.run_label = QLabel("No run yet")
        self.run_label.setObjectName("headline")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QLabel("")
        self.status_label.setObjectName("status")
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.plot = MetricsPlot()
        self.grid_caption = QLabel("Samples")
        self.grid_caption.setObjectName("caption")
        self.grid = ImageView("Sample grids appear here while the model trains.")
        grid_box = QWidget()
        grid_layout = QVBoxLayout(grid_box)
        grid_layout.setContentsMargins(0, 0, 0, 0)
        grid_layout.addWidget(self.grid_caption)
        grid_layout.addWidget(self.grid, 1)

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setPlaceholderText("Messages: skipped files, checkpoints, errors.")
        self.log.setObjectName("log")

        # Plots take the full height on the left; the square sample grid and the log share
        # the right column, so neither leaves an empty band under the grid.
        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(grid_box)
        side.addWidget(self.log)
        side.setStretchFactor(0, 3)
        side.setStretchFactor(1, 1)
        side.setSizes([440, 180])
        side.setChildrenCollapsible(False)
        body = QSplitter(Qt.Orientation.Horizontal)
        body.addWidget(self.plot)
        body.addWidget(side)
        body.setStretchFactor(0, 1)
        body.setStretchFactor(1, 1)
        body.setSizes([520, 420])
        body.setChildrenCollapsible(False)
        self.body = body

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.banner)
        layout.addWidget(self.run_label)
        layout.addWidget(self.status_label)
        layout.addWidget(body, 1)

    def clear(self) -> None:
        """Empty everything for a new run."""
        self.banner.clear()
        self.plot.clear()
        self.grid.set_image(None)
        self.grid_caption.setText("Samples")
        self.status_label.clear()
        self.log.clear()

    def set_run_name(self, text: str) -> None:
        self.run_label.setText(text)

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def show_grid(self, image: np.ndarray, step: int | None) -> None:
        self.grid.set_image(image)
        self.grid_caption.setText(f"Samples at step {step:,}" if step is not None else "Samples")

    def add_points(self, points: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        self.plot.add_points(points)

    def log_message(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    def log_lines(self) -> list[str]:
        return self.log.toPlainText().splitlines()

    def show_error(self, text: str) -> None:
        self.banner.show_message(text, "error")

    def show_info(self, text: str) -> None:
        self.banner.show_message(text, "info")
