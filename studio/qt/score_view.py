"""The Dataset workspace's *Odd ones out* tab: rank the folder's images by how unusual a run
finds them, and set the unusual ones aside.

Scoring runs on the engine thread (it is model work, like sampling); the closer look at one
image runs there too, latest-wins, between training steps. Copying, moving, undoing and the
CSV export are file work and run on the workspace's scan lane. The GUI thread only shows: the
ranked list with thumbnails, the score histogram with a threshold line to drag (every image at
or above it is *flagged*), the selected image beside the model's reconstruction and a heat map
of its per-pixel error. Moves are undone from an in-memory log (:class:`MoveLog`) kept as long
as the window is open.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

from studio.core.flagged import MoveLog, Placed, Transfer, TransferResult
from studio.core.jobs import Outcome, Progress, Status
from studio.core.paths import runs_dir
from studio.qt import score_jobs
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.imaging import numpy_to_qimage
from studio.qt.job_calls import JobCalls
from studio.qt.widgets import Banner, ImageView

THUMB_ICON = 40
FLAG_SHARE = 0.05  # the threshold starts where it flags this share of the images
FLAGGED = QColor(230, 80, 60, 70)


def heat_map(error: np.ndarray) -> np.ndarray:
    """A per-pixel error (H x W, >= 0) as an RGB heat map: black, red, yellow, white at the
    image's largest error."""
    top = float(error.max()) if error.size else 0.0
    v = np.clip(error / top, 0.0, 1.0) if top > 0 else np.zeros_like(error)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1)
    return (rgb * 255).round().astype(np.uint8)


