"""The explorer's Style mixing tool, for a layered latent (one latent per decoder layer):
the coarse layers of one kept latent with the fine layers of another, at a crossover layer.

It holds no latent math; it says what the user asked for and shows what came back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from studio.qt.latent.items import ItemPicker, ItemTray
from studio.qt.widgets import ImageView


class MixPanel(QWidget):
    """Pick A (layout) and B (colour), a crossover layer; see the mix; save the grid of all
    kept latents' mixes."""

    mix_requested = Signal()
    edit_requested = Signal()
    export_requested = Signal()

    def __init__(self, tray: ItemTray, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pick_a = ItemPicker(tray, 0)
        self.pick_b = ItemPicker(tray, 1)
        self.pick_a.setToolTip("Its coarse layers (below the crossover) give the layout and pose")
        self.pick_b.setToolTip("Its fine layers (from the crossover up) give colour and texture")
        self.crossover = QSlider(Qt.Orientation.Horizontal)
        self.crossover.setAccessibleName("Crossover layer")
        self.crossover.setToolTip(
            "Layers below this come from A, the rest from B: 0 is B as drawn, the last is A"
        )
        self.crossover_label = QLabel("")
        self.crossover_label.setObjectName("caption")
        self.crossover_label.setWordWrap(True)
        self.crossover.valueChanged.connect(self._on_crossover)
        self.crossover.sliderReleased.connect(self._request)
        form = QFormLayout()
        form.addRow("Layout from (A)", self.pick_a)
        form.addRow("Colour from (B)", self.pick_b)
        form.addRow("Crossover", self.crossover)
        self.mix_button = QPushButton("Mix")
        self.mix_button.setObjectName("primary")
        self.mix_button.clicked.connect(self.mix_requested)
        self.edit_button = QPushButton("Edit this mix")
        self.edit_button.setToolTip("Put the mix under the sliders (Keep it from there)")
        self.edit_button.clicked.connect(self.edit_requested)
        self.export_button = QPushButton("Save grid…")
        self.export_button.setToolTip(
            "Every kept latent against every other, as a PNG: row i takes its layout from kept "
            "latent i, column j its colour from kept latent j; the originals along the top "
            "and the left"
        )
        self.export_button.clicked.connect(self.export_requested)
        self.result_view = ImageView("The mix appears here.")
        self.result_view.setMinimumSize(160, 160)
        self.result_caption = QLabel("")
        self.result_caption.setObjectName("caption")
        self.result_caption.setWordWrap(True)
        self.hint = QLabel(
            "Keep two latents or more first. Training mixed two styles per image, so the "
            "early layers learnt the layout and the late ones colour and texture."
        )
        self.hint.setObjectName("hint")
        self.hint.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.mix_button)
        buttons.addWidget(self.edit_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.crossover_label)
        layout.addWidget(self.hint)
        layout.addLayout(buttons)
        layout.addWidget(self.result_caption)
        layout.addWidget(self.result_view, 1)
        layout.addWidget(self.export_button)
        self.mixed: tuple[np.ndarray, np.ndarray] | None = None  # (z, image) on show
        self._groups: tuple[Any, ...] = ()
        self._tray = tray
        tray.items_changed.connect(self._update)
        self.set_layers(1, ())

    def set_layers(self, layers: int, groups: Sequence[Any]) -> None:
        """The open model's layer count and groups; the crossover starts where the coarse
        group ends (the paper's "coarse styles from A")."""
        self._groups = tuple(groups)
        self.crossover.blockSignals(True)
        self.crossover.setRange(0, max(1, layers))
        self.crossover.setValue(self._groups[0].stop if self._groups else max(1, layers) // 2)
        self.crossover.blockSignals(False)
        self.set_result(None)
        self._on_crossover(self.crossover.value())

    def set_result(self, result: tuple[np.ndarray, np.ndarray] | None, caption: str = "") -> None:
        self.mixed = result
        self.result_view.set_image(None if result is None else result[1])
        self.result_caption.setText(caption)
        self._update()

    def _on_crossover(self, value: int) -> None:
        layers = self.crossover.maximum()
        inside = [g.name.lower() for g in self._groups if g.stop <= value]
        said = f" ({', '.join(inside)})" if inside else ""
        self.crossover_label.setText(
            f"Layers 1–{value} from A{said}, {value + 1}–{layers} from B"
            if 0 < value < layers
            else ("Every layer from B" if value == 0 else "Every layer from A")
        )
        if not self.crossover.isSliderDown():
            self._request()

    def _request(self) -> None:
        if self.mix_button.isEnabled() and self.isVisible():
            self.mix_requested.emit()

    def _update(self) -> None:
        enough = len(self._tray.items()) >= 2
        self.hint.setVisible(not enough)
        self.mix_button.setEnabled(enough)
        self.export_button.setEnabled(enough)
        self.edit_button.setEnabled(self.mixed is not None)
