"""Encode your own image: the picture beside its reconstruction, and how close it came.

VAEs encode, flows invert exactly, GANs project (an optimisation, with a progress bar and
Cancel). The result becomes the latent the sliders edit.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.qt.widgets import ImageView


def describe_error(mse: float, method: str) -> str:
    """“MSE 0.0123 · PSNR 19.1 dB · the posterior mean”."""
    db = math.inf if mse <= 0 else -10 * math.log10(mse)
    psnr = "exact" if math.isinf(db) else f"PSNR {db:.1f} dB"
    return f"MSE {mse:.4f} · {psnr} · {method}"


def fit_note(source_shape: tuple[int, int], resolution: int) -> str:
    """What the model's input did to an image of ``(height, width)``: "" when nothing."""
    h, w = source_shape
    if h <= 0 or w <= 0:
        return ""
    if h != w:
        return (
            f"Centre-cropped to square and resized to {resolution} px "
            f"(the image is {w}x{h}; the model sees {resolution}x{resolution})."
        )
    if h != resolution:
        return f"Resized from {w}x{h} to {resolution} px (the model's size)."
    return ""


class EncodePanel(QWidget):
    """Open (or drop) an image; see it beside its reconstruction with the error."""

    open_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.open_button = QPushButton("Open image…")
        self.open_button.setObjectName("primary")
        self.open_button.clicked.connect(self.open_requested)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(10, 5000)
        self.steps_spin.setValue(300)
        self.steps_spin.setSingleStep(50)
        self.steps_spin.setToolTip("Adam steps on z: more is closer, and slower")
        self.steps_row = QWidget()
        form = QFormLayout(self.steps_row)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Projection steps", self.steps_spin)
        # A layered latent (one per decoder layer): project into one shared latent or one each
        self.per_layer_combo = QComboBox()
        self.per_layer_combo.addItem("One latent for every layer (w)", False)
        self.per_layer_combo.addItem("A latent per layer (w+)", True)
        self.per_layer_combo.setToolTip(
            "A latent per layer matches your image more closely; one shared latent stays "
            "closer to what the model draws, so edits look more natural"
        )
        form.addRow("Project into", self.per_layer_combo)
        self._form = form
        self.set_layered(False)
        self.method_label = QLabel("")
        self.method_label.setObjectName("hint")
        self.method_label.setWordWrap(True)

        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_requested)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)

        self.input_view = ImageView("Your image")
        self.recon_view = ImageView("Its reconstruction")
        for view in (self.input_view, self.recon_view):
            view.setMinimumSize(120, 120)
        grid = QGridLayout()
        for col, text in enumerate(("Your image", "Reconstruction")):
            caption = QLabel(text)
            caption.setObjectName("caption")
            grid.addWidget(caption, 0, col)
        grid.addWidget(self.input_view, 1, 0)
        grid.addWidget(self.recon_view, 1, 1)
        self.error_label = QLabel("")
        self.error_label.setObjectName("status")
        self.error_label.setWordWrap(True)
        self.fit_label = QLabel("")
        self.fit_label.setObjectName("hint")
        self.fit_label.setWordWrap(True)
        self.fit_label.hide()

        layout = QVBoxLayout(self)
        layout.addWidget(self.open_button)
        layout.addWidget(self.method_label)
        layout.addWidget(self.steps_row)
        layout.addLayout(progress_row)
        layout.addLayout(grid, 1)
        layout.addWidget(self.error_label)
        layout.addWidget(self.fit_label)
        self.set_busy(False)

    def set_method(self, can_encode: bool, method: str) -> None:
        """Say how this model finds an image's latent; the steps only matter to projection."""
        self.steps_row.setVisible(not can_encode)
        if can_encode:
            self.method_label.setText(
                f"The latent is {method}. Drop an image onto the explorer, or open one."
            )
        else:
            self.method_label.setText(
                "This GAN has no encoder: the latent is found by projection, an optimisation "
                "that matches the generated image to yours (a few seconds). Drop an image onto "
                "the explorer, or open one."
            )

    def set_layered(self, layered: bool) -> None:
        """Offer the choice of w or w+ projection (a layered latent without an encoder)."""
        self._form.setRowVisible(self.per_layer_combo, layered)

    def per_layer(self) -> bool:
        """Project into a latent per layer (w+)?"""
        return bool(self.per_layer_combo.currentData()) and self._form.isRowVisible(
            self.per_layer_combo
        )

    def set_busy(self, busy: bool, total: int | None = None) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.open_button.setEnabled(not busy)
        if busy:
            self.progress.setRange(0, total or 0)
            self.progress.setValue(0)

    def set_progress(self, step: int, total: int | None, mse: float | None) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(step)
        if mse is not None:
            self.progress.setFormat(f"%v / %m · MSE {mse:.4f}")

    def show_result(
        self,
        target: np.ndarray,
        reconstruction: np.ndarray,
        mse: float,
        method: str,
        note: str = "",
    ) -> None:
        """``note``: what fitting the image to the model did to it (see :func:`fit_note`)."""
        self.input_view.set_image(target)
        self.recon_view.set_image(reconstruction)
        self.error_label.setText(describe_error(mse, method))
        self.fit_label.setText(note)
        self.fit_label.setVisible(bool(note))
