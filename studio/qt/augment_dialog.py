"""The Dataset workspace's *Make more…* dialog: ``studio augment`` in the window.

Choose a run and an output folder, how many images per class (or fill every class up to the
largest), the seed, the minimum distance to a training image and the class check; the export
runs on the engine thread (:func:`studio.engine.augment.augment_job`) with a progress bar and
Cancel, and the dialog says what it made and dropped.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

from studio.core.jobs import CancelToken, Outcome, Progress, Status
from studio.core.paths import runs_dir
from studio.qt.engine_jobs import Factory
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.job_calls import JobCalls
from studio.qt.widgets import Banner


def augment_factory(run: str, out: str, **settings: Any) -> Factory:
    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.augment import augment_job

        return (yield from augment_job(run, out, **settings))

    return factory


class AugmentDialog(QDialog):
    """Generate more images per class with a trained run into a new folder."""

    exported = Signal(int)  # images written (0: failed, cancelled or none passed)

    def __init__(self, engine: JobRunner, parent: QWidget | None = None, run: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Make more of a class")
        self._calls = JobCalls(engine, self, kind="Augment")
        self._job: JobHandle | None = None
        self._run = ""
        self.report: Any = None

        intro = QLabel(
            "Draw new images per class with a class-conditional run, into a new folder with "
            "the same class folders. Samples too close to a training image are dropped."
        )
        intro.setWordWrap(True)
        self.run_button = QPushButton("Choose run…")
        self.run_button.clicked.connect(self._on_choose_run)
        self.run_label = QElidingLabel("No run chosen")
        self.run_label.setElideMode(Qt.TextElideMode.ElideMiddle)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.run_label, 1)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("a new or empty folder (or an earlier export's)")
        self.out_edit.textChanged.connect(self._update_buttons)
        self.out_button = QPushButton("Choose…")
        self.out_button.clicked.connect(self._on_choose_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.out_button)
        self.per_class_radio = QRadioButton("Images per class")
        self.per_class_radio.setChecked(True)
        self.per_class_spin = QSpinBox()
        self.per_class_spin.setRange(1, 100_000)
        self.per_class_spin.setValue(100)
        self.fill_radio = QRadioButton("Fill every class up to the largest one")
        self.per_class_radio.toggled.connect(self.per_class_spin.setEnabled)
        self.class_edit = QLineEdit()
        self.class_edit.setPlaceholderText("all classes (an unconditional run: its one class)")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.default_distance = QCheckBox("Measured from the held-out images")
        self.default_distance.setChecked(True)
        self.distance_spin = QDoubleSpinBox()
        self.distance_spin.setRange(0.0, 1.0)
        self.distance_spin.setDecimals(4)
        self.distance_spin.setSingleStep(0.005)
        self.distance_spin.setToolTip("RMS pixel distance, 0..1; 0 keeps every sample")
        self.distance_spin.setEnabled(False)
        self.default_distance.toggled.connect(lambda on: self.distance_spin.setEnabled(not on))
        distance_row = QHBoxLayout()
        distance_row.addWidget(self.default_distance)
        distance_row.addWidget(self.distance_spin)
        self.check_class = QCheckBox(
            "Also drop samples the feature extractor puts in another class"
        )
        form = QFormLayout()
        form.addRow("Run", run_row)
        form.addRow("Output folder", out_row)
        form.addRow(self.per_class_radio, self.per_class_spin)
        form.addRow("", self.fill_radio)
        form.addRow("Class", self.class_edit)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Minimum distance", distance_row)
        form.addRow("", self.check_class)

        self.banner = Banner()
        self.progress = QProgressBar()
        self.progress_label = QLabel()
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.start_button = QPushButton("Make images")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.banner)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.result_label)
        layout.addLayout(buttons)
        if run:
            self.set_run(run)
        self._update_buttons()

    def set_run(self, run: str | Path) -> None:
        self._run = str(run)
        self.run_label.setText(self._run)
        self._update_buttons()

    def settings(self) -> dict[str, Any]:
        """The chosen settings, as :func:`studio.engine.augment.augment_job` takes them."""
        fill = self.fill_radio.isChecked()
        return {
            "per_class": None if fill else self.per_class_spin.value(),
            "fill": fill,
            "class_name": self.class_edit.text().strip() or None,
            "seed": self.seed_spin.value(),
            "min_distance": None
            if self.default_distance.isChecked()
            else self.distance_spin.value(),
            "check_class": self.check_class.isChecked(),
        }

    def start(self) -> None:
        out = self.out_edit.text().strip()
        if not (self._run and out) or self._job is not None:
            return
        self.banner.clear()
        self.result_label.clear()
        self.report = None
        self._job = self._calls.submit(
            "Make more images",
            augment_factory(self._run, out, **self.settings()),
            on_progress=self._on_progress,
            on_end=self._on_end,
        )
        self.progress.setRange(0, 0)
        self.progress_label.setText("Starting…")
        self._update_buttons()

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()
            self.progress_label.setText("Cancelling… (the images written so far stay listed)")

    def _on_progress(self, progress: Progress, _image: Any, _points: Any) -> None:
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.step)
        if progress.message:
            self.progress_label.setText(progress.message)

    def _on_end(self, outcome: Outcome[Any]) -> None:
        self._job = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress_label.clear()
        self._update_buttons()
        if outcome.status is Status.CANCELLED:
            self.result_label.setText(
                "Cancelled: the images written so far are listed in the folder's augment.json."
            )
            self.exported.emit(0)
            return
        if outcome.status is Status.FAILED:
            self.banner.show_message(outcome.error or "The images could not be made.")
            self.exported.emit(0)
            return
        report = self.report = outcome.result
        made = ", ".join(f"{c} {report.made[c]} of {n}" for c, n in report.asked.items())
        dropped = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in report.dropped.items())
        lines = [f"Made {made}.", f"Dropped: {dropped}."]
        if report.min_distance > 0:
            lines.append(f"Minimum distance {report.min_distance:.4f} ({report.distance_source}).")
        if report.short:
            lines.append(
                "Not enough samples passed the filters: lower the minimum distance, or try "
                "again with another seed."
            )
        lines += [f"Note: {note}." for note in report.notes]
        self.result_label.setText("\n".join(lines))
        self.exported.emit(len(report.files))

    def _on_choose_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a trained run", str(runs_dir()))
        if folder:
            self.set_run(folder)

    def _on_choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the output folder")
        if folder:
            self.out_edit.setText(folder)

    def _update_buttons(self) -> None:
        busy = self._job is not None
        self.start_button.setEnabled(not busy and bool(self._run and self.out_edit.text().strip()))
        self.cancel_button.setEnabled(busy)
        self.run_button.setEnabled(not busy)
