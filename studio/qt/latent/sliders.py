"""The slider column of the explorer: one slider per direction, in standard deviations.

It only shows values and reports changes; the workspace turns them into a latent. A slider
runs from -3 to +3 standard deviations of the latents along its direction, in steps of 0.01.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

RANGE_STD = 3.0
TICKS_PER_STD = 100  # slider positions per standard deviation


def _format(value: float) -> str:
    return f"{value:+.2f}σ"


class SliderRows(QWidget):
    """A grid of labelled sliders. ``values_changed`` fires once per user change (and once
    after a programmatic :meth:`set_values`)."""

    values_changed = Signal()
    remove_requested = Signal(str)

    def __init__(self, removable: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._removable = removable
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(8)
        self._grid.setColumnStretch(1, 1)
        self.sliders: list[QSlider] = []
        self._value_labels: list[QLabel] = []
        self._names: list[str] = []
        self._quiet = False

    def set_rows(self, names: Sequence[str], tooltips: Sequence[str] = ()) -> None:
        """Replace the rows; every slider starts at 0."""
        while self._grid.count():
            item = self._grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.sliders, self._value_labels, self._names = [], [], list(names)
        limit = int(RANGE_STD * TICKS_PER_STD)
        for row, name in enumerate(names):
            label = QLabel(name)
            label.setMinimumWidth(44)
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setRange(-limit, limit)
            slider.setSingleStep(5)
            slider.setPageStep(50)
            slider.setAccessibleName(name)
            if row < len(tooltips) and tooltips[row]:
                label.setToolTip(tooltips[row])
                slider.setToolTip(tooltips[row])
            value = QLabel(_format(0.0))
            value.setObjectName("caption")
            value.setMinimumWidth(52)
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            slider.valueChanged.connect(lambda v, i=row: self._on_value(i, v))
            self._grid.addWidget(label, row, 0)
            self._grid.addWidget(slider, row, 1)
            self._grid.addWidget(value, row, 2)
            if self._removable:
                remove = QToolButton()
                remove.setText("✕")
                remove.setAutoRaise(True)
                remove.setToolTip(f"Delete the slider {name!r} from this run")
                remove.clicked.connect(lambda _=False, n=name: self.remove_requested.emit(n))
                self._grid.addWidget(remove, row, 3)
            self.sliders.append(slider)
            self._value_labels.append(value)

    def names(self) -> list[str]:
        return list(self._names)

    def values(self) -> np.ndarray:
        """Slider positions in standard deviations."""
        return np.array([s.value() / TICKS_PER_STD for s in self.sliders], np.float32)

    def set_values(self, values: Sequence[float] | np.ndarray) -> None:
        """Move every slider (clipped to ±3σ); one ``values_changed`` afterwards."""
        self._quiet = True
        try:
            for slider, value in zip(self.sliders, values):
                slider.setValue(int(round(float(value) * TICKS_PER_STD)))
        finally:
            self._quiet = False
        self.values_changed.emit()

    def _on_value(self, row: int, ticks: int) -> None:
        self._value_labels[row].setText(_format(ticks / TICKS_PER_STD))
        if not self._quiet:
            self.values_changed.emit()


class SliderPanel(QWidget):
    """Reset / Randomise / Lock seed, the class picker, the direction sliders, and the
    user's named sliders."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.reset_button = QPushButton("Reset")
        self.reset_button.setToolTip("Every slider back to 0: the sample as drawn")
        self.randomise_button = QPushButton("Randomise")
        self.randomise_button.setToolTip(
            "A new sample (next seed); with the seed locked, random slider positions instead"
        )
        self.lock_seed = QCheckBox("Lock seed")
        self.lock_seed.setToolTip("Keep this sample: Randomise then moves the sliders only")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip("The seed of the sample the sliders start from")
        self.seed_spin.setKeyboardTracking(False)
        top = QHBoxLayout()
        top.addWidget(self.reset_button)
        top.addWidget(self.randomise_button)
        top.addStretch(1)
        seed_row = QHBoxLayout()
        seed_row.addWidget(QLabel("Seed"))
        seed_row.addWidget(self.seed_spin, 1)
        seed_row.addWidget(self.lock_seed)
        # The prior's temperature, for a model that declares it (LatentSpec.temperature_option)
        self.temperature_label = QLabel("")
        self.temperature_spin = QDoubleSpinBox()
        self.temperature_spin.setDecimals(2)
        self.temperature_spin.setSingleStep(0.05)
        self.temperature_spin.setKeyboardTracking(False)
        temperature_row = QHBoxLayout()  # its own row: beside the seed it clips the column
        temperature_row.addWidget(self.temperature_label)
        temperature_row.addWidget(self.temperature_spin)
        temperature_row.addStretch(1)
        self.set_temperature_option(None)

        self.raw_toggle = QCheckBox("Raw dimensions")
        self.raw_toggle.setToolTip(
            "Slide the latent's own coordinates instead of its principal directions"
        )
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("The class this conditional model draws")
        self.class_label = QLabel("Class")
        mode_row = QHBoxLayout()
        mode_row.addWidget(self.raw_toggle)
        mode_row.addStretch(1)
        mode_row.addWidget(self.class_label)
        mode_row.addWidget(self.class_combo)
        self.set_classes(0)

        # A hierarchical latent's lower levels: fixed or drawn anew (LatentSpec.details_option)
        self.details_row = QWidget()
        self.details_label = QLabel("")
        self.details_combo = QComboBox()
        self.new_details_button = QPushButton("New details")
        self.new_details_button.setToolTip("Draw the lower levels again: the same layout")
        details = QHBoxLayout(self.details_row)
        details.setContentsMargins(0, 0, 0, 0)
        details.addWidget(self.details_label)
        details.addWidget(self.details_combo, 1)
        details.addWidget(self.new_details_button)
        self.details_combo.currentIndexChanged.connect(self._show_new_details)
        self.set_details_option(None)

        self.method_label = QLabel("")
        self.method_label.setObjectName("caption")
        self.method_label.setWordWrap(True)
        self.rows = SliderRows()
        # A layered latent (one per decoder layer): which layers the sliders move
        self.group_label = QLabel("Layers")
        self.group_combo = QComboBox()
        self.group_combo.setAccessibleName("Layers the sliders move")
        group_row = QHBoxLayout()
        group_row.addWidget(self.group_label)
        group_row.addWidget(self.group_combo, 1)
        directions = QGroupBox("Directions")
        box = QVBoxLayout(directions)
        box.addWidget(self.method_label)
        box.addLayout(group_row)
        box.addWidget(self.rows)
        self.set_layer_groups(())

        self.named_rows = SliderRows(removable=True)
        self.named_hint = QLabel("Make your own in “Make a slider”; they are saved with the run.")
        self.named_hint.setObjectName("caption")
        self.named_hint.setWordWrap(True)
        self.named_box = QGroupBox("Your sliders")
        named = QVBoxLayout(self.named_box)
        named.addWidget(self.named_hint)
        named.addWidget(self.named_rows)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addLayout(seed_row)
        layout.addLayout(temperature_row)
        layout.addLayout(mode_row)
        layout.addWidget(self.details_row)
        layout.addWidget(directions)
        layout.addWidget(self.named_box)
        layout.addStretch(1)

    @property
    def sliders(self) -> list[QSlider]:
        """The direction sliders (the named ones are ``named_rows.sliders``)."""
        return self.rows.sliders

    def set_classes(self, count: int) -> None:
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItems([f"{i}" for i in range(count)])
        self.class_combo.blockSignals(False)
        self.class_combo.setVisible(count > 0)
        self.class_label.setVisible(count > 0)

    def set_layer_groups(self, groups: Sequence[Any]) -> None:
        """Offer the model's layer groups (``LayerGroup``s; none: hide the choice), on "All
        layers"."""
        combo = self.group_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("All layers")
        combo.setItemData(
            0, "The sliders move every layer's latent alike", Qt.ItemDataRole.ToolTipRole
        )
        for group in groups:
            combo.addItem(f"{group.name} only")
            combo.setItemData(combo.count() - 1, group.help, Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(0)
        combo.blockSignals(False)
        combo.setToolTip(
            "Which layers the direction sliders move: the coarse ones change layout and pose "
            "and keep the colours, the fine ones the reverse"
        )
        self.group_combo.setVisible(bool(groups))
        self.group_label.setVisible(bool(groups))

    def group_index(self) -> int | None:
        """The layer group the sliders move (an index into the groups), None: all layers."""
        index = self.group_combo.currentIndex()
        return index - 1 if index > 0 else None

    def set_temperature_option(self, option: Any) -> None:
        """Show the control a ``SamplingOption`` describes (None: hide it) at its default."""
        shown = option is not None
        self.temperature_label.setVisible(shown)
        self.temperature_spin.setVisible(shown)
        if not shown:
            return
        spin = self.temperature_spin
        spin.blockSignals(True)
        low = option.minimum if option.minimum is not None else 0.0
        spin.setRange(low, option.maximum if option.maximum is not None else 10.0)
        spin.setValue(float(option.default))
        spin.blockSignals(False)
        self.temperature_label.setText(option.label)
        spin.setToolTip(option.help)
        spin.setAccessibleName(option.label)

    def set_details_option(self, option: Any) -> None:
        """Show the lower-levels switch a "choice" ``SamplingOption`` describes (None: hide
        it), at its default."""
        self.details_row.setVisible(option is not None)
        self._fixed_details = None if option is None else option.default
        combo = self.details_combo
        combo.blockSignals(True)
        combo.clear()
        if option is not None:
            for choice in option.choices:
                combo.addItem(choice.capitalize(), choice)
            combo.setCurrentIndex(max(0, combo.findData(option.default)))
            self.details_label.setText(option.label)
            combo.setToolTip(option.help)
            combo.setAccessibleName(option.label)
        combo.blockSignals(False)
        self._show_new_details()

    def resampling_details(self) -> bool:
        """Whether each picture draws the lower levels anew: the switch is shown and set to
        its other choice than the default (fixed) one."""
        return self.details_row.isVisibleTo(self) and self._resampling()

    def _resampling(self) -> bool:
        data = self.details_combo.currentData()
        return data is not None and data != self._fixed_details

    def _show_new_details(self) -> None:
        self.new_details_button.setVisible(self._resampling())

    def temperature(self) -> float | None:
        """The prior temperature chosen, or None when the model declares no control."""
        return self.temperature_spin.value() if self.temperature_spin.isVisibleTo(self) else None

    def set_directions(
        self, names: Sequence[str], method: str, tooltips: Sequence[str] = ()
    ) -> None:
        self.method_label.setText(method)
        self.rows.set_rows(names, tooltips)

    def set_named(self, names: Sequence[str], tooltips: Sequence[str] = ()) -> None:
        self.named_rows.set_rows(names, tooltips)
        self.named_hint.setVisible(not names)

    def show_directions(self, dirs: Any, weights: str = "") -> None:
        """Show a ``Directions`` (None: being found) at 0; ``weights``: which weights found
        them."""
        if dirs is None:
            self.set_directions([], "Finding the principal directions…")
            return
        tips = []
        for i, name in enumerate(dirs.names):
            share = "" if dirs.explained is None else f" ({dirs.explained[i]:.0%} of the variance)"
            tips.append(f"{name}{share}; ±3 standard deviations ({dirs.std[i]:.2f} each)")
        self.set_directions(dirs.names, found_line(dirs, weights), tips)

    def show_found(self, dirs: Any, weights: str) -> None:
        """Say again which weights ``dirs`` (on the sliders) were found on; rows untouched."""
        self.method_label.setText(found_line(dirs, weights))

    def show_named(self, sliders: Sequence[Any]) -> None:
        """Show the run's named sliders (``latent_io.NamedSlider``) at 0."""
        tips = [
            f"Fitted on marked samples; training accuracy {s.accuracy:.0%}" if s.accuracy else ""
            for s in sliders
        ]
        self.set_named([s.name for s in sliders], tips)


def found_line(dirs: Any, weights: str) -> str:
    """``Found by <method>. <which weights>``."""
    return f"Found by {dirs.method}." + (f" {weights}" if weights else "")
