"""The main window: a workspace switcher, menus and a status bar around the panels.

It owns the one engine thread (through a :class:`JobRunner`) and makes sure it has stopped
before the window closes: a running training job is asked to stop, which saves a checkpoint
(after the user agrees: a close while training asks first).
The Dataset workspace scans folders on a lane of its own (a second runner), stopped first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QWidget,
)

from studio import __version__
from studio.core.jobs import Outcome, Status
from studio.qt.canvas import CanvasWorkspace
from studio.qt.canvas.send import install_send_to_canvas
from studio.qt.compare import CompareWorkspace
from studio.qt.dataset_panel import DatasetPanel
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.latent import LatentWorkspace
from studio.qt.project_menu import ProjectMenu
from studio.qt.prompt import PromptWorkspace
from studio.qt.restore import existing_runs, restore_splitters, save_splitters
from studio.qt.run_names import run_labels
from studio.qt.settings import AppSettings
from studio.qt.train_panel import TrainPanel
from studio.qt.wheel_guard import guard_wheel

CLOSE_TIMEOUT_MS = 30_000
GUARD_MS = 1000  # how often the page in view has fields built since guarded (wheel_guard)
# Jobs too small and frequent for the status bar (a slider drag decodes dozens of times).
QUIET_JOBS = frozenset({"Decode"})


class MainWindow(QMainWindow):
    """The workspaces (Dataset, Train, Canvas, ...), menus, and one engine thread."""

    DATASET, TRAIN, COMPARE, EXPLORE, CANVAS, PROMPT = 0, 1, 2, 3, 4, 5
    ask_before_quitting = True  # a close while training asks first (confirm_stop_training)

    def __init__(self, settings: AppSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Studio")
        self.settings = settings if settings is not None else AppSettings()
        self.close_timeout_ms = CLOSE_TIMEOUT_MS
        self._closing = False
        self._closed = False
        self._compare_loaded = False
        self._splitters_restored = False
        self.runner = JobRunner(self)
        self.dataset_panel = DatasetPanel(self.runner, self.settings)
        self.train_panel = TrainPanel(self.runner, self.settings)
        self.compare_panel = CompareWorkspace(self.runner, self.settings)
        self.latent_workspace = LatentWorkspace(self.runner, self.settings)
        self.canvas = CanvasWorkspace(self.runner, self.settings)
        self.prompt = PromptWorkspace(self.runner, self.settings, self.canvas)

        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.addItems(["Dataset", "Train", "Compare", "Explore", "Canvas", "Prompt"])
        self.nav.setFixedWidth(130)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.dataset_panel)
        self.stack.addWidget(self.train_panel)
        self.stack.addWidget(self.compare_panel)
        self.stack.addWidget(self.latent_workspace)
        self.stack.addWidget(self.canvas)
        self.stack.addWidget(self.prompt)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.nav.currentRowChanged.connect(self._on_workspace_shown)
        self.nav.setCurrentRow(self.DATASET)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self._build_menus()
        self.dataset_panel.dataset_changed.connect(self._on_dataset_changed)
        self.dataset_panel.scan_started.connect(self._on_scan_started)
        self.dataset_panel.options_changed.connect(self.train_panel.set_data_options)
        self.train_panel.set_data_options(self.dataset_panel.resolution, self.dataset_panel.flip)
        self.canvas.status_message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.train_panel.run_changed.connect(self.canvas.set_run)
        install_send_to_canvas(self.train_panel.view.grid, self.send_to_canvas)
        self.compare_panel.send_to_canvas = self.send_to_canvas
        self.prompt.send_to_canvas = self.send_to_canvas  # text-to-image results
        self.prompt.status_message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        for runner in (self.runner, self.dataset_panel.scan_runner):
            runner.job_started.connect(self._on_job_started)
            runner.job_finished.connect(self._on_job_finished)
        guard_wheel(self)  # every workspace: the wheel changes only a focused field
        # Fields a workspace builds later (Explore's sliders, Compare's panels) are guarded
        # when shown and by this timer on the page in view (< 1 ms a look).
        self._guard_timer = QTimer(self)
        self._guard_timer.setInterval(GUARD_MS)
        self._guard_timer.timeout.connect(lambda: guard_wheel(self.stack.currentWidget()))
        self._guard_timer.start()
        self.canvas.document_changed.connect(self._on_canvas_document)
        self.statusBar().showMessage("Loading the models…")
        self._restore_geometry()
        self.train_panel.load_families()  # (the last family and its settings come back then)
        self.dataset_panel.restore_last_folder()  # rescanned on the scan lane, or reported gone
        workspace = self.settings.workspace()
        if 0 < workspace < self.nav.count():
            self.show_workspace(workspace)
        QTimer.singleShot(0, self._offer_recovery)

    def _pages(self) -> dict[str, QWidget]:
        names = ("dataset", "train", "compare", "explore", "canvas", "prompt")
        return {name: self.stack.widget(i) for i, name in enumerate(names)}

    def _on_workspace_shown(self, index: int) -> None:
        page = self.stack.widget(index)
        if page is not None:
            guard_wheel(page)  # (fields a workspace built since: guarded fields are skipped)
        if index == self.COMPARE and not self._compare_loaded:
            self._compare_loaded = True  # the runs compared last, else the latest of each family
            if not self._restore_compare_runs():
                self.compare_panel.load_default_runs()
        # Explore the Train panel's run, opened lazily: a just-started run has no weights yet;
        # with none, the run explored last.
        if index == self.EXPLORE and self.latent_workspace.loaded is None:
            run = self.train_panel.run_path or self._last_explore_run()
            if run:
                self.latent_workspace.set_run(run)

    def _restore_compare_runs(self) -> bool:
        runs, gone = existing_runs(self.settings.compare_runs())
        added = [run for run in runs if self.compare_panel.add_run(run)]
        if gone:
            self.compare_panel.banner.show_message(
                "Runs compared last that are no longer there: " + ", ".join(gone), "info"
            )
        return bool(added)

    def _last_explore_run(self) -> Path | None:
        saved = self.settings.explore_run()
        if not saved:
            return None
        if (Path(saved) / "config.json").is_file():
            return Path(saved)
        self.latent_workspace.banner.show_message(
            f"The run explored last, {saved}, is no longer there.", "info"
        )
        self.settings.set_explore_run("")  # said once
        return None

    def _on_canvas_document(self, doc: Any) -> None:
        if getattr(doc, "source_path", None):  # an image file (a sample sent here has none)
            self.settings.set_last_canvas_image(doc.source_path)

    def _reopen_canvas_image(self) -> None:
        """The image last open on the canvas, read on the canvas's worker; gone: said so."""
        path = self.settings.last_canvas_image()
        if not path or self.canvas.document is not None:
            return
        if Path(path).is_file():
            self.canvas.open_image(path)
        else:
            self.canvas.banner.show_message(
                f"The image last open here, {path}, is no longer there.", "info"
            )

    def _save_workspaces(self) -> None:
        """What the next start gives back: the workspace shown, splitters, chosen runs."""
        self.settings.set_workspace(self.nav.currentRow())
        save_splitters(self.settings, self._pages())
        if self._compare_loaded:
            self.settings.set_compare_runs([str(run) for run in self.compare_panel.runs()])
        loaded = self.latent_workspace.loaded
        if loaded is not None:
            self.settings.set_explore_run(loaded.path)

    def keep_compare_board(self) -> None:
        """Compare shows the board set (a project's): no newest runs are added on first show."""
        self._compare_loaded = True

    def _offer_recovery(self) -> None:
        """After a crash, offer the canvas autosave left behind."""
        if self.canvas.offer_recovery(self):
            self.show_workspace(self.CANVAS)
        else:
            self._reopen_canvas_image()

    def send_to_canvas(self, image: Any, name: str = "Sample") -> None:
        """Open an image (H x W x 3 uint8) on the canvas: the hook for any sample view."""
        if self.canvas.set_image(image, name):
            self.show_workspace(self.CANVAS)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self._add_action(
            file_menu, "Open folder…", self._on_open_folder, QKeySequence.StandardKey.Open
        )
        self._add_action(file_menu, "Use demo dataset", self._on_use_demo)
        file_menu.addSeparator()
        self._add_action(file_menu, "Open run…", self._on_open_run, "Ctrl+Shift+O")
        self.recent_runs_menu = file_menu.addMenu("Recent runs")
        self.recent_runs_menu.aboutToShow.connect(self._on_recent_runs_menu)
        file_menu.addSeparator()
        self.projects = ProjectMenu(self, file_menu)  # New / Open / Save project, recent ones
        file_menu.addSeparator()
        self._add_action(file_menu, "Quit", self.close, QKeySequence.StandardKey.Quit)
        self.menuBar().addMenu(self.canvas.build_menu(self))
        help_menu = self.menuBar().addMenu("&Help")
        self._add_action(help_menu, "About Studio", self._on_about)

    def _add_action(self, menu: Any, text: str, slot: Any, shortcut: Any = None) -> QAction:
        action = menu.addAction(text)
        action.triggered.connect(slot)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        return action

    def show_workspace(self, index: int) -> None:
        self.nav.setCurrentRow(index)

    # -- menu actions ----------------------------------------------------------------------
    def _on_open_folder(self) -> None:
        self.show_workspace(self.DATASET)
        self.dataset_panel.choose_folder()

    def _on_use_demo(self) -> None:
        self.show_workspace(self.DATASET)
        self.dataset_panel.use_demo()

    def _on_open_run(self) -> None:
        self.show_workspace(self.TRAIN)
        self.train_panel.choose_run()

    def _on_recent_runs_menu(self) -> None:
        self.recent_runs_menu.clear()
        runs = self.settings.recent_runs()
        if not runs:
            self.recent_runs_menu.addAction("No recent runs").setEnabled(False)
        run_labels().refresh(runs)  # "name — family, dataset, step N", read on a worker
        for run in runs:
            action = self.recent_runs_menu.addAction(run_labels().text(run))
            action.setToolTip(run)
            action.triggered.connect(lambda _=False, r=run: self._open_recent_run(r))

    def _open_recent_run(self, run: str) -> None:
        self.show_workspace(self.TRAIN)
        self.train_panel.open_run(run)

    def _on_about(self) -> None:
        QMessageBox.about(
            self,
            "About Studio",
            f"<b>Studio</b> {__version__}<p>Train small generative models on your own images, "
            "on this computer.</p>",
        )

    # -- status ----------------------------------------------------------------------------
    def _on_scan_started(self, folder: str) -> None:
        self.train_panel.set_dataset(folder, 0, checking=True)  # not the old folder meanwhile

    def _on_dataset_changed(self, folder: str, n_images: int) -> None:
        self.train_panel.set_dataset(folder, n_images)
        if n_images:
            self.statusBar().showMessage(f"{n_images:,} images ready: train on them in Train", 8000)

    def _on_job_started(self, handle: JobHandle) -> None:
        if handle.name not in QUIET_JOBS:
            self.statusBar().showMessage(f"{handle.name}…")

    def _on_job_finished(self, handle: JobHandle, outcome: Outcome[Any]) -> None:
        if handle.name in QUIET_JOBS and outcome.status is not Status.FAILED:
            return
        if outcome.status is Status.FINISHED:
            text = "Models loaded" if handle.name == "Load models" else f"{handle.name}: done"
        elif outcome.status is Status.CANCELLED:
            text = f"{handle.name}: cancelled"
        else:
            text = f"{handle.name}: failed"
        self.statusBar().showMessage(text, 8000)

    # -- geometry and closing --------------------------------------------------------------
    def _restore_geometry(self) -> None:
        geometry = self.settings.window_geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1280, 800)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._splitters_restored:  # once laid out at its size: sizes given now stick
            self._splitters_restored = True
            QTimer.singleShot(0, lambda: restore_splitters(self.settings, self._pages()))

    def confirm_stop_training(self) -> bool:
        """Ask before a close stops the run that is training (False: keep the window open).
        Not asked when ``ask_before_quitting`` is off (Ctrl-C in the terminal, smoke tests)."""
        if not self.ask_before_quitting:
            return True
        answer = QMessageBox.question(
            self,
            "Quit Studio",
            "Training is running: stop it (a checkpoint is saved) and quit?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self._closed:
            event.accept()
            return
        if self._closing:  # a second close while the first waits for the engine
            event.ignore()
            return
        self._closing = True
        if self.train_panel.is_training() and not self.confirm_stop_training():
            self._closing = False
            event.ignore()
            return
        if not self.canvas.confirm_close(self):  # unsaved canvas edits: Save / Discard / Cancel
            self._closing = False
            event.ignore()
            return
        self.prompt.shutdown()  # cancels a generation, keeps its settings
        self.canvas.shutdown()  # cancels an inpaint, finishes file writes, drops the autosave
        self.latent_workspace.shutdown()  # its own decode thread
        self.dataset_panel.shutdown(process_events=QApplication.processEvents)  # the scan lane
        self.train_panel.view.shutdown()  # the run's and the overlays' metrics watchers
        self.settings.set_window_geometry(self.saveGeometry())
        self.settings.set_window_state(self.saveState())
        self._save_workspaces()
        self.settings.sync()
        if self.runner.is_busy():
            self.statusBar().showMessage("Stopping… (training saves a checkpoint first)")
            self.centralWidget().setEnabled(False)
            QApplication.processEvents()
        # Never terminate the thread: stop (keeps a checkpoint), then cancel, then wait.
        stopped = self.runner.shutdown(
            self.close_timeout_ms, process_events=QApplication.processEvents
        )
        if not stopped:
            self.statusBar().showMessage("A job did not stop in time; it is left to finish.")
        self._closing = False
        self._closed = True
        event.accept()
