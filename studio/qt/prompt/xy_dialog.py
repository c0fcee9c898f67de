"""The X/Y grid dialog: vary two settings, render every combination, show the labelled grid.

The workspace's current settings are the starting point (``prepare`` returns them, or None
after telling the user what is missing); each cell changes only the two chosen settings. The
grid is rendered and saved on the engine thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.engine.prompt.request import SCHEDULER_LABELS, SCHEDULERS
from studio.qt.engine_thread import JobHandle
from studio.qt.job_calls import JobCalls
from studio.qt.prompt import jobs
from studio.qt.widgets import Banner, ImageView

AXES = (
    ("seed", "Seed"),
    ("guidance", "Guidance"),
    ("steps", "Steps"),
    ("scheduler", "Sampler"),
    ("prompt_sr", "Prompt search/replace"),
)
EXAMPLES = {
    "seed": "1, 2, 3",
    "guidance": "3, 7.5, 12",
    "steps": "10, 20, 30",
    "scheduler": ", ".join(SCHEDULERS),
    "prompt_sr": "red, blue, green (replaces the first word in the prompt)",
}
MAX_CELLS = 100  # as the engine's xygrid.MAX_CELLS


@dataclass(frozen=True)
class Prepared:
    """What a render starts from: request fields, the canvas arrays and pickle consent."""

    fields: dict[str, Any]
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    allow_pickle: bool = False


def parse_axis(name: str, text: str) -> list[Any]:
    """The values typed for an axis, checked; ValueError says what is wrong."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError("Type at least one value, separated by commas.")
    if name in ("seed", "steps"):
        try:
            out: list[Any] = [int(v) for v in values]
        except ValueError:
            raise ValueError(f"{name.capitalize()} values must be whole numbers.") from None
        if min(out) < (1 if name == "steps" else 0):
            raise ValueError(f"{name.capitalize()} values must be positive.")
        return out
    if name == "guidance":
        try:
            return [float(v) for v in values]
        except ValueError:
            raise ValueError("Guidance values must be numbers, like 7.5.") from None
    if name == "scheduler":
        by_label = {label.lower(): key for key, label in SCHEDULER_LABELS.items()}
        out = [v if v in SCHEDULERS else by_label.get(v.lower(), "") for v in values]
        bad = [v for v, key in zip(values, out) if not key]
        if bad:
            raise ValueError(f"Unknown sampler {bad[0]!r}: use {', '.join(SCHEDULERS)}.")
        return out
    return values  # prompt_sr: the first value is the text to replace


