"""The Dataset workspace's *Pairs…* dialog: check two folders of paired images (or one folder of
side-by-side files) for image-to-image models, see the pairs side by side and every file left
out with its reason.

The scan runs on the Dataset workspace's scan lane (its own thread), like a folder scan; this
dialog only shows its reports and its result (:func:`studio.engine.pairs.preview_pairs`).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

from studio.core.jobs import CancelToken, Outcome, Progress, Status
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.imaging import numpy_to_qimage
from studio.qt.job_calls import JobCalls
from studio.qt.widgets import Banner

THUMB = 72
GAP = 4
SHOWN = 48


def preview(folder_a: str, folder_b: str | None) -> Any:
    """Job factory: the pairs of ``folder_a`` and ``folder_b`` (None: side-by-side files)."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.pairs import preview_pairs

        return (yield from preview_pairs(folder_a, folder_b, thumbnails=SHOWN, size=THUMB, gap=GAP))

    return factory


def keep_pair_thumbnails(progress: Progress) -> bool:
    from studio.engine.pairs import PairThumbnail  # the job imported it on its thread

    return progress.image is not None and isinstance(progress.payload, PairThumbnail)


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]:,} × {size[1]:,} px"


class PairsDialog(QDialog):
    """Choose folder A and folder B (or one side-by-side folder), check them, see the pairs."""

    def __init__(self, lane: JobRunner, parent: QWidget | None = None, start: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Paired images")
        self._calls = JobCalls(lane, self)
        self._job: JobHandle | None = None
        self.scan: Any = None
        self._folders = {"A": "", "B": ""}

        intro = QLabel(
            "Image-to-image models learn from pairs: folder A holds the inputs, folder B the "
            "targets, matched by relative path and name (a/cat.png with b/cat.jpg). Or one "
            "folder whose images hold A on the left half and B on the right."
        )
        intro.setWordWrap(True)
        self.side_by_side = QCheckBox("One folder of side-by-side images (A left, B right)")
        self.side_by_side.toggled.connect(self._on_layout_changed)
        grid = QGridLayout()
        self.folder_labels: dict[str, QElidingLabel] = {}
        self.folder_buttons: dict[str, QPushButton] = {}
        for row, side in enumerate(("A", "B")):
            button = QPushButton(f"Folder {side}…")
            button.clicked.connect(lambda _=False, s=side: self._choose(s))
            label = QElidingLabel("(none chosen)")
            label.setElideMode(Qt.TextElideMode.ElideMiddle)
            grid.addWidget(button, row, 0)
            grid.addWidget(label, row, 1)
            self.folder_labels[side], self.folder_buttons[side] = label, button
        grid.setColumnStretch(1, 1)
        self.check_button = QPushButton("Check pairs")
        self.check_button.clicked.connect(self.check)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.check_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)

        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.status = QLabel("Choose the folders, then Check pairs.")
        self.status.setWordWrap(True)
        self.banner = Banner()

        self.pairs_list = QListWidget()
        self.pairs_list.setViewMode(QListView.ViewMode.IconMode)
        self.pairs_list.setIconSize(QSize(2 * THUMB + GAP, THUMB))
        self.pairs_list.setGridSize(QSize(2 * THUMB + GAP + 16, THUMB + 28))
        self.pairs_list.setUniformItemSizes(True)
        self.pairs_list.setMovement(QListView.Movement.Static)
        self.pairs_list.setResizeMode(QListView.ResizeMode.Adjust)
        self.pairs_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.left_out = QTableWidget(0, 4)
        self.left_out.setHorizontalHeaderLabels(["Folder", "File", "Reason", "Detail"])
        self.left_out.verticalHeader().hide()
        self.left_out.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.left_out.horizontalHeader()
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.pairs_list, "Pairs")
        self.tabs.addTab(self.left_out, "Left out")

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.side_by_side)
        layout.addLayout(grid)
        layout.addLayout(buttons)
        layout.addWidget(self.banner)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.tabs, 1)
        self.resize(720, 560)
        if start:
            self.set_folder("A", start)
        self._update_buttons()

    # -- folders ---------------------------------------------------------------------------
    def set_folder(self, side: str, folder: str | Path) -> None:
        self._folders[side] = str(folder)
        self.folder_labels[side].setText(str(folder) or "(none chosen)")
        self._update_buttons()

    def _choose(self, side: str) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, f"Folder {side}", self._folders[side] or self._folders["A"]
        )
        if folder:
            self.set_folder(side, folder)

    def _on_layout_changed(self, one_folder: bool) -> None:
        self.folder_buttons["A"].setText("Folder…" if one_folder else "Folder A…")
        for w in (self.folder_buttons["B"], self.folder_labels["B"]):
            w.setVisible(not one_folder)
        self._update_buttons()

    def _update_buttons(self) -> None:
        one = self.side_by_side.isChecked()
        ready = bool(self._folders["A"]) and (one or bool(self._folders["B"]))
        self.check_button.setEnabled(ready and self._job is None)

    # -- the job ---------------------------------------------------------------------------
    def check(self) -> None:
        folder_b = None if self.side_by_side.isChecked() else self._folders["B"]
        self.cancel()
        self.banner.clear()
        self.pairs_list.clear()
        self.left_out.setRowCount(0)
        self.scan = None
        self._job = self._calls.submit(
            "Check pairs",
            preview(self._folders["A"], folder_b),
            keep=keep_pair_thumbnails,
            on_progress=self._on_progress,
            on_events=self._on_thumbnails,
            on_end=self._on_end,
        )
        self.progress.setRange(0, 0)
        self.progress.show()
        self.status.setText("Checking the images…")
        self.cancel_button.setEnabled(True)
        self._update_buttons()

    def cancel(self) -> None:
        if self._job is not None:
            self._calls.forget(self._job)
            self._job.token.cancel()
            self._job = None
            self.progress.hide()
            self.status.setText("Cancelled.")
            self.cancel_button.setEnabled(False)
            self._update_buttons()

    def _on_progress(self, progress: Progress, _image: Any, _points: Any) -> None:
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.step)
        if progress.message:
            self.status.setText(progress.message)

    def _on_thumbnails(self, reports: list[Progress]) -> None:
        for report in reports:
            pair = report.payload
            icon = QIcon(QPixmap.fromImage(numpy_to_qimage(report.image)))
            name = Path(pair.a).name
            if pair.b != pair.a:
                name += f" ↔ {Path(pair.b).name}"
            item = QListWidgetItem(icon, name)
            item.setToolTip(
                f"A: {pair.a} ({_size(pair.size_a)})\nB: {pair.b} ({_size(pair.size_b)})"
            )
            self.pairs_list.addItem(item)

    def _on_end(self, outcome: Outcome[Any]) -> None:
        self._job = None
        self.progress.hide()
        self.cancel_button.setEnabled(False)
        self._update_buttons()
        if outcome.status is Status.FAILED:
            self.status.setText("The folders could not be checked.")
            self.banner.show_message(outcome.error or "The folders could not be read.")
            return
        if outcome.status is not Status.FINISHED:
            self.status.setText("Cancelled.")
            return
        self._show(outcome.result)

    def _show(self, scan: Any) -> None:
        self.scan = scan
        rows = [(p.side, p.path, p.reason, p.detail) for p in scan.problems]
        first = "AB" if scan.side_by_side else "A"
        rows += [(first, s.path, s.reason, s.detail) for s in scan.skipped_a]
        rows += [("B", s.path, s.reason, s.detail) for s in scan.skipped_b]
        self.left_out.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.left_out.setItem(r, c, QTableWidgetItem(text))
        self.left_out.resizeColumnsToContents()
        n = len(scan.pairs)
        text = f"{n:,} pair{'s' if n != 1 else ''}; {len(rows):,} file"
        text += f"{'s' if len(rows) != 1 else ''} left out"
        if scan.class_names:
            text += f"; classes: {', '.join(scan.class_names)}"
        if n > SHOWN:
            text += f". The first {SHOWN} pairs are shown."
        self.status.setText(text)
        self.tabs.setTabText(0, f"Pairs ({n:,})")
        self.tabs.setTabText(1, f"Left out ({len(rows):,})")
        if not n:
            try:
                scan.require_usable()
            except Exception as err:  # NoUsableImages: its sentence says what pairs need
                self.banner.show_message(str(err))
            self.tabs.setCurrentIndex(1)

    def done(self, result: int) -> None:  # closing cancels the check
        self.cancel()
        super().done(result)