class ScoreView(QWidget):
    """Choose a run, score the folder, inspect and set aside the odd ones out."""

    scored = Signal(int)  # images ranked (0: failed or cancelled)

    def __init__(self, engine: JobRunner, files: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._calls = JobCalls(engine, self, kind="Score")
        self._files = JobCalls(files, self)
        self.move_log = MoveLog()
        self._folder = ""
        self._run = ""
        self._scored: Any = None  # score_jobs.Scored
        self._images: list[Any] = []  # ranked by the chosen score
        self._away: set[str] = set()  # moved out of the folder (until a move is undone)
        self._shaded = 0  # the first rows shown as flagged
        self._job: JobHandle | None = None
        self._build()
        self._update_buttons()

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.run_button = QPushButton("Choose run…")
        self.run_button.clicked.connect(self._on_choose_run)
        self.run_label = QElidingLabel("No run chosen: the run's model scores the images")
        self.run_label.setElideMode(Qt.TextElideMode.ElideMiddle)
        self.score_button = QPushButton("Score this folder")
        self.score_button.clicked.connect(self.score)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.score_combo = QComboBox()
        self.score_combo.setToolTip("Which score ranks the images (higher = more unusual)")
        self.score_combo.currentIndexChanged.connect(self._on_score_chosen)
        top = QHBoxLayout()
        top.addWidget(self.run_button)
        top.addWidget(self.run_label, 1)
        top.addWidget(QLabel("Rank by"))
        top.addWidget(self.score_combo)
        top.addWidget(self.score_button)
        top.addWidget(self.cancel_button)

        self.banner = Banner()
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress_label = QLabel()
        busy = QHBoxLayout()
        busy.setContentsMargins(0, 0, 0, 0)
        busy.addWidget(self.progress, 1)
        busy.addWidget(self.progress_label, 1)
        self.busy_row = QWidget()
        self.busy_row.setLayout(busy)
        self.busy_row.hide()

        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Rank", "Image", "Score"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setIconSize(QSize(THUMB_ICON, THUMB_ICON))
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(THUMB_ICON + 4)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setColumnWidth(1, 260)
        self.table.currentCellChanged.connect(self._on_row_changed)

        self.histogram = pg.PlotWidget()
        self.histogram.setMinimumHeight(140)
        self.histogram.setMouseEnabled(x=False, y=False)
        self.histogram.getPlotItem().setLabel("left", "images")
        self.threshold = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen("r", width=2))
        self.threshold.setToolTip("Drag: images at or above the line are flagged")
        self.threshold.sigPositionChanged.connect(self._on_threshold_moved)
        self.flagged_label = QLabel()

        self.image_view = ImageView("The selected image")
        self.recon_view = ImageView("The model's reconstruction")
        self.heat_view = ImageView("Where it differs")
        self.detail_label = QLabel()
        self.detail_label.setWordWrap(True)
        views = QGridLayout()
        for col, (title, view) in enumerate(
            (
                ("Image", self.image_view),
                ("Reconstruction", self.recon_view),
                ("Error", self.heat_view),
            )
        ):
            view.setMinimumSize(96, 96)
            views.addWidget(QLabel(title), 0, col)
            views.addWidget(view, 1, col)
        right = QWidget()
        side = QVBoxLayout(right)
        side.addWidget(self.histogram, 2)
        side.addWidget(self.flagged_label)
        side.addLayout(views, 3)
        side.addWidget(self.detail_label)
        split = QSplitter()
        split.addWidget(self.table)
        split.addWidget(right)
        split.setStretchFactor(1, 1)

        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self._on_export)
        self.copy_button = QPushButton("Copy flagged to…")
        self.copy_button.clicked.connect(lambda: self._on_transfer(Transfer.COPY))
        self.move_button = QPushButton("Move flagged to…")
        self.move_button.clicked.connect(lambda: self._on_transfer(Transfer.MOVE))
        self.undo_button = QPushButton("Undo move")
        self.undo_button.clicked.connect(self.undo_move)
        bottom = QHBoxLayout()
        for button in (self.export_button, self.copy_button, self.move_button, self.undo_button):
            bottom.addWidget(button)
        bottom.addStretch(1)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addWidget(self.busy_row)
        layout.addWidget(split, 1)
        layout.addLayout(bottom)

    # -- public API ------------------------------------------------------------------------
    def set_folder(self, folder: str) -> None:
        """The folder to score (the Dataset workspace's); a new folder clears the ranking."""
        if folder != self._folder:
            self._folder = folder
            self._clear()
        self._update_buttons()

    def set_run(self, run: str | Path) -> None:
        self._run = str(run)
        self.run_label.setText(self._run)
        self._update_buttons()

    @property
    def ranked_by(self) -> str:
        return str(self.score_combo.currentData() or "")

    def values(self) -> list[float]:
        """The chosen score of every listed image, in the order shown."""
        return [float(img.scores[self.ranked_by]) for img in self._images]

    def flagged(self) -> list[Any]:
        """The images at or above the threshold, most unusual first."""
        t = self.threshold.value()
        return [img for img in self._images if not img.scores[self.ranked_by] < t]

    def score(self) -> None:
        if not (self._run and self._folder) or self._job is not None:
            return
        self._clear()
        self._job = self._calls.submit(
            "Score images",
            score_jobs.score_folder(self._run, self._folder),
            on_progress=self._on_progress,
            on_end=self._on_scored,
        )
        self._busy("Starting…")

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()
            self.progress_label.setText("Cancelling…")

    def undo_move(self) -> None:
        if not self.move_log.can_undo:
            return
        self._files.submit("Undo move", score_jobs.undo_move(self.move_log), on_end=self._on_undone)
        self._busy("Moving the files back…")

    # -- scoring ---------------------------------------------------------------------------
    def _busy(self, text: str) -> None:
        self.progress.setRange(0, 0)
        self.progress_label.setText(text)
        self.busy_row.show()
        self._update_buttons()

    def _idle(self) -> None:
        self.busy_row.hide()
        self._update_buttons()

    def _on_progress(self, progress: Progress, _image: Any, _points: Any) -> None:
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.step)
        if progress.message:
            self.progress_label.setText(progress.message)

    def _on_scored(self, outcome: Outcome[Any]) -> None:
        self._job = None
        self._idle()
        if outcome.status is not Status.FINISHED:
            if outcome.status is Status.FAILED:
                self.banner.show_message(outcome.error or "The images could not be scored.")
            self.scored.emit(0)
            return
        self._scored = outcome.result
        report = self._scored.report
        self.score_combo.blockSignals(True)
        self.score_combo.clear()
        for option in report.options:
            self.score_combo.addItem(f"{option.label} ({option.unit})", option.name)
            self.score_combo.setItemData(
                self.score_combo.count() - 1, option.help, Qt.ItemDataRole.ToolTipRole
            )
        self.score_combo.blockSignals(False)
        skipped = len(report.skipped)
        if skipped:
            self.banner.show_message(
                f"{skipped} file{'s' if skipped != 1 else ''} could not be read and "
                "were not scored (see the Skipped tab).",
                "warning",
            )
        self._rank()
        self.scored.emit(len(self._images))

    def _on_score_chosen(self, _index: int) -> None:
        if self._scored is not None:
            self._rank()

    def _rank(self) -> None:
        """Order the images by the chosen score (pure Python on the GUI thread: a sort)."""
        report, name = self._scored.report, self.ranked_by
        order = {img.path: i for i, img in enumerate(report.images)}
        thumbs = report.thumbnails

        def key(img: Any) -> tuple[float, str]:
            value = img.scores[name]
            return (float("-inf") if value != value else -value, img.path)

        self._images = sorted((i for i in report.images if i.path not in self._away), key=key)
        self._shaded = 0  # the rows below are new items, none shaded
        self.table.setRowCount(len(self._images))
        for row, img in enumerate(self._images):
            rank = QTableWidgetItem(str(row + 1))
            item = QTableWidgetItem(img.path)
            item.setToolTip(img.path)
            if thumbs is not None:
                qimg = numpy_to_qimage(thumbs[order[img.path]])
                item.setIcon(QIcon(QPixmap.fromImage(qimg)))
            value = QTableWidgetItem(f"{img.scores[name]:.4g}")
            for col, cell in enumerate((rank, item, value)):
                self.table.setItem(row, col, cell)
        self._draw_histogram()

    def _draw_histogram(self) -> None:
        plot = self.histogram.getPlotItem()
        plot.clear()
        values = np.array([img.scores[self.ranked_by] for img in self._images], dtype=float)
        values = values[np.isfinite(values)]
        if not len(values):
            return
        counts, edges = np.histogram(values, bins=min(40, max(5, len(values) // 3)))
        bars = pg.BarGraphItem(x0=edges[:-1], x1=edges[1:], height=counts, brush=(90, 140, 220))
        plot.addItem(bars)
        plot.setLabel("bottom", self.score_combo.currentText())
        plot.addItem(self.threshold)
        low, high = float(values.min()), float(values.max())
        self.threshold.setBounds((low, high))
        start = float(np.quantile(values, 1.0 - FLAG_SHARE)) if len(values) > 1 else high
        self.threshold.setValue(start)
        self._on_threshold_moved()

    def _on_threshold_moved(self, *_args: Any) -> None:
        flagged = self.flagged()
        n = len(flagged)
        self.flagged_label.setText(
            f"{n} of {len(self._images)} images flagged (score ≥ {self.threshold.value():.4g})"
        )
        # Only the rows that changed side are repainted: a drag reports many small moves.
        low, high = sorted((self._shaded, n))
        for row in range(low, min(high, self.table.rowCount())):
            brush = QBrush(FLAGGED) if row < n else QBrush()
            for col in range(3):
                item = self.table.item(row, col)
                if item is not None:
                    item.setBackground(brush)
        self._shaded = n
        self._update_buttons()

    # -- the closer look -------------------------------------------------------------------
    def _on_row_changed(self, row: int, *_args: Any) -> None:
        if self._scored is None or not 0 <= row < len(self._images):
            return
        img = self._images[row]
        self.detail_label.setText(f"Looking at {img.path}…")
        self._calls.submit(
            "Look closer",
            score_jobs.look_closer(self._scored.model, self._folder, img.path),
            on_done=self._show_detail,
            on_failed=self.detail_label.setText,
            lane="detail",
            interactive=True,
        )

    def _show_detail(self, detail: Any) -> None:
        self.image_view.set_image(detail.image)
        self.recon_view.set_image(detail.reconstruction)
        self.heat_view.set_image(None if detail.error_map is None else heat_map(detail.error_map))
        scores = ", ".join(f"{k} {v:.4g}" for k, v in detail.scores.items())
        note = "" if detail.reconstruction is not None else " (this model has no reconstruction)"
        self.detail_label.setText(f"{detail.path}: {scores}{note}")

    # -- export, copy, move, undo ----------------------------------------------------------
    def ranked_report(self) -> Any:
        """The report in the order shown (by the chosen score), for the CSV."""
        report = self._scored.report
        images = tuple(dataclasses.replace(img, rank=i + 1) for i, img in enumerate(self._images))
        return dataclasses.replace(report, ranked_by=self.ranked_by, images=images, thumbnails=None)

    def export_to(self, path: str) -> JobHandle:
        self._busy("Writing the CSV…")
        return self._files.submit(
            "Export scores",
            score_jobs.export_csv(self.ranked_report(), path),
            on_done=lambda p: self.banner.show_message(f"Wrote {p}.", "info"),
            on_failed=self.banner.show_message,
            on_end=lambda _o: self._idle(),
        )

    def transfer_to(self, target: str, action: Transfer) -> JobHandle:
        files = [img.path for img in self.flagged()]
        placed: list[Placed] = []

        def ended(outcome: Outcome[Any]) -> None:
            # Recorded whatever the ending: a move stopped midway is still undoable.
            if action is Transfer.MOVE:
                self.move_log.record(TransferResult(Transfer.MOVE, tuple(placed)))
                self._set_away(placed, away=True)
            if outcome.status is Status.FINISHED:
                result = outcome.result
                level = "warning" if result.failed else "info"
                lines = [result.summary()] + [f"{p.name}: {why}" for p, why in result.failed[:5]]
                self.banner.show_message(" ".join(lines), level)
            elif outcome.status is Status.FAILED:
                self.banner.show_message(outcome.error or "The files could not be handled.")
            self._idle()

        self._busy("Copying…" if action is Transfer.COPY else "Moving…")
        return self._files.submit(
            "Set aside flagged images",
            score_jobs.copy_or_move(files, self._folder, target, action, placed),
            on_end=ended,
        )

    def _on_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the scores", str(Path(self._folder).parent / "scores.csv"), "CSV (*.csv)"
        )
        if path:
            self.export_to(path)

    def _on_transfer(self, action: Transfer) -> None:
        verb = "Copy" if action is Transfer.COPY else "Move"
        target = QFileDialog.getExistingDirectory(
            self, f"{verb} the flagged images to", str(Path(self._folder).parent)
        )
        if target:
            self.transfer_to(target, action)

    def _on_undone(self, outcome: Outcome[Any]) -> None:
        self._idle()
        if outcome.status is Status.FINISHED:
            result = outcome.result
            self._set_away([Placed(p.target, p.source) for p in result.done], away=False)
            text = f"Moved {len(result.done)} file{'s' if len(result.done) != 1 else ''} back."
            if result.failed:
                text += f" {len(result.failed)} could not go back and stay where they were."
            self.banner.show_message(text, "warning" if result.failed else "info")
        else:
            self.banner.show_message(outcome.error or "The move could not be undone.")

    def _set_away(self, placed: list[Placed], away: bool) -> None:
        """Files moved out leave the list; files moved back (``placed``' sources, as they
        were when scored) return to it."""
        root = Path(self._folder)
        for item in placed:
            try:
                rel = item.source.relative_to(root).as_posix()
            except ValueError:
                rel = item.source.resolve().relative_to(root.resolve()).as_posix()
            (self._away.add if away else self._away.discard)(rel)
        if self._scored is not None and placed:
            self._rank()

    def _on_choose_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a trained run", str(runs_dir()))
        if folder:
            self.set_run(folder)

    # -- state -----------------------------------------------------------------------------
    def _clear(self) -> None:
        self._away = set()
        self._shaded = 0
        self._scored = None
        self._images = []
        self.table.setRowCount(0)
        self.histogram.getPlotItem().clear()
        self.flagged_label.clear()
        self.detail_label.clear()
        self.banner.clear()
        for view in (self.image_view, self.recon_view, self.heat_view):
            view.set_image(None)

    def _update_buttons(self) -> None:
        busy = self.busy_row.isVisibleTo(self) or self._job is not None
        have = self._scored is not None
        self.score_button.setEnabled(bool(self._run and self._folder) and not busy)
        self.cancel_button.setEnabled(self._job is not None)
        self.score_combo.setEnabled(have and not busy)
        self.export_button.setEnabled(have and not busy)
        any_flagged = have and bool(self._images) and bool(self.flagged())
        self.copy_button.setEnabled(any_flagged and not busy)
        self.move_button.setEnabled(any_flagged and not busy)
        self.undo_button.setEnabled(self.move_log.can_undo and not busy)
