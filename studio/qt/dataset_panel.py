"""The Dataset workspace: choose an image folder, see what is usable and what was skipped.

Scanning (which decodes every image) and making the demo dataset run on the panel's own *scan
lane*: a second :class:`~studio.qt.engine_thread.JobRunner` with one thread, so a folder can be
checked while a model trains on the engine thread. Scans are file work of unbounded length, so
they must neither wait for training nor run between its steps (that would stall it). The lane
decodes one image at a time, and while a model trains it also rests as long as it works
(:func:`gentle`), so a CPU training run on a few cores keeps most of its speed. A scan writes
nothing (the decoded-image cache is written by training's own load on the engine thread,
atomically). This panel only shows the lane's progress and results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path, PurePosixPath
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QFontMetrics, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

from studio.core.errors import NoUsableImages
from studio.core.jobs import CancelToken, Outcome, Progress, Status
from studio.engine import live  # no torch: which runs are training now
from studio.qt import engine_jobs
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.imaging import numpy_to_qimage
from studio.qt.job_calls import JobCalls
from studio.qt.score_view import ScoreView
from studio.qt.settings import RESOLUTIONS, AppSettings
from studio.qt.thumbnails import CELL, ICON_SIZE, letterbox, thumbnail_tooltip
from studio.qt.widgets import Banner

MAX_SIZES_SHOWN = 4
TRAINING_SHARE = 0.5  # while a model trains, a scan works about this share of the time
MAX_REST_S = 0.25  # so a cancel is still noticed quickly


def gentle(factory: Any, share: float = TRAINING_SHARE) -> Any:
    """Wrap a job factory so the job rests while a model trains here.

    After each stretch of work between two reports it sleeps ``(1 - share) / share`` times as
    long (at most :data:`MAX_REST_S`), which frees the CPU and the GIL for the training step.
    With nothing training it runs at full speed. Results and reports are unchanged.
    """
    factor = (1.0 - share) / share

    def job(token: CancelToken) -> Generator[Progress, None, Any]:
        inner = factory(token)
        try:
            while True:
                start = time.perf_counter()
                try:
                    progress = next(inner)
                except StopIteration as end:
                    return end.value
                if live.live_paths() and not token.cancelled:
                    time.sleep(min((time.perf_counter() - start) * factor, MAX_REST_S))
                yield progress
        finally:
            inner.close()

    return job


class DatasetPanel(QWidget):
    """Folder choice, scan progress, thumbnails, size and class summary, skipped files.

    ``dataset_changed(folder, n_images)`` fires when a scan ends: ``n_images`` is 0 when the
    folder has no usable image, the scan failed or was cancelled.
    """

    dataset_changed = Signal(str, int)
    scan_started = Signal(str)  # the previous dataset no longer counts from here on
    options_changed = Signal(int, bool)  # resolution, horizontal flip

    def __init__(
        self, runner: JobRunner, settings: AppSettings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._runner = runner  # the engine thread: only asked whether something is training
        # The scan lane: same jobs, mailbox and signals as the engine thread, its own thread.
        self.scan_runner = JobRunner(self)
        self.scan_runner.engine.setObjectName("studio-scans")
        self._settings = settings
        self._job: JobHandle | None = None
        self._folder = ""
        self._n_images = 0
        self._scan: Any = None
        self.pairs_dialog: Any = None  # studio.qt.pairs_view.PairsDialog, made when first shown
        self._build()
        lane = self.scan_runner
        self._calls = JobCalls(lane, self)

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.choose_button = QPushButton("Choose folder…")
        self.choose_button.clicked.connect(self.choose_folder)
        self.demo_button = QPushButton("Use demo dataset")
        self.demo_button.setToolTip(
            "3,000 small pictures of coloured shapes, made on this computer"
        )
        self.demo_button.clicked.connect(self.use_demo)
        self.recent_button = QToolButton()
        self.recent_button.setText("Recent ▾")
        self.recent_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_menu = QMenu(self.recent_button)
        self.recent_menu.aboutToShow.connect(self._on_recent_menu)
        self.recent_button.setMenu(self.recent_menu)
        self.folder_label = QElidingLabel("No folder chosen")
        self.folder_label.setElideMode(Qt.TextElideMode.ElideMiddle)
        self.folder_label.setObjectName("folderLabel")
        self.rescan_button = QPushButton("Scan")  # the last folder, missing at start
        self.rescan_button.setToolTip("Scan the folder last used again (once it is back)")
        self.rescan_button.clicked.connect(lambda: self.set_folder(self._settings.last_folder()))
        self.rescan_button.hide()
        top = QHBoxLayout()
        for w in (self.choose_button, self.demo_button, self.recent_button):
            top.addWidget(w)
        top.addWidget(self.folder_label, 1)
        top.addWidget(self.rescan_button)
        self.pairs_button = QPushButton("Pairs…")
        self.pairs_button.setToolTip(
            "Check two folders of paired images (or side-by-side files) for image-to-image models"
        )
        self.pairs_button.clicked.connect(self.show_pairs)
        top.addWidget(self.pairs_button)
        self.augment_button = QPushButton("Make more…")
        self.augment_button.setToolTip(
            "Generate more images per class with a trained run, into a new folder"
        )
        self.augment_button.clicked.connect(self.show_augment)
        top.addWidget(self.augment_button)
        self.augment_dialog: Any = None  # studio.qt.augment_dialog.AugmentDialog, made when shown
        self.compress_button = QPushButton("Compress…")
        self.compress_button.setToolTip(
            "Compress images with a VQ-VAE run: bits per pixel, PSNR, SSIM and the decoded image"
        )
        self.compress_button.clicked.connect(self.show_compress)
        top.addWidget(self.compress_button)
        self.compress_dialog: Any = None  # studio.qt.compress_dialog.CompressDialog, when shown

        self.banner = Banner()
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress_label = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        busy = QHBoxLayout()
        busy.addWidget(self.progress, 1)
        busy.addWidget(self.progress_label, 1)
        busy.addWidget(self.cancel_button)
        self.busy_row = QWidget()
        self.busy_row.setLayout(busy)
        busy.setContentsMargins(0, 0, 0, 0)
        self.busy_row.hide()

        self.count_label = QLabel("Choose a folder of images, or try the demo dataset.")
        self.count_label.setObjectName("headline")
        self.sizes_label = QLabel()
        self.classes_label = QLabel()
        self.skipped_label = QLabel()
        for label in (self.sizes_label, self.classes_label, self.skipped_label):
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        summary_box = QGroupBox("Dataset")
        summary = QVBoxLayout(summary_box)
        for w in (self.count_label, self.sizes_label, self.classes_label, self.skipped_label):
            summary.addWidget(w)
        summary.addStretch(1)

        self.resolution_combo = QComboBox()
        for res in RESOLUTIONS:
            self.resolution_combo.addItem(f"{res} × {res}", res)
        self.resolution_combo.setCurrentIndex(RESOLUTIONS.index(self._settings.last_resolution()))
        self.resolution_combo.setToolTip("Images are scaled and centre-cropped to this size")
        self.resolution_combo.currentIndexChanged.connect(self._on_options_edited)
        self.flip_check = QCheckBox("Horizontal flip")
        self.flip_check.setChecked(self._settings.last_flip())
        self.flip_check.setToolTip("Also train on mirror images (doubles the variety)")
        self.flip_check.toggled.connect(self._on_options_edited)
        options_box = QGroupBox("Training input")
        options = QFormLayout(options_box)
        options.addRow("Resolution", self.resolution_combo)
        options.addRow("", self.flip_check)

        middle = QHBoxLayout()
        middle.addWidget(summary_box, 3)
        middle.addWidget(options_box, 1)

        self.thumbnails = QListWidget()
        self.thumbnails.setViewMode(QListView.ViewMode.IconMode)
        self.thumbnails.setIconSize(QSize(ICON_SIZE, ICON_SIZE))
        self.thumbnails.setGridSize(CELL)
        self.thumbnails.setWordWrap(False)
        self.thumbnails.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.thumbnails.setSpacing(0)
        self.thumbnails.setResizeMode(QListView.ResizeMode.Adjust)
        self.thumbnails.setMovement(QListView.Movement.Static)
        self.thumbnails.setUniformItemSizes(True)
        self.thumbnails.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.skipped_table = QTableWidget(0, 3)
        self.skipped_table.setHorizontalHeaderLabels(["File", "Reason", "Detail"])
        self.skipped_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.skipped_table.verticalHeader().hide()
        header = self.skipped_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.skipped_table.setColumnWidth(0, 260)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.thumbnails, "Images")
        self.tabs.addTab(self.skipped_table, "Skipped")
        # Odd ones out: scoring is model work (the engine thread), set-aside is file work (the
        # scan lane).
        self.score_view = ScoreView(self._runner, self.scan_runner)
        self.tabs.addTab(self.score_view, "Odd ones out")

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addWidget(self.busy_row)
        layout.addLayout(middle)
        layout.addWidget(self.tabs, 1)

    # -- public API ------------------------------------------------------------------------
    @property
    def folder(self) -> str:
        return self._folder

    @property
    def n_images(self) -> int:
        return self._n_images

    @property
    def resolution(self) -> int:
        return int(self.resolution_combo.currentData())

    @property
    def flip(self) -> bool:
        return self.flip_check.isChecked()

    @property
    def scan_result(self) -> Any:
        """The last finished scan (a :class:`studio.engine.data.ScanResult`), or None."""
        return self._scan

    def is_busy(self) -> bool:
        return self._job is not None

    def choose_folder(self) -> None:
        """Ask for a folder with a dialog, then scan it."""
        start = self._folder or (self._settings.recent_folders() or [str(Path.home())])[0]
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of images", start)
        if folder:
            self.set_folder(folder)

    def restore_last_folder(self) -> bool:
        """At start: rescan the folder last used (on the scan lane), or, when it is gone, say so
        and offer *Scan*. True when a scan started."""
        folder = self._settings.last_folder()
        if not folder:
            return False
        if Path(folder).is_dir():  # one stat; the scan itself runs on the scan lane
            self.set_folder(folder)
            return True
        self.folder_label.setText(f"Last used: {folder} (not found)")
        self.folder_label.setToolTip(folder)
        self.count_label.setText("The folder last used is not there")
        self.banner.show_message(
            f"The folder last used, {folder}, no longer exists. Choose a folder, or press Scan "
            "once it is back (a removable drive, a network share).",
            "warning",
        )
        self.rescan_button.show()
        return False

    def set_folder(self, folder: str | Path) -> None:
        """Scan ``folder`` on the scan lane (cancelling a scan still running)."""
        self._cancel_job()
        self.rescan_button.hide()
        self._folder = str(Path(folder).expanduser())
        self._n_images = 0
        self._scan = None
        self.folder_label.setText(self._folder)
        self.folder_label.setToolTip(self._folder)
        self._clear_results()
        self.scan_started.emit(self._folder)
        self._start_job(
            f"Scan {self._folder}",
            gentle(engine_jobs.scan(self._folder)),
            self._on_scan_ended,
            keep=engine_jobs.keep_thumbnails,
            on_events=self._on_job_events,
        )

    def show_pairs(self) -> Any:
        """Open the paired-images dialog (on the scan lane), starting from the chosen folder."""
        from studio.qt.pairs_view import PairsDialog

        dialog = self.pairs_dialog
        if dialog is None:
            dialog = self.pairs_dialog = PairsDialog(self.scan_runner, self, start=self._folder)
        dialog.show()
        dialog.raise_()
        return dialog

    def show_augment(self) -> Any:
        """Open the *Make more…* dialog (on the engine thread: it draws samples)."""
        from studio.qt.augment_dialog import AugmentDialog

        dialog = self.augment_dialog
        if dialog is None:
            dialog = self.augment_dialog = AugmentDialog(self._runner, self)
        dialog.show()
        dialog.raise_()
        return dialog

    def show_compress(self) -> Any:
        """Open the *Compress…* dialog (on the engine thread: it runs the model)."""
        from studio.qt.compress_dialog import CompressDialog

        dialog = self.compress_dialog
        if dialog is None:
            dialog = self.compress_dialog = CompressDialog(self._runner, self)
        dialog.set_folder(self._folder)
        dialog.show()
        dialog.raise_()
        return dialog

    def use_demo(self) -> None:
        """Make (or reuse) the demo dataset, then scan it."""
        self._cancel_job()
        self.banner.clear()
        self._start_job("Demo dataset", gentle(engine_jobs.demo_dataset()), self._on_demo_ended)

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()
            self.progress_label.setText("Cancelling…")
            self.cancel_button.setEnabled(False)

    def shutdown(
        self, timeout_ms: int = 10_000, process_events: Callable[[], None] | None = None
    ) -> bool:
        """Cancel the scan and stop the scan lane's thread; return whether it stopped in time.

        A scan keeps nothing worth a graceful stop, so it is cancelled at once; it notices at
        its next report (at least every quarter second). The thread is never terminated.
        """
        self._cancel_job()
        return self.scan_runner.shutdown(timeout_ms, grace_ms=0, process_events=process_events)

    # -- jobs ------------------------------------------------------------------------------
    def _start_job(
        self,
        name: str,
        factory: Any,
        on_end: Callable[[Outcome[Any]], None],
        *,
        keep: Any = None,
        on_events: Callable[[list[Progress]], None] | None = None,
    ) -> None:
        """Submit the panel's one job (a scan or the demo dataset) with its own ending."""
        self._job = self._calls.submit(
            name,
            factory,
            keep=keep,
            on_started=self._on_job_started,
            on_progress=self._on_job_progress,
            on_events=on_events,
            on_end=on_end,
        )
        self.progress.setRange(0, 0)
        # A scan just cancelled ends at its next report, a fraction of a second.
        waiting = self.scan_runner.engine.running_job() not in (None, self._job)
        self.progress_label.setText(
            "Finishing the previous scan…" if waiting else self._starting_text()
        )
        self.cancel_button.setEnabled(True)
        self.busy_row.show()

    def _cancel_job(self) -> None:
        self._calls.forget(self._job)  # its late reports and its end are ignored
        self._job = None
        self.busy_row.hide()

    def _starting_text(self) -> str:
        if self._runner.engine.running_job() is not None:
            return "Starting (alongside the running job)…"
        return "Starting…"

    def _on_job_started(self, _handle: JobHandle) -> None:
        self.progress_label.setText(self._starting_text())

    def _on_job_progress(self, progress: Progress, _image: Any, _points: Any) -> None:
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.step)
        else:
            self.progress.setRange(0, 0)
        if progress.message:
            self.progress_label.setText(progress.message)

    def _on_job_events(self, reports: list[Progress]) -> None:
        from studio.engine.data import Thumbnail  # the scan imported it on the engine thread

        metrics, middle = QFontMetrics(self.thumbnails.font()), Qt.TextElideMode.ElideMiddle
        self.thumbnails.setUpdatesEnabled(False)
        for report in reports:
            if not isinstance(report.payload, Thumbnail):
                continue
            thumb = report.payload
            icon = QIcon(QPixmap.fromImage(letterbox(numpy_to_qimage(report.image))))
            name = PurePosixPath(thumb.path).name
            item = QListWidgetItem(icon, metrics.elidedText(name, middle, CELL.width() - 8))
            item.setData(Qt.ItemDataRole.UserRole, thumb.path)
            item.setToolTip(thumbnail_tooltip(thumb.path, thumb.width, thumb.height))
            item.setSizeHint(CELL)
            self.thumbnails.addItem(item)
        self.thumbnails.setUpdatesEnabled(True)

    def _on_demo_ended(self, outcome: Outcome[Any]) -> None:
        self._job = None
        self.busy_row.hide()
        if outcome.status is Status.FINISHED:
            self.set_folder(outcome.result)
        elif outcome.status is Status.FAILED:
            self.banner.show_message(f"The demo dataset could not be made: {outcome.error}")

    def _on_scan_ended(self, outcome: Outcome[Any]) -> None:
        self._job = None
        self.busy_row.hide()
        if outcome.status is Status.FINISHED:
            self._show_scan(outcome.result)
        else:
            if outcome.status is Status.FAILED:
                self.banner.show_message(outcome.error or "The folder could not be read.")
                self.count_label.setText("No usable images")
            else:
                self.count_label.setText("Scan cancelled")
            self.dataset_changed.emit(self._folder, 0)

    # -- results ---------------------------------------------------------------------------
    def _clear_results(self) -> None:
        self.banner.clear()
        self.thumbnails.clear()
        self.skipped_table.setRowCount(0)
        self.count_label.setText("Checking images…")
        for label in (self.sizes_label, self.classes_label, self.skipped_label):
            label.clear()
        self.tabs.setTabText(0, "Images")
        self.tabs.setTabText(1, "Skipped")

    def _show_scan(self, scan: Any) -> None:
        self._scan = scan
        n, skipped = len(scan.entries), len(scan.skipped)
        self.count_label.setText(f"{n:,} image{'s' if n != 1 else ''} found")
        sizes = scan.size_summary()
        if sizes:
            shown = ", ".join(f"{w}×{h} ({c:,})" for w, h, c in sizes[:MAX_SIZES_SHOWN])
            more = len(sizes) - MAX_SIZES_SHOWN
            extra = f", and {more:,} other size{'s' if more != 1 else ''}" if more > 0 else ""
            self.sizes_label.setText(f"Sizes: {shown}{extra}")
        if scan.class_names:
            self.classes_label.setText(
                f"Classes ({len(scan.class_names)}): {', '.join(scan.class_names)}"
            )
        elif n:
            self.classes_label.setText("Classes: none (no subfolders)")
        self.skipped_label.setText(
            f"Skipped: {skipped:,} file{'s' if skipped != 1 else ''} (see the Skipped tab)"
            if skipped
            else "Skipped: none"
        )
        self._fill_skipped(scan.skipped)
        shown_thumbs = self.thumbnails.count()
        self.tabs.setTabText(
            0, f"Images ({shown_thumbs:,} of {n:,})" if shown_thumbs < n else f"Images ({n:,})"
        )
        self.tabs.setTabText(1, f"Skipped ({skipped:,})")
        try:
            scan.require_usable()
        except NoUsableImages as err:
            self.count_label.setText("No usable images")
            self.banner.show_message(str(err))
            if skipped:
                self.tabs.setCurrentIndex(1)
            self.dataset_changed.emit(self._folder, 0)
            return
        self._n_images = n
        self.score_view.set_folder(self._folder)
        self._settings.add_recent_folder(self._folder)
        self._settings.set_last_folder(self._folder)
        if live.live_paths():  # scanned while a model trains: say which images it uses
            self.banner.show_message(
                "The run training now keeps the images it loaded when it started; "
                "new runs will use this folder.",
                "info",
            )
        self.dataset_changed.emit(self._folder, n)

    def _fill_skipped(self, skipped: Any) -> None:
        table = self.skipped_table
        table.setUpdatesEnabled(False)
        table.setRowCount(len(skipped))
        for row, item in enumerate(skipped):
            for col, text in enumerate((item.path, item.reason, item.detail)):
                cell = QTableWidgetItem(text)
                cell.setToolTip(text)
                table.setItem(row, col, cell)
        table.setUpdatesEnabled(True)

    # -- small slots -----------------------------------------------------------------------
    def _on_options_edited(self, *_args: Any) -> None:
        self._settings.set_last_resolution(self.resolution)
        self._settings.set_last_flip(self.flip)
        self.options_changed.emit(self.resolution, self.flip)

    def _on_recent_menu(self) -> None:
        self.recent_menu.clear()
        folders = self._settings.recent_folders()
        if not folders:
            self.recent_menu.addAction("No recent folders").setEnabled(False)
        for folder in folders:
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda _=False, f=folder: self.set_folder(f))
