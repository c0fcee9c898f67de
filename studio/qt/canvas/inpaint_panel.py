"""The inpaint panel: pick a run, set up the request, Generate, watch it, Cancel.

Generate takes a snapshot of the document's image and mask (copies, on the GUI thread) and
submits :func:`studio.qt.canvas.jobs.inpaint` to the engine thread; intermediate previews and
progress come back through the runner's coalesced signals. The finished variations go out
through ``variations_ready``; the workspace stages them. A cancelled job produces nothing, so
the canvas stays exactly as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.core.canvas import CanvasDocument
from studio.core.jobs import Outcome, Progress, Status
from studio.core.paths import runs_dir
from studio.engine.live import is_live
from studio.qt.canvas import jobs
from studio.qt.canvas.familiarity import familiarity_hint
from studio.qt.canvas.run_info import RunInfo, describe_run
from studio.qt.canvas.tasks import TaskPool
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.job_calls import JobCalls
from studio.qt.settings import AppSettings
from studio.qt.widgets import Banner, ImageView, SeedRow

MAX_VARIATIONS = 16
MODES = (("masked_only", "Only masked area"), ("whole", "Whole image"))


def between_steps_text(preset: str) -> str:
    """What a Canvas job on the run that is training says when it is submitted: it runs
    between two training steps, and training waits for it (for minutes with a long preset)."""
    text = "Inpainting with the live weights between two training steps; training waits for it"
    if preset != "fast":
        return f"{text}. The {preset.title()} preset can take minutes: training waits meanwhile."
    return f"{text}…"


class InpaintPanel(QWidget):
    """Inpainting controls for the canvas.

    ``document`` returns the canvas's document, any stroke in progress committed.
    ``run_loaded(info)``: a run was described and chosen. ``variations_ready(result, doc,
    image_revision)``: a job finished with :class:`~studio.qt.canvas.jobs.InpaintResult` for
    ``doc`` as it was at ``image_revision``. ``running_changed(running)``.
    ``feather_changed(radius)`` when the feather is changed here.
    """

    run_loaded = Signal(object)
    variations_ready = Signal(object, object, int)
    running_changed = Signal(bool)
    feather_changed = Signal(float)

    def __init__(
        self,
        runner: JobRunner,
        settings: AppSettings,
        document: Callable[[], CanvasDocument | None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._runner, self._settings, self._document = runner, settings, document
        self._calls = JobCalls(runner, self, kind="Canvas")
        self._tasks = TaskPool(self)
        self._run: RunInfo | None = None
        self._job: JobHandle | None = None
        self._between_steps = False  # the job runs between the steps of its training run
        self._started_at: float | None = None  # time.monotonic() when it started
        self._job_doc: CanvasDocument | None = None
        self._job_revision = 0  # the document's image_revision the job started from
        self._familiar_check = 0  # the newest familiarity check; older answers are dropped
        self._build()
        self.refresh_runs()
        self._update_controls()

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.banner = Banner()
        self.run_combo = QComboBox()
        self.run_combo.setPlaceholderText("Choose a run…")
        self.run_combo.setMinimumContentsLength(18)
        self.run_combo.activated.connect(self._on_run_activated)
        self.open_run_button = QPushButton("Open run…")
        self.open_run_button.clicked.connect(self.choose_run)
        self.family_label = QLabel("No run chosen")
        self.family_label.setObjectName("hint")
        self.family_label.setWordWrap(True)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_combo, 1)
        run_row.addWidget(self.open_run_button)
        run_box = QGroupBox("Model")
        run_column = QVBoxLayout(run_box)
        run_column.addLayout(run_row)
        run_column.addWidget(self.family_label)
        # Said when the image is far from what the run was trained on (checked on a worker).
        self.familiar_label = QLabel()
        self.familiar_label.setObjectName("hint")
        self.familiar_label.setStyleSheet("QLabel { color: #e0a030; }")
        self.familiar_label.setWordWrap(True)
        self.familiar_label.hide()
        run_column.addWidget(self.familiar_label)

        self.seed_row = seed_row = SeedRow()
        self.seed_spin, self.lock_seed, self.dice_button = (
            seed_row.spin,
            seed_row.lock,
            seed_row.dice,
        )
        self.variations_spin = QSpinBox()
        self.variations_spin.setRange(1, MAX_VARIATIONS)
        self.variations_spin.setValue(4)
        self.mode_combo = QComboBox()
        for key, text in MODES:
            self.mode_combo.addItem(text, key)
        self.mode_combo.setToolTip(
            "Only masked area: the model sees the mask's surroundings at its own resolution "
            "(sharp). Whole image: the whole picture is resized to the model (for small images)."
        )
        self.padding_spin = QSpinBox()
        self.padding_spin.setRange(0, 1024)
        self.padding_spin.setValue(32)
        self.padding_spin.setSuffix(" px")
        self.padding_spin.setToolTip("Context around the mask the model sees")
        self.feather_spin = QSpinBox()
        self.feather_spin.setRange(0, 64)
        self.feather_spin.setValue(8)
        self.feather_spin.setSuffix(" px")
        self.feather_spin.setToolTip("Blend radius: how far outside the mask the result fades in")
        self.feather_spin.valueChanged.connect(lambda v: self.feather_changed.emit(float(v)))
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("Fast", "fast")
        self.preset_combo.addItem("Quality", "quality")
        self.method_combo = QComboBox()  # filled with the run's family's methods
        self.class_combo = QComboBox()
        self.preset_label = QLabel()
        self.preset_label.setObjectName("hint")
        self.preset_label.setWordWrap(True)
        self.preset_combo.currentIndexChanged.connect(self._update_preset_text)
        self.method_combo.currentIndexChanged.connect(self._update_preset_text)

        form = QFormLayout()
        form.addRow("Seed", seed_row)
        form.addRow("Variations", self.variations_spin)
        form.addRow("Area", self.mode_combo)
        form.addRow("Padding", self.padding_spin)
        form.addRow("Feather", self.feather_spin)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Class", self.class_combo)
        self._form = form
        options_box = QGroupBox("Inpaint")
        options_column = QVBoxLayout(options_box)
        options_column.addLayout(form)
        options_column.addWidget(self.preset_label)

        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("primary")
        self.generate_button.setToolTip("Regenerate the masked area with the chosen run")
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.status_label = QLabel()
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        self.preview = ImageView("Previews appear here while it runs")
        self.preview.setMinimumSize(160, 120)
        self.preview.setMaximumHeight(240)  # a glance at progress, not a second canvas

        column = QVBoxLayout(self)
        column.addWidget(self.banner)
        column.addWidget(run_box)
        column.addWidget(options_box)
        column.addLayout(buttons)
        column.addWidget(self.progress)
        column.addWidget(self.status_label)
        column.addWidget(self.preview, 1)
        column.addStretch(0)

    # -- runs --------------------------------------------------------------------------------
    @property
    def run(self) -> RunInfo | None:
        return self._run

    def refresh_runs(self) -> None:
        """Fill the run list from the recent runs (the chosen one stays chosen)."""
        current = str(self._run.path) if self._run is not None else None
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        paths = self._settings.recent_runs()
        if current is not None and current not in paths:
            paths.insert(0, current)
        from studio.qt.run_names import run_labels

        run_labels().refresh(paths)  # (read on a worker: the next look shows any change)
        for path in paths:
            self.run_combo.addItem(run_labels().text(path), path)
            self.run_combo.setItemData(
                self.run_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole
            )
        self.run_combo.setCurrentIndex(self.run_combo.findData(current) if current else -1)
        self.run_combo.blockSignals(False)

    def choose_run(self) -> None:
        start = str(self._run.path.parent if self._run is not None else runs_dir())
        folder = QFileDialog.getExistingDirectory(self, "Open a run to inpaint with", start)
        if folder:
            self.set_run(folder)

    def set_run(self, path: str | Path) -> None:
        """Use the run at ``path`` (described on a worker; ``run_loaded`` follows)."""
        self.family_label.setText(f"Reading {Path(path).name}…")
        self._tasks.submit(lambda: describe_run(path), self._on_run_described, self._on_run_failed)

    def _on_run_activated(self, index: int) -> None:
        path = self.run_combo.itemData(index)
        if path:
            self.set_run(path)

    def _on_run_described(self, info: RunInfo) -> None:
        self._run = info
        self._settings.add_recent_run(info.path)
        self.refresh_runs()
        classes = f", {len(info.class_names)} classes" if info.conditional else ""
        self.family_label.setText(f"{info.display_name} ({info.kind}{classes})")
        self.family_label.setToolTip(str(info.path))
        self._fill_methods(info)
        self.class_combo.clear()
        self.class_combo.addItem("Any (one per variation, in turn)", None)
        for i, name in enumerate(info.class_names):
            self.class_combo.addItem(name, i)
        if info.problem:
            self.banner.show_message(info.problem)
        else:
            self.banner.clear()
        self._update_controls()
        self.check_familiarity()
        self.run_loaded.emit(info)

    def _on_run_failed(self, message: str) -> None:
        self._run = None
        self.family_label.setText("No run chosen")
        self.banner.show_message(message)
        self.refresh_runs()
        self._update_controls()

    # -- settings ----------------------------------------------------------------------------
    def randomise_seed(self) -> None:
        self.seed_row.randomise()

    def set_feather(self, radius: float) -> None:
        """Follow the tool bar's feather radius without echoing it back."""
        self.feather_spin.blockSignals(True)
        self.feather_spin.setValue(round(radius))
        self.feather_spin.blockSignals(False)

    def _several_methods(self) -> bool:
        return self._run is not None and len(self._run.methods) > 1

    def _method(self) -> str:
        if self._several_methods():
            return str(self.method_combo.currentData())
        return self._run.methods[0] if self._run is not None and self._run.methods else ""

    def _fill_methods(self, run: RunInfo) -> None:
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        for key in run.methods:
            self.method_combo.addItem(run.method_labels.get(key, key or "Default"), key)
        self.method_combo.blockSignals(False)

    def request_settings(self) -> dict[str, Any]:
        """The request's fields other than the image and the mask."""
        settings: dict[str, Any] = {
            "seed": self.seed_spin.value(),
            "variations": self.variations_spin.value(),
            "feather": float(self.feather_spin.value()),
            "mode": str(self.mode_combo.currentData()),
            "padding": self.padding_spin.value(),
            "preset": str(self.preset_combo.currentData()),
        }
        if self._several_methods():
            settings["method"] = self._method()
        if self._run is not None and self._run.conditional:
            settings["conditions"] = {"label": self.class_combo.currentData()}
        return settings

    def _update_preset_text(self, *_: object) -> None:
        run = self._run
        presets = run.presets.get(self._method(), {}) if run is not None else {}
        self.preset_label.setText(presets.get(str(self.preset_combo.currentData()), ""))

    def _update_controls(self) -> None:
        running = self._job is not None
        run = self._run
        conditional = run is not None and run.conditional
        self._form.setRowVisible(self.method_combo, self._several_methods())
        self._form.setRowVisible(self.class_combo, conditional)
        self.generate_button.setEnabled(not running and run is not None and run.can_inpaint)
        self.cancel_button.setEnabled(running)
        self.run_combo.setEnabled(not running)
        self.open_run_button.setEnabled(not running)
        self._update_preset_text()

    # -- the job -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._job is not None

    def generate(self) -> bool:
        """Submit an inpainting job for the current document; False (with a banner saying why)
        when there is nothing to do."""
        if self._job is not None:
            return False
        doc, run = self._document(), self._run
        problem = None
        if run is None:
            problem = "Choose a run to inpaint with (Open run…, or one of the recent runs)."
        elif not run.can_inpaint:
            problem = run.problem
        elif doc is None:
            problem = "Open an image on the canvas first."
        elif not (doc.mask > 0).any():
            problem = "No mask painted: paint over the part of the image to regenerate."
        if problem or doc is None or run is None:
            self.banner.show_message(problem or "Nothing to inpaint.")
            return False
        self.banner.clear()
        if not self.lock_seed.isChecked():
            self.randomise_seed()
        # Copies: the job must not see later edits, and the document must not be shared.
        image, mask = doc.image.copy(), doc.mask.copy()
        factory = jobs.inpaint(run.path, image, mask, self.request_settings(), self._device())
        self._job_doc, self._job_revision = doc, doc.image_revision
        # A run training right now: inpaint with its current weights, between its steps.
        live_run = is_live(run.path)
        name = f"Inpaint with {run.path.name}"
        self._job = self._calls.submit(
            name,
            factory,
            on_started=self._on_job_started,
            on_progress=self._on_job_progress,
            on_end=self._on_job_ended,
            interactive=live_run,
        )
        self.progress.setRange(0, 0)
        busy = self._runner.engine.running_job() is not None and not live_run
        self._between_steps, self._started_at = live_run, None
        if live_run:
            self.status_label.setText(between_steps_text(str(self.preset_combo.currentData())))
        else:
            self.status_label.setText(
                "Waiting for the engine (it is busy)…" if busy else "Starting…"
            )
        self.preview.set_image(None)
        self._update_controls()
        self.running_changed.emit(True)
        return True

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()
            self.status_label.setText("Cancelling…")
            self.cancel_button.setEnabled(False)

    def _device(self) -> str:
        return self._settings.device_preference()

    def _on_job_started(self, _handle: JobHandle) -> None:
        self._started_at = time.monotonic()
        if not self._between_steps:
            self.status_label.setText("Loading the model…")

    def forget_document(self) -> None:
        """Another image is on the canvas: the previews and words about the old one go
        (a job still running for it finishes, but its results are not staged)."""
        self.preview.set_image(None)
        self.check_familiarity()
        if self._job is None:
            self.status_label.clear()
            self.progress.setRange(0, 1)
            self.progress.setValue(0)

    def check_familiarity(self) -> None:
        """Compare the canvas image with the run's training images (on a worker) and say
        when it looks unlike them."""
        self._familiar_check += 1
        self.familiar_label.hide()
        doc, run = self._document(), self._run
        if doc is None or run is None or not run.can_inpaint:
            return
        check, image, path = self._familiar_check, doc.image.copy(), run.path

        def done(text: str) -> None:
            if check == self._familiar_check:
                self.familiar_label.setText(text)
                self.familiar_label.setVisible(bool(text))

        self._tasks.submit(lambda: familiarity_hint(path, image), done)

    def _on_job_progress(self, progress: Progress, image: Any, _points: Any) -> None:
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.step)
            text = f"{progress.step:,} / {progress.total:,}"
            if self._between_steps:
                text += " (between training steps: training waits)"
            self.status_label.setText(
                f"{progress.message}  {text}".strip() if progress.message else text
            )
        elif progress.message:
            self.status_label.setText(progress.message)
        if image is not None and self._job_doc is self._document():
            self.preview.set_image(image)  # (not over another image opened meanwhile)

    def _on_job_ended(self, outcome: Outcome[Any]) -> None:
        doc, self._job, self._job_doc = self._job_doc, None, None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        if outcome.status is Status.FINISHED and outcome.result is not None:
            result: jobs.InpaintResult = outcome.result
            self.progress.setValue(1)
            self.status_label.setText(
                f"{len(result.images)} variations ready (seed {result.seed}; "
                f"{result.weights_text}).{self._took()} Click one to preview."
            )
            self.variations_ready.emit(result, doc, self._job_revision)
        elif outcome.status is Status.CANCELLED:
            self.status_label.setText("Cancelled: the canvas is unchanged.")
        else:
            self.status_label.setText("Failed.")
            self.banner.show_message(outcome.error or "Inpainting failed.")
        self._update_controls()
        self.running_changed.emit(False)

    def _took(self) -> str:
        """For a job run between training steps: how long training waited for it."""
        if not self._between_steps or self._started_at is None:
            return ""
        return f" Ran between training steps: training waited {time.monotonic() - self._started_at:.1f} s."

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        self.refresh_runs()  # the Train panel may have made runs since
        super().showEvent(event)

    def shutdown(self) -> None:
        """Cancel a running job (the window is closing) and let the worker finish."""
        self.cancel()
        self._tasks.wait(5_000)
