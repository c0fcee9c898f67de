"""The generation parameters: prompt boxes, sampler settings, seed, size, mode options.

:class:`ParamsForm` is the one place that reads and writes these widgets: ``values()`` gives
the :class:`~studio.engine.prompt.request.GenerateRequest` fields (all but the model and the
arrays), ``set_values()`` sets them. In the workspace the form is bound to a
:class:`~studio.qt.prompt.state.PromptRequestState` (``bind``): it shows the state and writes
every edit back, so the state, not the widgets, is what a generation reads and a recall sets.
The prompt boxes live in ``prompt_area``, which the workspace places above the preview.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.engine.prompt.request import MEMORY_MODES, SCHEDULER_LABELS, SCHEDULERS
from studio.qt.prompt.state import DEFAULTS, LIMITS, PromptRequestState
from studio.qt.widgets import SeedRow

MODES = (
    ("txt2img", "Text to image"),
    ("img2img", "Image to image (the canvas image)"),
    ("inpaint", "Inpaint (the canvas image and mask)"),
)
SAMPLERS = tuple((key, SCHEDULER_LABELS.get(key, key)) for key in SCHEDULERS)
_MEMORY_LABELS = {
    "auto": "Automatic (from free memory)",
    "full": "Full speed (most memory)",
    "balanced": "Balanced (slicing)",
    "low": "Low memory (offload, slowest)",
}
MEMORY = tuple((key, _MEMORY_LABELS.get(key, key)) for key in MEMORY_MODES)


def _combo(items: tuple[tuple[str, str], ...]) -> QComboBox:
    combo = QComboBox()
    for key, text in items:
        combo.addItem(text, key)
    return combo


def _spin(key: str, value: int, step: int = 1, suffix: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(*LIMITS[key])
    spin.setSingleStep(step)
    spin.setValue(value)
    spin.setSuffix(suffix)
    return spin


class ParamsForm(QWidget):
    """Every generation setting; ``mode_changed(mode)`` when the mode changes."""

    mode_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state: PromptRequestState | None = None
        self._showing = self._pushing = False
        self._build_prompt_area()
        self.mode_combo = _combo(MODES)
        self.mode_combo.setToolTip(
            "Image to image and inpaint start from the picture on the Canvas workspace"
        )
        self.steps_spin = _spin("steps", 30)
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, 30.0)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setDecimals(1)
        self.guidance_spin.setToolTip("How closely to follow the prompt (1 = ignore it)")
        self.scheduler_combo = _combo(SAMPLERS)
        self.seed_row = seed_row = SeedRow()
        self.seed_spin, self.lock_seed, self.dice_button = (
            seed_row.spin,
            seed_row.lock,
            seed_row.dice,
        )
        self.width_spin = _spin("width", 512, 8, " px")
        self.height_spin = _spin("height", 512, 8, " px")
        for spin in (self.width_spin, self.height_spin):
            spin.setToolTip(
                "The size the model draws at (a multiple of 8). Image to image and inpaint "
                "results come back at the canvas image's own size."
            )
        self.canvas_size_button = QToolButton()
        self.canvas_size_button.setText("Canvas")
        self.canvas_size_button.setToolTip("Use the canvas image's size (to the nearest 8 px)")
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_spin, 1)
        size_row.addWidget(QLabel("\u00d7"))
        size_row.addWidget(self.height_spin, 1)
        size_row.addWidget(self.canvas_size_button)
        self.batch_spin = _spin("batch_count", 1)
        self.batch_spin.setToolTip("Images per Generate, with seeds seed, seed+1, …")
        self.strength_spin = QDoubleSpinBox()
        self.strength_spin.setRange(0.0, 1.0)
        self.strength_spin.setSingleStep(0.05)
        self.strength_spin.setDecimals(2)
        self.strength_spin.setToolTip("How much to change the canvas image (1 = ignore it)")
        self.mask_blur_spin = _spin("mask_blur", 4, 1, " px")
        self.mask_blur_spin.setToolTip("Soften the mask's edge so the result blends in")
        self.only_masked = QCheckBox("Only the masked area")
        self.only_masked.setToolTip(
            "Generate a padded crop around the mask at full resolution and paste it back"
        )
        self.padding_spin = _spin("only_masked_padding", 32, 1, " px")
        self.padding_spin.setToolTip("Context around the mask that the model sees")
        self.memory_combo = _combo(MEMORY)
        self.memory_combo.setToolTip(
            "How much GPU memory to use; lighter settings are tried by themselves when memory "
            "runs out"
        )
        self.compile_check = QCheckBox("Compile the UNet (GPU; slow first run)")

        form = QFormLayout()
        form.addRow("Mode", self.mode_combo)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Guidance", self.guidance_spin)
        form.addRow("Sampler", self.scheduler_combo)
        form.addRow("Seed", seed_row)
        form.addRow("Size", size_row)
        form.addRow("Batch count", self.batch_spin)
        form.addRow("Strength", self.strength_spin)
        form.addRow("Mask blur", self.mask_blur_spin)
        form.addRow("", self.only_masked)
        form.addRow("Padding", self.padding_spin)
        form.addRow("Memory", self.memory_combo)
        form.addRow("", self.compile_check)
        self._form = form
        box = QGroupBox("Settings")
        box.setLayout(form)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(box)
        column.addStretch(1)
        self.mode_combo.currentIndexChanged.connect(self._on_mode_changed)
        self.only_masked.toggled.connect(self._update_rows)
        self.set_values(DEFAULTS)
        self._update_rows()

    def _build_prompt_area(self) -> None:
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("Prompt: what to draw")
        self.negative_edit = QPlainTextEdit()
        self.negative_edit.setPlaceholderText("Negative prompt: what to avoid (optional)")
        for edit, lines in ((self.prompt_edit, 4), (self.negative_edit, 2)):
            edit.setTabChangesFocus(True)
            height = edit.fontMetrics().lineSpacing() * lines + 14
            edit.setFixedHeight(height)
        self.prompt_area = QWidget()
        column = QVBoxLayout(self.prompt_area)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.prompt_edit)
        column.addWidget(self.negative_edit)

    # -- the request state -------------------------------------------------------------------
    def bind(self, state: PromptRequestState) -> None:
        """Show ``state`` and write every edit back to it (the form holds nothing of its own:
        what the widgets show is the state, as far as they can show it)."""
        self._state = state
        state.on_changed(self._show_state)
        edits = (
            self.mode_combo.currentIndexChanged, self.scheduler_combo.currentIndexChanged,
            self.memory_combo.currentIndexChanged, self.prompt_edit.textChanged,
            self.negative_edit.textChanged, self.steps_spin.valueChanged,
            self.guidance_spin.valueChanged, self.seed_spin.valueChanged,
            self.width_spin.valueChanged, self.height_spin.valueChanged,
            self.batch_spin.valueChanged, self.strength_spin.valueChanged,
            self.mask_blur_spin.valueChanged, self.only_masked.toggled,
            self.padding_spin.valueChanged, self.compile_check.toggled, self.lock_seed.toggled,
        )  # fmt: skip
        for signal in edits:
            signal.connect(self._push)
        self._show_state()

    def _show_state(self) -> None:
        state = self._state
        if state is None or self._pushing:
            return
        self._showing = True
        try:
            shown = self.values()  # only what differs: a prompt box keeps its cursor
            self.set_values({k: v for k, v in state.values().items() if shown.get(k) != v})
            self.lock_seed.setChecked(state.seed_locked)
        finally:
            self._showing = False
        self._push()  # the state takes what the widgets show (their rounding)

    def _push(self, *_: object) -> None:
        state = self._state
        if state is None or self._showing:
            return
        self._pushing = True
        try:
            state.update(self.values())
            state.set_seed_locked(self.lock_seed.isChecked())
        finally:
            self._pushing = False

    # -- values ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return str(self.mode_combo.currentData())

    def set_mode(self, mode: str) -> None:
        index = self.mode_combo.findData(mode)
        if index >= 0:
            self.mode_combo.setCurrentIndex(index)

    def allow_text_to_image(self, allowed: bool, why: str = "") -> None:
        """Offer Text to image or not (an SDXL refiner only refines an image): the item is
        greyed out with ``why`` as its tooltip, and a form on Text to image moves to Image to
        image."""
        item = self.mode_combo.model().item(self.mode_combo.findData("txt2img"))
        item.setEnabled(allowed)
        item.setToolTip("" if allowed else why)
        if not allowed and self.mode == "txt2img":
            self.set_mode("img2img")

    def values(self) -> dict[str, Any]:
        """The request's fields other than the model, the image and the mask."""
        return {
            "mode": self.mode,
            "prompt": self.prompt_edit.toPlainText().strip(),
            "negative_prompt": self.negative_edit.toPlainText().strip(),
            "steps": self.steps_spin.value(),
            "guidance": round(self.guidance_spin.value(), 2),
            "scheduler": str(self.scheduler_combo.currentData()),
            "seed": self.seed_spin.value(),
            "width": self.width_spin.value(),
            "height": self.height_spin.value(),
            "batch_count": self.batch_spin.value(),
            "strength": round(self.strength_spin.value(), 3),
            "mask_blur": self.mask_blur_spin.value(),
            "only_masked": self.only_masked.isChecked(),
            "only_masked_padding": self.padding_spin.value(),
            "memory": str(self.memory_combo.currentData()),
            "compile": self.compile_check.isChecked(),
        }

    def set_values(self, values: dict[str, Any]) -> list[str]:
        """Set every known field found in ``values``; return the names that were set.

        Unknown keys and values of the wrong type are skipped, so an old settings file or a
        PNG from another version restores what it can."""
        done = []
        for key, value in values.items():
            try:
                if self._set(key, value):
                    done.append(key)
            except (TypeError, ValueError):
                continue
        return done

    def _set(self, key: str, value: Any) -> bool:
        combos = {
            "mode": self.mode_combo,
            "scheduler": self.scheduler_combo,
            "memory": self.memory_combo,
        }
        spins = {
            "steps": self.steps_spin,
            "seed": self.seed_spin,
            "width": self.width_spin,
            "height": self.height_spin,
            "batch_count": self.batch_spin,
            "mask_blur": self.mask_blur_spin,
            "only_masked_padding": self.padding_spin,
        }
        if key in combos:
            index = combos[key].findData(str(value))
            if index < 0:
                return False
            combos[key].setCurrentIndex(index)
        elif key in spins:
            spin, number = spins[key], int(value)
            if not spin.minimum() <= number <= spin.maximum():
                return False  # never clamp: a clamped seed or size would make another image
            spin.setValue(number)
        elif key == "guidance":
            self.guidance_spin.setValue(float(value))
        elif key == "strength":
            self.strength_spin.setValue(float(value))
        elif key == "prompt":
            self.prompt_edit.setPlainText(str(value))
        elif key == "negative_prompt":
            self.negative_edit.setPlainText(str(value or ""))
        elif key == "only_masked":
            self.only_masked.setChecked(bool(value))
        elif key == "compile":
            self.compile_check.setChecked(bool(value))
        else:
            return False
        return True

    # -- seed --------------------------------------------------------------------------------
    def randomise_seed(self) -> None:
        self.seed_row.randomise()

    # -- visibility --------------------------------------------------------------------------
    def _on_mode_changed(self, *_: object) -> None:
        self._update_rows()
        self.mode_changed.emit(self.mode)

    def _update_rows(self, *_: object) -> None:
        mode = self.mode
        self._form.setRowVisible(self.strength_spin, mode in ("img2img", "inpaint"))
        for widget in (self.mask_blur_spin, self.only_masked):
            self._form.setRowVisible(widget, mode == "inpaint")
        self._form.setRowVisible(self.padding_spin, mode == "inpaint")
        self.padding_spin.setEnabled(self.only_masked.isChecked())
