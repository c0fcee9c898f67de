"""The Train workspace: pick a model, set it up, train, pause, resume, stop, reopen runs.

Training runs on the engine thread; this panel turns button presses into jobs and token calls
(``pause()``, ``resume()``, ``stop()``), and the jobs' reports into plots, grids and log lines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.core import gcpolicy
from studio.core.jobs import Outcome, Progress, Status
from studio.core.paths import runs_dir
from studio.qt import engine_jobs
from studio.qt.diagnosis import DiagnosisLabel
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.forms import SettingsForm
from studio.qt.job_calls import JobCalls
from studio.qt.peek_panel import PeekPanel
from studio.qt.run_names import RenameButton, label_from_config, run_labels
from studio.qt.run_view import RunView
from studio.qt.settings import AppSettings
from studio.qt.train_controls import ModelPicker, TrainingOptions, format_status
from studio.qt.train_memory import dataset_header, fitting, plain

# What the trainer logs besides the model's losses (studio/engine/train.py): the diversity of
# each sample grid, and the throughput and memory of every log step.
TRAINER_METRICS = ("diversity", "images_per_s", "memory_mb")


def progress_key(report: Progress) -> str | None:
    """What a report's message counts (``scan: Checking images``) when it is a counter
    ("Checking images: 120/3000"): the log then updates that line in place. None otherwise."""
    text, total = report.message or "", report.total
    if not total or report.stage in ("train", "paused"):
        return None
    for counter in (f"{report.step}/{total}", f"{report.step:,}/{total:,}"):
        if text.endswith(counter):
            stage = getattr(report.stage, "value", report.stage)  # (a str enum: its name)
            return f"{stage}: {text[: -len(counter)].rstrip(' :')}"
    return None


#: Folder B's label, placeholder and hint for a family that trains on matched pairs and for
#: one that learns from two unpaired folders (FamilySpec.unpaired).
PAIRED_TEXT = (
    "Folder B (pairs)",
    "none: side-by-side files",
    "The Dataset folder holds the inputs (A), this one the targets (B), matched by name. "
    "Without it, each image holds A on its left half and B on its right.",
)
UNPAIRED_TEXT = (
    "Folder B",
    "required: a second folder of images",
    "The Dataset folder is collection A, this one collection B: any two folders, of any "
    "sizes; nothing needs to match. The model learns to translate both ways.",
)


class TrainPanel(QWidget):
    """Model picker and settings on the left, the run's plots, samples and log on the right.

    ``run_changed(path)`` fires when the panel's current run changes: a run opened, or a new
    run once it trains (its folder holds the run's settings by then).
    """

    run_changed = Signal(str)

    def __init__(
        self, runner: JobRunner, settings: AppSettings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._runner = runner
        self._settings = settings
        self._job: JobHandle | None = None
        self._job_trains = False  # the job is a training run (not opening one)
        self._families_job: JobHandle | None = None
        self._pending_open: Path | None = None  # a run to open once the models are listed
        self._run_path: Path | None = None
        self._unannounced: Path | None = None  # a new run whose run_changed waits for training
        self._run_step = 0
        self._resume_from: int | None = None  # plot truncation point of a resume job
        self._plot_total: int | None = None
        self._folder = ""
        self._folder_b = ""  # folder B of a paired family ("" = side-by-side files)
        self._n_images = 0
        self._checking = False
        self._resolution = settings.last_resolution()
        self._flip = True
        self.model_form: SettingsForm | None = None
        self._build()
        self._calls = JobCalls(runner, self)
        self._update_controls()

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.picker = ModelPicker()
        self.picker.model_changed.connect(self._on_model_changed)
        model_box = QGroupBox("Model")
        self._model_layout = QVBoxLayout(model_box)
        self._model_layout.addWidget(self.picker)
        self.pairs_box = self._build_pairs_row()
        self._model_layout.addWidget(self.pairs_box)

        self.options_form = SettingsForm(TrainingOptions, hidden=(), more_title="More options")
        saved = {k: v for k, v in self._settings.train_options().items() if k != "device"}
        self.options_form.set_values(fitting(saved, self.options_form.values()))
        self.options_form.set_values({"device": self._settings.device_preference()})
        self.options_form.values_changed.connect(self._on_options_changed)
        options_box = QGroupBox("Training")
        QVBoxLayout(options_box).addWidget(self.options_form)

        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("primary")
        self.start_button.setToolTip("Train a new run with these settings")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip(
            "Continue the paused or opened run up to Steps (with the run's own settings)"
        )
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End early and keep a checkpoint")
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.resume_button, self.stop_button):
            buttons.addWidget(b)
        self.continue_button = QPushButton("Continue on another folder…")
        self.continue_button.setToolTip(
            "Go on training the opened or finished run on new images without forgetting the "
            "old ones (generative replay, EWC)"
        )
        self.continue_button.clicked.connect(self.choose_continue)

        self.open_button = QPushButton("Open run…")
        self.open_button.clicked.connect(self.choose_run)
        self.rename_button = RenameButton(lambda: self._run_path, self._view_title)
        run_labels().refresh(self._settings.recent_runs())
        self.recent_button = QToolButton()
        self.recent_button.setText("Recent runs ▾")
        self.recent_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_menu = QMenu(self.recent_button)
        self.recent_menu.aboutToShow.connect(self._on_recent_menu)
        self.recent_button.setMenu(self.recent_menu)
        self.hint_label = QLabel()
        self.hint_label.setObjectName("hint")
        self.hint_label.setWordWrap(True)
        runs_row = QHBoxLayout()
        runs_row.addWidget(self.open_button)
        runs_row.addWidget(self.recent_button)
        runs_row.addWidget(self.rename_button)
        runs_row.addStretch(1)

        self.dataset_label = QLabel()  # which folder and resolution Start will use
        self.dataset_label.setObjectName("datasetHeader")
        self.dataset_label.setWordWrap(True)
        font = self.dataset_label.font()
        font.setBold(True)
        self.dataset_label.setFont(font)
        controls = QWidget()
        column = QVBoxLayout(controls)
        column.addWidget(self.dataset_label)
        column.addWidget(model_box)
        column.addWidget(options_box)
        column.addLayout(buttons)
        column.addWidget(self.continue_button)
        column.addWidget(self.hint_label)
        self.diagnosis = DiagnosisLabel()  # the family's advice from the logged metrics
        column.addWidget(self.diagnosis)
        column.addLayout(runs_row)
        self.peek_panel = PeekPanel(self._runner, self._settings)  # samples while it trains
        column.addWidget(self.peek_panel)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(controls)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(330)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)

        self.view = RunView()
        self.splitter = splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(self.view)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([340, 900])
        splitter.setChildrenCollapsible(False)
        layout = QHBoxLayout(self)
        layout.addWidget(splitter)

    def _build_pairs_row(self) -> QWidget:
        """Folder B of an image-to-image family, shown only when the chosen family trains on
        pairs: the Dataset folder is A (the inputs), this one B (the targets)."""
        box = QWidget()
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 4, 0, 0)
        self.folder_b_label = QLabel(PAIRED_TEXT[0])
        column.addWidget(self.folder_b_label)
        row = QHBoxLayout()
        self.folder_b_edit = QLineEdit()
        self.folder_b_edit.setReadOnly(True)
        self.folder_b_edit.setPlaceholderText(PAIRED_TEXT[1])
        self.folder_b_button = QPushButton("Choose…")
        self.folder_b_button.clicked.connect(self.choose_folder_b)
        self.folder_b_clear = QPushButton("Clear")
        self.folder_b_clear.clicked.connect(lambda: self.set_folder_b(""))
        row.addWidget(self.folder_b_edit, 1)
        row.addWidget(self.folder_b_button)
        row.addWidget(self.folder_b_clear)
        column.addLayout(row)
        self.folder_b_hint = hint = QLabel(PAIRED_TEXT[2])
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        column.addWidget(hint)
        self.folder_b_clear.setEnabled(False)
        box.setVisible(False)
        return box

    def choose_folder_b(self) -> None:
        start = self._folder_b or self._folder or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Folder B: the targets", start)
        if folder:
            self.set_folder_b(folder)

    def set_folder_b(self, folder: str) -> None:
        """Folder B of the next paired run ("" = the Dataset folder's side-by-side files)."""
        self._folder_b = str(folder)
        self.folder_b_edit.setText(self._folder_b)
        self.folder_b_edit.setToolTip(self._folder_b)
        self.folder_b_clear.setEnabled(bool(self._folder_b))

    @property
    def folder_b(self) -> str:
        return self._folder_b

    # -- inputs from the window --------------------------------------------------------------
    def load_families(self) -> None:
        """Ask the engine thread for the model families (this imports torch there)."""
        self._families_job = self._calls.submit(
            "Load models", engine_jobs.describe_families(), on_end=self._on_families_loaded
        )

    def set_dataset(self, folder: str, n_images: int, checking: bool = False) -> None:
        self._folder, self._n_images, self._checking = folder, n_images, checking
        self._update_controls()

    def set_data_options(self, resolution: int, flip: bool) -> None:
        self._resolution, self._flip = int(resolution), bool(flip)
        self._update_controls()

    # -- state -----------------------------------------------------------------------------
    @property
    def run_path(self) -> Path | None:
        return self._run_path

    def is_training(self) -> bool:
        return self._job is not None and self._job_trains

    def is_paused(self) -> bool:
        return self.is_training() and self._job is not None and self._job.token.paused

    def families_loaded(self) -> bool:
        return bool(self.picker.keys())

    def _update_controls(self) -> None:
        training = self.is_training()
        token = self._job.token if self._job is not None else None
        stopping = token is not None and token.stop_requested
        paused = token is not None and token.paused
        idle = self._job is None
        can_start = idle and self.families_loaded() and self._n_images > 0
        self.start_button.setEnabled(can_start)
        if not self.families_loaded():
            hint = "Loading the models…"
        elif idle and not self._n_images:
            hint = "Choose a folder of images in Dataset to start a new run."
        else:
            hint = ""
        self.hint_label.setText(hint)
        self.hint_label.setVisible(bool(hint))
        text, tip = dataset_header(self._folder, self._n_images, self._resolution, self._checking)
        self.dataset_label.setText(text)
        self.dataset_label.setToolTip(tip)
        self.pause_button.setEnabled(training and not paused and not stopping)
        self.resume_button.setEnabled(
            (training and paused and not stopping) or (idle and self._run_path is not None)
        )
        self.stop_button.setEnabled(training and not stopping)
        self.continue_button.setEnabled(idle and self._run_path is not None and self._run_step > 0)
        self.open_button.setEnabled(idle)
        self.recent_button.setEnabled(idle)
        self.picker.setEnabled(idle)
        self.pairs_box.setEnabled(idle)
        self.options_form.setEnabled(not training)
        self.peek_panel.set_training(training)
        if self.model_form is not None:
            self.model_form.setEnabled(idle)

    # -- actions ---------------------------------------------------------------------------
    def start(self) -> None:
        """Train a new run with the chosen model, the settings and the current dataset."""
        spec = self.picker.current_spec()
        if spec is None or self._job is not None or self.model_form is None:
            return
        if not self._n_images:
            self.view.show_error("Choose a folder with usable images in the Dataset workspace.")
            return
        from studio.engine.runs import TrainConfig, new_run_path

        opts = self.options_form.values()
        config = TrainConfig(
            family=spec.key,
            data=self._folder,
            data_b=self._folder_b if spec.paired else "",
            resolution=self._resolution,
            flip=self._flip,
            model=self.model_form.values(),
            **opts,
        )
        run_dir = new_run_path(runs_dir(), spec.key)
        names = [*spec.loss_names, *TRAINER_METRICS]
        self.view.clear(keep_curves=names)  # the last run's curves of these names are reused
        self.diagnosis.reset(spec.key)
        self.view.plot.prepare(names)  # the others are built one per event-loop turn
        self.view.plot.set_step_range(config.steps)
        self._plot_total = config.steps
        self._set_run(run_dir, 0, announce=False)
        self.view.watch(run_dir, metrics=False)  # sample files; points come from the job
        self.view.log_message(f"New run {run_dir}")
        # The job starts once the curves are built (one per event-loop turn, ~40 ms): its
        # start-up holds the GIL, and beside those turns it made each of them wait for it.
        plot = self.view.plot
        self._submit(
            f"Train {spec.display_name}",
            engine_jobs.train_new(run_dir, config),
            training=True,
            ready=lambda: not plot.preparing(),
        )

    def resume(self) -> None:
        """Un-pause the running job, or continue the current run from its last checkpoint."""
        if self.is_training() and self._job is not None:
            self._job.token.resume()
            self.view.log_message("Resumed")
            self._update_controls()
            return
        if self._job is not None or self._run_path is None:
            return
        opts = self.options_form.values()
        steps = int(opts["steps"])
        if steps <= self._run_step:
            self.view.show_info(
                f"This run has already trained {self._run_step:,} steps. Raise Steps above that "
                "to train it further."
            )
            return
        self.view.banner.clear()
        self._resume_from = self._run_step
        self.view.log_message(f"Resuming from step {self._run_step:,} to {steps:,}")
        self.view.watch(self._run_path, metrics=False)  # the job delivers the points now
        self.diagnosis.reset(self.picker.current_key() or "")
        factory = engine_jobs.train_resume(self._run_path, steps, opts["device"])
        self._submit(f"Resume {self._run_path.name}", factory, training=True)

    def choose_continue(self) -> None:
        """Ask for the new folder, replay share and EWC lambda; then continue the run."""
        from studio.qt.continue_dialog import ContinueDialog

        if self._job is not None or self._run_path is None:
            return
        default = self._run_step + int(self.options_form.values()["steps"])
        dialog = ContinueDialog(self._run_path, self._run_step, default, self)
        if dialog.exec() == ContinueDialog.DialogCode.Accepted:
            self.continue_on(dialog.request())

    def continue_on(self, request: Any) -> None:
        """Switch the current run to ``request.folder`` (a ContinueDialog's request) and
        train it there; the plot shows each folder's held-out metric as it goes."""
        if self._job is not None or self._run_path is None:
            return
        self.view.banner.clear()
        self._resume_from = self._run_step
        self.view.log_message(
            f"Continuing on {request.folder} from step {self._run_step:,} to {request.steps:,} "
            f"(replay {request.replay:g}, EWC {request.ewc:g})"
        )
        self.view.watch(self._run_path, metrics=False)  # the job delivers the points now
        self.diagnosis.reset(self.picker.current_key() or "")
        device = self.options_form.values()["device"]
        factory = engine_jobs.train_continue(
            self._run_path, request.folder, request.replay, request.ewc, request.steps, device
        )
        self._submit(f"Continue {self._run_path.name}", factory, training=True)

    def pause(self) -> None:
        if self.is_training() and self._job is not None:
            self._job.token.pause()
            self.view.set_status("Pausing after this step…")
            self._update_controls()

    def stop(self) -> None:
        """End training early; the job saves a checkpoint first."""
        if self.is_training() and self._job is not None:
            self._job.token.stop()
            self.view.set_status("Stopping: saving a checkpoint…")
            self._update_controls()

    def choose_run(self) -> None:
        start = str(self._run_path.parent if self._run_path else runs_dir())
        folder = QFileDialog.getExistingDirectory(self, "Open a run folder", start)
        if folder:
            self.open_run(folder)

    def open_run(self, path: str | Path) -> None:
        """Show a run's stored metrics and newest samples; Resume then continues it."""
        if self._job is not None:
            self.view.show_info(f"{Path(path).name} opens once the current job has ended.")
            return
        self.view.clear()
        if not self.families_loaded() and self._families_job is not None:
            # Its model settings need the families: open it as soon as they are listed.
            self._pending_open = Path(path)
            self.view.set_run_name(f"Opening {Path(path).name} once the models are loaded…")
            return
        self.view.set_run_name(f"Opening {Path(path).name}…")
        self._submit(f"Open {Path(path).name}", engine_jobs.open_run(Path(path)), training=False)

    # -- jobs ------------------------------------------------------------------------------
    def _submit(
        self,
        name: str,
        factory: Any,
        *,
        training: bool,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        """Run the panel's one job: a training run (new or resumed) or opening a run."""
        self._job_trains = training
        ended = self._on_training_ended if training else self._on_run_opened
        self._job = self._calls.submit(
            name,
            factory,
            keep=engine_jobs.keep_messages if training else None,
            ready=ready,
            on_progress=self._on_job_progress if training else None,
            on_events=self._on_job_events,
            on_end=lambda outcome: self._on_job_ended(outcome, ended),
        )
        if training:
            self.view.set_status("Waiting for the engine…")
        self._update_controls()

    def _set_run(self, path: Path, step: int, announce: bool = True) -> None:
        self._run_path, self._run_step = Path(path), step
        self.view.set_run_name(Path(path).name)
        self.view.run_label.setToolTip(str(path))
        self.rename_button.setEnabled(True)
        self.rename_button.show_title()
        self.peek_panel.set_run(Path(path))
        # A new run's folder is empty until its job starts: announced then, not at Start
        # (others would find no run there, and the Start click would do their work too).
        self._unannounced = None if announce else Path(path)
        if announce:
            self.run_changed.emit(str(path))

    def _on_job_progress(self, progress: Progress, image: Any, points: Any) -> None:
        if points:
            points = list(points)
            self.view.add_points(points)
            self.diagnosis.add_points(points)
        if image is not None:
            self.view.show_grid(image, progress.step)
        if progress.stage in ("train", "paused"):
            if self._unannounced is not None:
                self.run_changed.emit(str(self._unannounced))
                self._unannounced = None
            self._run_step = progress.step
            if progress.total and progress.total != self._plot_total:
                self._plot_total = progress.total
                self.view.plot.set_step_range(progress.total)
        self.view.set_status(format_status(progress))
        self.peek_panel.show_info(progress.info)
        self._update_controls()

    def _on_job_events(self, reports: list[Progress]) -> None:
        for report in reports:
            if self._resume_from is not None and report.stage == "train":
                # The engine re-trains from the run's last checkpoint and drops the metrics
                # logged after it; drop them from the plot too.
                self.view.plot.truncate_after(report.step)
                self._resume_from = None
            self.view.log_message(report.message, progress_key(report))

    def _on_job_ended(self, outcome: Outcome[Any], ended: Callable[[Outcome[Any]], None]) -> None:
        self._job, self._job_trains = None, False
        self._resume_from = None
        self._unannounced = None  # (a run that failed before it trained is not announced)
        ended(outcome)
        self._update_controls()

    def _on_families_loaded(self, outcome: Outcome[Any]) -> None:
        self._families_job = None
        if not outcome.ok:
            self.view.show_error(f"The models could not be loaded: {outcome.error}")
            self.picker.set_families([])
            self._update_controls()
            self._open_pending()
            return
        listing: engine_jobs.FamilyListing = outcome.result
        gcpolicy.freeze_startup_heap()  # the heavy imports are done: no more 300 ms full collections
        for key, why in listing.broken:
            self.view.log_message(f"Model {key} is unavailable: {why}")
        last = self._settings.last_family()  # (read first: listing picks a family itself)
        self.picker.set_families(listing.families)
        if last and self._job is None:
            self.picker.set_current_key(last)  # with its settings (_on_model_changed)
        self._update_controls()
        self._open_pending()

    def _open_pending(self) -> None:
        pending, self._pending_open = self._pending_open, None
        if pending is not None:
            self.open_run(pending)

    def _on_training_ended(self, outcome: Outcome[Any]) -> None:
        self.view.plot.fit_to_data()  # no room kept ahead of the last step any more
        path = self._run_path
        if path is not None and (path / "config.json").is_file():
            self._settings.add_recent_run(path)
        if outcome.status is Status.FINISHED:
            result = outcome.result
            self._run_step = int(result.step)
            if result.stopped_early:
                text = f"Stopped at step {result.step:,} of {result.steps:,}; checkpoint saved."
            else:
                text = f"Finished: {result.step:,} steps."
            self.view.log_message(text)
            self.view.set_status(text)
        elif outcome.status is Status.CANCELLED:
            self.view.log_message("Cancelled. Steps since the last checkpoint were not saved.")
            self.view.set_status("Cancelled")
        else:
            message = outcome.error or "Training failed."
            self.view.show_error(message)
            self.view.log_message(f"Error: {message}")
            if outcome.details:
                self.view.log_message(outcome.details.rstrip())
            self.view.set_status("Failed")

    def _on_run_opened(self, outcome: Outcome[Any]) -> None:
        if not outcome.ok:
            self._run_path = None  # Resume must not silently continue the previous run
            self.view.set_run_name("No run open")
            self.view.show_error(outcome.error or "The run could not be opened.")
            return
        snap: engine_jobs.RunSnapshot = outcome.result
        run_labels().put(label_from_config(snap.path, snap.config, snap.step))
        self._set_run(snap.path, snap.step)
        self._settings.add_recent_run(snap.path)
        self.view.plot.load_history(snap.columns)
        self.diagnosis.reset(snap.family)
        self.diagnosis.load_columns(snap.columns)
        self.view.watch(snap.path, snap.metrics_offset)  # keeps growing if trained elsewhere
        self._plot_total = max(snap.steps, snap.step) or None
        self.view.plot.set_step_range(self._plot_total)
        if snap.grid is not None:
            self.view.show_grid(snap.grid, snap.grid_step)
        for line in snap.messages:
            self.view.log_message(line)
        train = snap.config.get("train", {})
        if not self.picker.set_current_key(snap.family):
            self.view.show_error(f"This run's model ({snap.family}) is not available here.")
        elif self.model_form is not None:
            self.model_form.set_values(snap.config.get("model", {}))
        self.options_form.set_values({k: v for k, v in train.items() if k != "device"})
        state = "finished" if snap.steps and snap.step >= snap.steps else "stopped"
        self.view.set_status(f"Step {snap.step:,} / {snap.steps:,} ({state})")
        self.view.log_message(f"Opened {snap.path} at step {snap.step:,}")

    # -- small slots -----------------------------------------------------------------------
    def _on_model_changed(self, key: str) -> None:
        spec = self.picker.spec(key)
        if spec is None:
            return
        if self.model_form is not None:
            self._model_layout.removeWidget(self.model_form)
            self.model_form.deleteLater()
        self.model_form = SettingsForm(spec.config_cls)
        self.pairs_box.setVisible(spec.paired)
        label, placeholder, hint = UNPAIRED_TEXT if spec.unpaired else PAIRED_TEXT
        self.folder_b_label.setText(label)
        self.folder_b_edit.setPlaceholderText(placeholder)
        self.folder_b_hint.setText(hint)
        form = self.model_form
        form.set_values(fitting(self._settings.family_settings(key), form.values()))
        self._fill_remembered_files(form)
        form.values_changed.connect(
            lambda: self._settings.set_family_settings(key, plain(form.values()))
        )
        form.values_changed.connect(lambda: self._remember_files(form))
        self._settings.set_last_family(key)
        self._model_layout.addWidget(self.model_form)
        self._update_controls()
        self._offer_base_runs(form)

    def _fill_remembered_files(self, form: SettingsForm) -> None:
        """A file setting left empty gets the file last chosen for its kind (the VGG-19 file
        *Stylize* uses, say): choose it once for every tool that needs it."""
        values = form.values()
        fill = {
            name: str(self._settings.value(accepts.remember, "") or "")
            for name, accepts in form.file_settings().items()
            if accepts.remember and not values.get(name)
        }
        form.set_values({name: path for name, path in fill.items() if path})

    def _remember_files(self, form: SettingsForm) -> None:
        values = form.values()
        for name, accepts in form.file_settings().items():
            path = str(values.get(name) or "")
            if accepts.remember and path:
                self._settings.set_value(accepts.remember, path)

    def _offer_base_runs(self, form: SettingsForm) -> None:
        """Fill the form's run settings (runs this one builds on) with the runs that fit."""
        requirements = form.run_settings()
        if not requirements:
            return

        def offer(choices: dict[str, list[tuple[str, str]]]) -> None:
            if self.model_form is form:  # not replaced meanwhile
                for name, rows in choices.items():
                    form.set_run_choices(name, rows)

        self._calls.submit(
            "Find base runs",
            engine_jobs.base_run_choices(requirements, tuple(self._settings.recent_runs())),
            on_done=offer,
            interactive=True,  # a few small files: it may run between training steps
        )

    def _on_options_changed(self) -> None:
        values = self.options_form.values()
        self._settings.set_train_options(plain(values))
        device = values.get("device")
        if isinstance(device, str):
            self._settings.set_device_preference(device)

    def _on_recent_menu(self) -> None:
        self.recent_menu.clear()
        runs = self._settings.recent_runs()
        if not runs:
            self.recent_menu.addAction("No recent runs").setEnabled(False)
        run_labels().refresh(runs)  # (read on a worker: the next look shows any change)
        for run in runs:
            action = self.recent_menu.addAction(run_labels().text(run))
            action.setToolTip(run)
            action.triggered.connect(lambda _=False, r=run: self.open_run(r))

    def _view_title(self, title: str | None, error: str | None = None) -> None:
        if title is not None:
            self.view.set_run_name(title)
        if error:
            self.view.show_error(error)
