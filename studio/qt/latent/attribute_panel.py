"""Make a slider: mark random samples as having an attribute (+) or not (−), then fit.

A click cycles a tile through unmarked → + → − → unmarked. "New samples" draws another page;
the marks already made are kept in the pools, so a slider can be fitted from several pages.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.qt.latent.items import thumbnail

COLUMNS = 4
TILE = 72
MARKS = {0: "", 1: "pos", -1: "neg"}
STYLE = """
QToolButton#markTile { border: 3px solid transparent; border-radius: 4px; padding: 1px; }
QToolButton#markTile[mark="pos"] { border-color: #3fb950; }
QToolButton#markTile[mark="neg"] { border-color: #f85149; }
"""


class MarkTile(QToolButton):
    """A sample's thumbnail that cycles through no mark, + and −."""

    mark_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("markTile")
        self.setIconSize(QSize(TILE, TILE))
        self.setToolTip("Click: has the attribute (+), click again: has not (−), again: unmarked")
        self.mark = 0
        self.clicked.connect(self.cycle)

    def set_mark(self, mark: int) -> None:
        self.mark = mark
        self.setProperty("mark", MARKS[mark])
        self.setText({1: "+", -1: "−"}.get(mark, ""))
        self.style().unpolish(self)
        self.style().polish(self)
        self.mark_changed.emit()

    def cycle(self) -> None:
        self.set_mark({0: 1, 1: -1, -1: 0}[self.mark])


class AttributePanel(QWidget):
    """The sample grid with marks, the slider's name, and Fit."""

    samples_requested = Signal()
    fit_requested = Signal()

    def __init__(self, n_tiles: int = 16, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setStyleSheet(STYLE)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("Slider name, e.g. “round”, “dark”")
        self.samples_button = QPushButton("New samples")
        self.samples_button.setToolTip("Draw another page; the marks made so far are kept")
        self.samples_button.clicked.connect(self.samples_requested)
        self.fit_button = QPushButton("Fit slider")
        self.fit_button.setObjectName("primary")
        self.fit_button.clicked.connect(self.fit_requested)
        self.count_label = QLabel("")
        self.count_label.setObjectName("status")
        self.result_label = QLabel("")
        self.result_label.setObjectName("hint")
        self.result_label.setWordWrap(True)
        hint = QLabel(
            "Mark samples that have the attribute (+, green) and some that have not (−, red); "
            "a linear classifier then finds the direction between them."
        )
        hint.setObjectName("hint")
        hint.setWordWrap(True)

        grid = QGridLayout()
        grid.setSpacing(4)
        self.tiles: list[MarkTile] = []
        for i in range(n_tiles):
            tile = MarkTile()
            tile.mark_changed.connect(self._update)
            grid.addWidget(tile, i // COLUMNS, i % COLUMNS)
            self.tiles.append(tile)
        top = QHBoxLayout()
        top.addWidget(self.name_edit, 1)
        top.addWidget(self.samples_button)
        bottom = QHBoxLayout()
        bottom.addWidget(self.count_label, 1)
        bottom.addWidget(self.fit_button)
        layout = QVBoxLayout(self)
        layout.addWidget(hint)
        layout.addLayout(top)
        layout.addLayout(grid)
        layout.addLayout(bottom)
        layout.addWidget(self.result_label)
        layout.addStretch(1)

        self._z: np.ndarray | None = None
        self._pos_pool: list[np.ndarray] = []
        self._neg_pool: list[np.ndarray] = []
        self.name_edit.textChanged.connect(self._update)
        self._update()

    def set_samples(self, z: np.ndarray, images: np.ndarray) -> None:
        """Show a new page; the current page's marks move into the pools first."""
        self._pool_marks()
        self._z = np.asarray(z, np.float32)
        for i, tile in enumerate(self.tiles):
            has = i < len(images)
            tile.setIcon(QIcon(thumbnail(images[i], TILE)) if has else QIcon())
            tile.setEnabled(has)
            tile.set_mark(0)
        self._update()

    def positives(self) -> np.ndarray:
        return self._collect(1, self._pos_pool)

    def negatives(self) -> np.ndarray:
        return self._collect(-1, self._neg_pool)

    def clear_marks(self) -> None:
        self._pos_pool, self._neg_pool = [], []
        for tile in self.tiles:
            tile.set_mark(0)

    def slider_name(self) -> str:
        return self.name_edit.text().strip()

    def _collect(self, mark: int, pool: list[np.ndarray]) -> np.ndarray:
        rows = list(pool)
        if self._z is not None:
            rows += [
                self._z[i] for i, t in enumerate(self.tiles) if t.mark == mark and i < len(self._z)
            ]
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)

    def _pool_marks(self) -> None:
        if self._z is None:
            return
        for i, tile in enumerate(self.tiles):
            if i < len(self._z) and tile.mark == 1:
                self._pos_pool.append(self._z[i])
            elif i < len(self._z) and tile.mark == -1:
                self._neg_pool.append(self._z[i])

    def _update(self) -> None:
        n_pos, n_neg = len(self.positives()), len(self.negatives())
        self.count_label.setText(f"+ {n_pos} · − {n_neg}")
        self.fit_button.setEnabled(n_pos > 0 and n_neg > 0 and bool(self.slider_name()))
