"""The explorer's Interpolate and Arithmetic tools: views over the tray's kept latents.

They hold no latent math; they say what the user asked for and show what came back.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.core.imaging import make_grid
from studio.qt.latent.items import ItemPicker, ItemTray
from studio.qt.widgets import ImageView

MODES = (("Spherical (slerp)", "spherical"), ("Linear", "linear"))
ROW = 4  # frames per row on screen


def _hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("hint")
    label.setWordWrap(True)
    return label


class InterpolatePanel(QWidget):
    """Pick A and B, a frame count and a path; see the strip; save it as PNG, GIF or WebP."""

    make_requested = Signal()
    export_requested = Signal(str)  # "png" or "animation"

    def __init__(self, tray: ItemTray, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pick_a = ItemPicker(tray, 0)
        self.pick_b = ItemPicker(tray, 1)
        self.frames_spin = QSpinBox()
        self.frames_spin.setRange(2, 32)
        self.frames_spin.setValue(8)
        self.mode_combo = QComboBox()
        for text, mode in MODES:
            self.mode_combo.addItem(text, mode)
        self.mode_combo.setToolTip(
            "Spherical keeps the latent's typical length along the way, so the middle frames "
            "stay as sharp as the ends; linear is the straight line"
        )
        form = QFormLayout()
        form.addRow("From", self.pick_a)
        form.addRow("To", self.pick_b)
        form.addRow("Frames", self.frames_spin)
        form.addRow("Path", self.mode_combo)
        self.make_button = QPushButton("Make strip")
        self.make_button.setObjectName("primary")
        self.make_button.clicked.connect(self.make_requested)
        self.png_button = QPushButton("Save PNG strip…")
        self.anim_button = QPushButton("Save GIF / WebP…")
        self.png_button.clicked.connect(lambda: self.export_requested.emit("png"))
        self.anim_button.clicked.connect(lambda: self.export_requested.emit("animation"))
        self.strip_caption = QLabel("")
        self.strip_caption.setObjectName("caption")
        self.strip_caption.setWordWrap(True)
        self.strip_view = ImageView("The frames appear here.")
        self.strip_view.setMinimumSize(160, 60)
        self.hint = _hint("Keep two latents first (Keep, or encode an image).")
        buttons = QHBoxLayout()
        buttons.addWidget(self.png_button)
        buttons.addWidget(self.anim_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.hint)
        layout.addWidget(self.make_button)
        layout.addWidget(self.strip_caption)
        layout.addWidget(self.strip_view, 1)
        layout.addLayout(buttons)
        self.frames: np.ndarray | None = None
        tray.items_changed.connect(self._update)
        self._tray = tray
        self._update()

    def mode(self) -> str:
        return str(self.mode_combo.currentData())

    def set_frames(self, frames: np.ndarray | None, caption: str = "") -> None:
        """Show ``frames`` (N x H x W x 3) in reading order, four to a row so each frame
        stays large in a narrow panel (the exports are one row)."""
        self.frames = frames
        grid = None if frames is None else make_grid(frames, nrow=min(len(frames), ROW))
        self.strip_view.set_image(grid)
        self.strip_caption.setText(caption)
        self._update()

    def _update(self) -> None:
        enough = len(self._tray.items()) >= 2
        self.hint.setVisible(not enough)
        self.make_button.setEnabled(enough)
        has = self.frames is not None
        self.png_button.setEnabled(has)
        self.anim_button.setEnabled(has)


class ArithmeticPanel(QWidget):
    """A − B + C on three kept latents; the result becomes the edited latent."""

    compute_requested = Signal()

    def __init__(self, tray: ItemTray, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pick_a = ItemPicker(tray, 0)
        self.pick_b = ItemPicker(tray, 1)
        self.pick_c = ItemPicker(tray, 2)
        form = QFormLayout()
        form.addRow("A", self.pick_a)
        form.addRow("− B", self.pick_b)
        form.addRow("+ C", self.pick_c)
        self.compute_button = QPushButton("A − B + C")
        self.compute_button.setObjectName("primary")
        self.compute_button.clicked.connect(self.compute_requested)
        self.result_view = ImageView("The result appears here and in the main view.")
        self.hint = _hint(
            "“A, without what B has, with what C has”: for example a sample with glasses, "
            "minus one without, plus a third face. Keep three latents first."
        )
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.hint)
        layout.addWidget(self.compute_button)
        layout.addWidget(self.result_view, 1)
        self._tray = tray
        tray.items_changed.connect(self._update)
        self._update()

    def _update(self) -> None:
        self.compute_button.setEnabled(len(self._tray.items()) >= 3)
