"""The Dataset workspace's *Compress…* dialog: ``studio compress`` in the window.

Choose a run with discrete codes (a VQ-VAE) and some images; the images are compressed on the
engine thread (:func:`studio.engine.compress.compress_images_job`) with a progress bar and
Cancel, and the dialog lists each image's size, bits per pixel, PSNR and SSIM, and shows the
image beside what decodes from its file. With an output folder, each file is kept there as
``<name>.svq`` (never over an existing file).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

from studio.core.jobs import CancelToken, Outcome, Progress, Status
from studio.core.paths import runs_dir
from studio.qt.engine_jobs import Factory
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.imaging import numpy_to_qimage
from studio.qt.job_calls import JobCalls
from studio.qt.widgets import Banner

COLUMNS = ("Image", "Pixels", "Bytes", "Bits/pixel", "PSNR (dB)", "SSIM")
PREVIEW = 256  # the side the previews are drawn at, at most (small images are enlarged)
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.gif *.tif *.tiff);;All files (*)"


def compress_factory(run: str, paths: list[str], out: str | None) -> Factory:
    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.compress import compress_images_job

        return (yield from compress_images_job(run, paths, out))

    return factory


class CompressDialog(QDialog):
    """Compress images with a VQ-VAE run and see what it costs and what comes back."""

    compressed = Signal(int)  # images compressed (0: failed, cancelled or none)

    def __init__(self, engine: JobRunner, parent: QWidget | None = None, folder: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Compress images")
        self._calls = JobCalls(engine, self, kind="Compress")
        self._job: JobHandle | None = None
        self._run = ""
        self._paths: list[str] = []
        self._folder = folder
        self.results: list[Any] = []

        intro = QLabel(
            "Use a VQ-VAE run as an image codec: each image becomes the run's codes, coded "
            "with how often the run's training images use them. Shown: the file's size in "
            "bits per pixel, and how close the decoded image is (PSNR, SSIM)."
        )
        intro.setWordWrap(True)
        self.run_button = QPushButton("Choose run…")
        self.run_button.clicked.connect(self._on_choose_run)
        self.run_label = QElidingLabel("No run chosen")
        self.run_label.setElideMode(Qt.TextElideMode.ElideMiddle)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.run_label, 1)
        self.images_button = QPushButton("Choose images…")
        self.images_button.clicked.connect(self._on_choose_images)
        self.images_label = QElidingLabel("No images chosen")
        self.images_label.setElideMode(Qt.TextElideMode.ElideMiddle)
        images_row = QHBoxLayout()
        images_row.addWidget(self.images_button)
        images_row.addWidget(self.images_label, 1)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("optional: a folder to keep the .svq files in")
        self.out_button = QPushButton("Choose…")
        self.out_button.clicked.connect(self._on_choose_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.out_button)
        form = QFormLayout()
        form.addRow("Run", run_row)
        form.addRow("Images", images_row)
        form.addRow("Keep files in", out_row)

        self.banner = Banner()
        self.progress = QProgressBar()
        self.progress_label = QLabel()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.original_view = QLabel()
        self.decoded_view = QLabel()
        previews = QHBoxLayout()
        for title, view in (("Original", self.original_view), ("Decoded", self.decoded_view)):
            box = QVBoxLayout()
            box.addWidget(QLabel(title))
            view.setMinimumSize(PREVIEW // 2, PREVIEW // 2)
            view.setAlignment(Qt.AlignmentFlag.AlignCenter)
            box.addWidget(view, 1)
            previews.addLayout(box)
        self.start_button = QPushButton("Compress")
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
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary_label)
        layout.addLayout(previews)
        layout.addLayout(buttons)
        self._update_buttons()

    # -- choices ---------------------------------------------------------------------------
    def set_run(self, run: str | Path) -> None:
        self._run = str(run)
        self.run_label.setText(self._run)
        self._update_buttons()

    def set_images(self, paths: list[str | Path]) -> None:
        self._paths = [str(p) for p in paths]
        n = len(self._paths)
        text = Path(self._paths[0]).name if n == 1 else f"{n} images"
        self.images_label.setText(text if n else "No images chosen")
        self._update_buttons()

    def set_folder(self, folder: str) -> None:
        """Where *Choose images…* opens (the Dataset workspace's folder)."""
        self._folder = folder

    # -- the job ---------------------------------------------------------------------------
    def start(self) -> None:
        if not (self._run and self._paths) or self._job is not None:
            return
        self.banner.clear()
        self.summary_label.clear()
        self.table.setRowCount(0)
        self.original_view.clear()
        self.decoded_view.clear()
        self.results = []
        out = self.out_edit.text().strip() or None
        self._job = self._calls.submit(
            "Compress images",
            compress_factory(self._run, list(self._paths), out),
            on_progress=self._on_progress,
            on_end=self._on_end,
        )
        self.progress.setRange(0, 0)
        self.progress_label.setText("Starting…")
        self._update_buttons()

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()
            self.progress_label.setText("Cancelling…")

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
            self.summary_label.setText(
                "Cancelled (.svq files written before that stay in their folder)."
            )
            self.compressed.emit(0)
            return
        if outcome.status is Status.FAILED:
            self.banner.show_message(outcome.error or "The images could not be compressed.")
            self.compressed.emit(0)
            return
        self.results = list(outcome.result)
        self._fill_table()
        done = [r.report for r in self.results if r.report is not None]
        if done:
            pixels = sum(r.original.shape[0] * r.original.shape[1] for r in done)
            bits = sum(r.file_bytes * 8 for r in done)
            kept = " Files kept as <name>.svq." if done[0].out is not None else ""
            self.summary_label.setText(
                f"{len(done)} image(s): {bits / pixels:.3f} bits/pixel over all; code "
                f"frequencies {done[0].table_source}.{kept}"
            )
            self.table.selectRow(next(i for i, r in enumerate(self.results) if r.report))
        self.compressed.emit(len(done))

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.results))
        for row, result in enumerate(self.results):
            report = result.report
            if report is None:
                cells = [result.path.name, result.error, "", "", "", ""]
            else:
                h, w = report.original.shape[:2]
                cells = [
                    result.path.name,
                    f"{w} × {h}",
                    f"{report.file_bytes:,}",
                    f"{report.bits_per_pixel:.3f}",
                    f"{report.psnr:.2f}",
                    f"{report.ssim:.4f}",
                ]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(result.path) if col == 0 else text)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()

    def _on_row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.results):
            return
        report = self.results[rows[0].row()].report
        if report is None:
            self.original_view.clear()
            self.decoded_view.clear()
            return
        for view, image in (
            (self.original_view, report.original),
            (self.decoded_view, report.decoded),
        ):
            pixmap = QPixmap.fromImage(numpy_to_qimage(image))
            mode = (
                Qt.TransformationMode.FastTransformation  # small images: see the pixels
                if max(image.shape[:2]) < PREVIEW
                else Qt.TransformationMode.SmoothTransformation
            )
            view.setPixmap(
                pixmap.scaled(PREVIEW, PREVIEW, Qt.AspectRatioMode.KeepAspectRatio, mode)
            )

    # -- pickers ---------------------------------------------------------------------------
    def _on_choose_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a VQ-VAE run", str(runs_dir()))
        if folder:
            self.set_run(folder)

    def _on_choose_images(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Choose images to compress", self._folder, IMAGE_FILTER
        )
        if paths:
            self.set_images(paths)

    def _on_choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder for the .svq files")
        if folder:
            self.out_edit.setText(folder)

    def _update_buttons(self) -> None:
        busy = self._job is not None
        self.start_button.setEnabled(not busy and bool(self._run and self._paths))
        self.cancel_button.setEnabled(busy)
        for w in (self.run_button, self.images_button, self.out_button, self.out_edit):
            w.setEnabled(not busy)
