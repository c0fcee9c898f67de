"""The right side of the Train workspace: what a run is doing and has done.

A banner for failures, the status line, the metric plots, the timeline of sample grids and a
log. It displays, and it follows a run folder that grows on disk (``watch``): a run opened
while something else trains it, or one synced from a headless machine. The panel decides what
to show; every file read here happens on a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSplitter, QVBoxLayout, QWidget

from studio.qt.overlay_picker import OverlayPicker
from studio.qt.plot import MetricsPlot
from studio.qt.run_watch import BackgroundReader, RunWatcher, read_all_metrics
from studio.qt.timeline import SampleTimeline
from studio.qt.widgets import Banner

LOG_LINES = 5000


def _list_runs() -> list[Any]:
    from studio.core.paths import runs_dir
    from studio.engine.runs import list_runs

    return list_runs(runs_dir())


class RunView(QWidget):
    """Banner, status line, plots beside the sample timeline, and the message log."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.banner = Banner()
        self.run_label = QLabel("No run yet")
        self.run_label.setObjectName("headline")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QLabel("")
        self.status_label.setObjectName("status")
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.plot = MetricsPlot()
        self.plot.overlay_requested.connect(self.choose_overlays)
        self.timeline = SampleTimeline("Sample grids appear here while the model trains.")
        self.grid = self.timeline.view  # the image widget (the window adds a context menu)
        self.grid_caption = self.timeline.caption

        self.watcher = RunWatcher(self)
        self.watcher.metrics_arrived.connect(self._on_metrics_arrived)
        self.watcher.samples_found.connect(self.timeline.set_samples)
        self.reader = BackgroundReader(self)  # run lists and overlaid runs' metrics
        self.reader.finished.connect(self._on_read)
        self._reads: dict[int, tuple[str, Any]] = {}  # ticket -> (what, detail)
        self._overlays: dict[str, Path] = {}  # label -> run folder
        self._picker: OverlayPicker | None = None
        self._path: Path | None = None  # the run shown (left out of the overlay list)

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setPlaceholderText("Messages: skipped files, checkpoints, errors.")
        self.log.setObjectName("log")

        # Plots take the full height on the left; the square sample grid and the log share
        # the right column, so neither leaves an empty band under the grid.
        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(self.timeline)
        side.addWidget(self.log)
        side.setStretchFactor(0, 3)
        side.setStretchFactor(1, 1)
        side.setSizes([470, 150])
        side.setChildrenCollapsible(False)
        body = QSplitter(Qt.Orientation.Horizontal)
        body.addWidget(self.plot)
        body.addWidget(side)
        body.setStretchFactor(0, 1)
        body.setStretchFactor(1, 1)
        body.setSizes([560, 400])
        body.setChildrenCollapsible(False)
        self.body = body

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.banner)
        layout.addWidget(self.run_label)
        layout.addWidget(self.status_label)
        layout.addWidget(body, 1)

    def clear(self) -> None:
        """Empty everything for a new run (overlaid runs stay) and stop following a folder."""
        self.watcher.stop()
        self._path = None
        self.banner.clear()
        self.plot.clear(overlays=False)
        self.timeline.clear()
        self.status_label.clear()
        self.log.clear()

    def set_run_name(self, text: str) -> None:
        self.run_label.setText(text)

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def show_grid(self, image: np.ndarray, step: int | None) -> None:
        self.timeline.add_image(step, image)

    def add_points(self, points: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        self.plot.add_points(points)

    def log_message(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    def log_lines(self) -> list[str]:
        return self.log.toPlainText().splitlines()

    def show_error(self, text: str) -> None:
        self.banner.show_message(text, "error")

    def show_info(self, text: str) -> None:
        self.banner.show_message(text, "info")

    # -- following a run folder ------------------------------------------------------------
    def watch(self, path: str | Path, offset: int = 0, metrics: bool = True) -> None:
        """Follow ``path`` as it grows: metrics from byte ``offset`` (when ``metrics``) and
        its sample grids. A training job of this window delivers its own points, so it
        watches with ``metrics=False``."""
        self._path = Path(path)
        self.watcher.watch(path, offset, metrics)

    def stop_watching(self) -> None:
        self.watcher.stop()

    def _on_metrics_arrived(self, cols: dict[str, Any], reset: bool) -> None:
        if reset:
            self.plot.clear(overlays=False)
            self.log_message("metrics.jsonl was rewritten (a resume?): reloaded it")
        self.plot.add_columns(cols)

    # -- overlays --------------------------------------------------------------------------
    def overlaid(self) -> dict[str, Path]:
        return dict(self._overlays)

    def choose_overlays(self) -> OverlayPicker:
        """Open the picker; the run list arrives from the worker thread."""
        if self._picker is not None:
            self._picker.raise_()
            return self._picker
        picker = self._picker = OverlayPicker(self._overlays.values(), self)
        picker.accepted.connect(lambda: self.apply_overlays(picker.chosen()))
        picker.finished.connect(self._on_picker_closed)
        self._reads[self.reader.submit(_list_runs)] = ("runs", picker)
        picker.open()
        return picker

    def apply_overlays(self, paths: Iterable[str | Path]) -> None:
        """Overlay exactly ``paths`` (others are taken off); their metrics load off-thread."""
        wanted = {Path(p).name: Path(p) for p in paths}
        for label in list(self._overlays):
            if label not in wanted:
                del self._overlays[label]
                self.plot.remove_overlay(label)
        for label, path in wanted.items():
            if self._overlays.get(label) == path:
                continue
            self._overlays[label] = path
            ticket = self.reader.submit(lambda p=path: read_all_metrics(p))
            self._reads[ticket] = ("overlay", (label, path))

    def _on_picker_closed(self, *_args: Any) -> None:
        if self._picker is not None:
            self._picker.deleteLater()
        self._picker = None

    def _on_read(self, ticket: int, result: Any, error: BaseException | None) -> None:
        what, detail = self._reads.pop(ticket, ("", None))
        if what == "runs":
            if detail is not self._picker:
                return  # closed meanwhile
            if error is not None:
                detail.show_error(f"The runs could not be listed: {error}")
            else:
                detail.set_runs(result, exclude=self._path)
        elif what == "overlay":
            label, path = detail
            if self._overlays.get(label) != path:
                return  # taken off again before it loaded
            if error is not None:
                del self._overlays[label]
                self.show_error(f"{path.name} could not be overlaid: {error}")
                return
            if not result:
                self.log_message(f"{path.name} has no metrics yet; nothing to overlay")
            self.plot.add_overlay(label, result)