class XYGridDialog(QDialog):
    """Pick two axes and their values, Render, look, Save. ``model_ended(path)`` after a render
    with the model at ``path`` ended, however it did."""

    model_ended = Signal(str)

    def __init__(
        self,
        calls: JobCalls,
        prepare: Callable[[], Prepared | None],
        ask_consent: Callable[[str, str], bool],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("X/Y grid")
        self.resize(760, 640)
        self._calls, self._prepare, self._ask_consent = calls, prepare, ask_consent
        self._job: JobHandle | None = None
        self._last: Prepared | None = None
        self.grid: np.ndarray | None = None
        self.result: jobs.GridResult | None = None
        self.banner = Banner()
        self.x_combo, self.x_values = self._axis_widgets("seed")
        self.y_combo, self.y_values = self._axis_widgets("guidance")
        form = QFormLayout()
        for label, combo, values in (
            ("X axis", self.x_combo, self.x_values),
            ("Y axis", self.y_combo, self.y_values),
        ):
            row = QHBoxLayout()
            row.addWidget(combo)
            row.addWidget(values, 1)
            form.addRow(label, row)
        self.render_button = QPushButton("Render")
        self.render_button.setObjectName("primary")
        self.render_button.clicked.connect(self.render_grid)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button = QPushButton("Save…")
        self.save_button.clicked.connect(self.choose_save_path)
        buttons = QHBoxLayout()
        buttons.addWidget(self.render_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.status = QLabel("Every other setting comes from the Prompt workspace.")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        self.view = ImageView("The grid appears here")
        column = QVBoxLayout(self)
        column.addWidget(self.banner)
        column.addLayout(form)
        column.addLayout(buttons)
        column.addWidget(self.progress)
        column.addWidget(self.status)
        column.addWidget(self.view, 1)
        self._update_buttons()

    def _axis_widgets(self, default: str) -> tuple[QComboBox, QLineEdit]:
        combo = QComboBox()
        for key, text in AXES:
            combo.addItem(text, key)
        edit = QLineEdit()

        def on_axis(*_: object) -> None:
            key = str(combo.currentData())
            edit.setPlaceholderText(EXAMPLES[key])
            edit.setText(EXAMPLES[key].split(" (")[0])

        combo.currentIndexChanged.connect(on_axis)
        combo.setCurrentIndex(combo.findData(default))
        on_axis()
        return combo, edit

    def set_axes(self, x: tuple[str, str], y: tuple[str, str]) -> None:
        """Choose the axes and type their values (``(name, "v1, v2")`` each)."""
        for combo, edit, (name, text) in (
            (self.x_combo, self.x_values, x),
            (self.y_combo, self.y_values, y),
        ):
            combo.setCurrentIndex(combo.findData(name))
            edit.setText(text)

    def axes(self) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
        x_name, y_name = str(self.x_combo.currentData()), str(self.y_combo.currentData())
        if x_name == y_name:
            raise ValueError("Choose two different settings for X and Y.")
        x = (x_name, parse_axis(x_name, self.x_values.text()))
        y = (y_name, parse_axis(y_name, self.y_values.text()))
        if len(x[1]) * len(y[1]) > MAX_CELLS:
            raise ValueError(f"That is more than {MAX_CELLS} images; use fewer values.")
        return x, y

    @property
    def running(self) -> bool:
        return self._job is not None

    def render_grid(self, prepared: Prepared | None = None) -> bool:
        if self._job is not None:
            return False
        try:
            x, y = self.axes()
        except ValueError as err:
            self.banner.show_message(str(err))
            return False
        prepared = prepared or self._prepare()
        if prepared is None:
            return False
        self.banner.clear()
        self._last = prepared
        factory = jobs.xy_grid(
            prepared.fields, x, y, prepared.image, prepared.mask,
            allow_pickle=prepared.allow_pickle,
        )  # fmt: skip
        self._job = self._calls.submit(
            "X/Y grid",
            factory,
            self._on_done,
            lambda m: self.banner.show_message(m),
            on_cancelled=lambda: self.status.setText("Cancelled: nothing was rendered."),
            on_progress=self._on_progress,
            on_end=self._on_end,
        )
        cells = len(x[1]) * len(y[1])
        if self._calls.engine_busy():  # a training run, say: the grid cannot share the device
            from studio.engine import live

            self.status.setText(f"{cells} images. {jobs.waiting_text(live.progress())}")
        else:
            self.status.setText(f"Rendering {cells} images…")
        self.progress.setRange(0, 0)
        self._update_buttons()
        return True

    def cancel(self) -> None:
        if self._job is not None:
            self.status.setText("Cancelling…")
            self._calls.withdraw_or_cancel(self._job)  # a queued one ends at once

    def _on_progress(self, progress: Any, _image: Any, _points: Any = None) -> None:
        if progress.total:
            self.progress.setRange(0, int(progress.total))
            self.progress.setValue(int(progress.step))
        if progress.message:
            self.status.setText(progress.message)

    def _on_done(self, result: Any) -> None:
        if isinstance(result, jobs.ConsentNeeded):
            last = self._last
            if last is not None and self._ask_consent(result.path, result.message):
                again = Prepared(last.fields, last.image, last.mask, allow_pickle=True)
                QTimer.singleShot(0, self, lambda: self.render_grid(again))  # after _on_end
            return
        self.grid, self.result = result.image, result
        self.view.set_image(result.image)
        h, w = result.image.shape[:2]
        self.status.setText(f"Grid ready ({w}x{h}). Save… keeps it as a PNG.")

    def _on_end(self, _outcome: Any) -> None:
        self._job = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._update_buttons()
        if self._last is not None:
            self.model_ended.emit(str(self._last.fields["model"]))

    def choose_save_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the grid", "xy-grid.png", "PNG (*.png)")
        if path:
            self.save(path)

    def save(self, path: str | Path) -> None:
        if self.grid is None:
            return
        self._calls.submit(
            "Save the grid",
            jobs.save_png(self.grid, path, self.result.metadata if self.result else None),
            lambda p: self.status.setText(f"Saved {p}"),
            lambda m: self.banner.show_message(m),
        )

    def _update_buttons(self) -> None:
        running = self._job is not None
        self.render_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.save_button.setEnabled(not running and self.grid is not None)

    def reject(self) -> None:  # Esc / close: stop a render rather than leave it running
        self.cancel()
        super().reject()
