"""The right side of the Train workspace: what a run is doing and has done.

A banner for failures, the status line, the metric plots, the timeline of sample grids and a
log. It displays, and it follows a run folder that grows on disk (``watch``): a run opened
while something else trains it, or one synced from a headless machine. Overlaid runs are
followed the same way, each by a ``RunWatcher`` of its own (metrics only, sharing one reader),
so a run still training elsewhere keeps extending its dashed curves. The panel decides what
to show; every file read here happens on a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent, QTextCursor
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSplitter, QVBoxLayout, QWidget

from studio.qt.extra_images import SampleTabs
from studio.qt.overlay_picker import OverlayPicker
from studio.qt.plot import MetricsPlot
from studio.qt.run_watch import POLL_MS, BackgroundReader, RunWatcher
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
        # The timeline, and a tab per image the family shows beyond its samples (its filters)
        self.sample_tabs = SampleTabs(self.timeline)

        self.watcher = RunWatcher(self)
        self.watcher.metrics_arrived.connect(self._on_metrics_arrived)
        self.watcher.samples_found.connect(self.timeline.set_samples)
        self.watcher.extras_found.connect(self.sample_tabs.set_extras)
        self.reader = BackgroundReader(self)  # run lists
        self.reader.finished.connect(self._on_read)
        self._reads: dict[int, tuple[str, Any]] = {}  # ticket -> (what, detail)
        self._overlays: dict[str, Path] = {}  # label -> run folder
        self._overlay_watchers: dict[str, RunWatcher] = {}  # label -> its watcher
        self._overlay_loaded: set[str] = set()  # labels whose first poll has been drawn
        self.overlay_reader = BackgroundReader(self)  # every overlay watcher reads through it
        self.overlay_poll_ms = POLL_MS
        self._picker: OverlayPicker | None = None
        self._path: Path | None = None  # the run shown (left out of the overlay list)

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setPlaceholderText("Messages: skipped files, checkpoints, errors.")
        self.log.setObjectName("log")
        self._progress_key: str | None = None  # what the last line counts (log_message)

        # Plots take the full height on the left; the square sample grid and the log share
        # the right column, so neither leaves an empty band under the grid.
        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(self.sample_tabs)
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

    def clear(self, keep_curves: Sequence[str] = ()) -> None:
        """Empty everything for a new run (overlaid runs stay) and stop following a folder.

        ``keep_curves``: the metrics the new run will log; the plot keeps its curves of those
        names, emptied (``MetricsPlot.clear``)."""
        self.watcher.stop()
        self._path = None
        self.banner.clear()
        self.plot.clear(overlays=False, keep=keep_curves)
        self.timeline.clear()
        self.sample_tabs.clear_extras()
        self.status_label.clear()
        self.log.clear()
        self._progress_key = None

    def set_run_name(self, text: str) -> None:
        self.run_label.setText(text)

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def show_grid(self, image: np.ndarray, step: int | None) -> None:
        self.timeline.add_image(step, image)

    def add_points(self, points: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        self.plot.add_points(points)

    def log_message(self, text: str, progress: str | None = None) -> None:
        """Append ``text`` to the log. A ``progress`` line (its key: what it counts) replaces
        the last line when that one counted the same thing, so a count of 3,000 images is
        one line that updates, not 150."""
        line = f"{time.strftime('%H:%M:%S')}  {text}"
        if progress is not None and progress == self._progress_key:
            cursor = self.log.textCursor()
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.select(QTextCursor.SelectionType.BlockUnderCursor)
            cursor.removeSelectedText()  # (the line and the line break before it)
        self.log.appendPlainText(line)
        self._progress_key = progress

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

    def shutdown(self, wait_ms: int = 2000) -> None:
        """Stop following every folder (this run's and the overlaid runs') and wait for a read
        in progress; for closing the window."""
        self.watcher.stop()
        for watcher in self._overlay_watchers.values():
            watcher.stop()
        for reader in (
            self.watcher.reader,
            self.overlay_reader,
            self.reader,
            self.sample_tabs.reader,
        ):
            reader.wait(wait_ms)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)

    def _on_metrics_arrived(self, cols: dict[str, Any], reset: bool) -> None:
        if reset:
            self.plot.clear(overlays=False)
            if cols:
                self.log_message("metrics.jsonl was rewritten (a resume?): reloaded it")
            else:
                self.log_message("metrics.jsonl was emptied or removed: the plot is cleared")
        self.plot.add_columns(cols)

    # -- overlays --------------------------------------------------------------------------
    def overlaid(self) -> dict[str, Path]:
        return dict(self._overlays)

    def overlays_followed(self) -> list[str]:
        """Labels of the overlaid runs whose folders are being followed (tests, status)."""
        return [label for label, w in self._overlay_watchers.items() if w.is_watching()]

    def set_overlay_interval(self, ms: int) -> None:
        """How often overlaid runs are polled (tests poll fast)."""
        self.overlay_poll_ms = int(ms)
        for watcher in self._overlay_watchers.values():
            watcher.set_interval(ms)

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
        """Overlay exactly ``paths`` (others are taken off and no longer followed).

        Each run is followed by a watcher of its own: the first poll (off-thread) reads its
        whole history, later ones only the lines appended since, which extend its curves.
        """
        wanted = {Path(p).name: Path(p) for p in paths}
        for label in list(self._overlays):
            if wanted.get(label) != self._overlays[label]:
                self._drop_overlay(label)
        for label, path in wanted.items():
            if label in self._overlays:
                continue
            self._overlays[label] = path
            watcher = RunWatcher(self, self.overlay_poll_ms, reader=self.overlay_reader)
            watcher.metrics_arrived.connect(partial(self._on_overlay_metrics, label, watcher))
            watcher.poll_finished.connect(partial(self._on_overlay_polled, label, watcher))
            self._overlay_watchers[label] = watcher
            watcher.watch(path, metrics=True, samples=False)

    def _drop_overlay(self, label: str) -> None:
        self._overlays.pop(label, None)
        self._overlay_loaded.discard(label)
        watcher = self._overlay_watchers.pop(label, None)
        if watcher is not None:
            watcher.stop()  # a read in flight is ignored when it lands
            watcher.deleteLater()
        self.plot.remove_overlay(label)

    def _on_overlay_metrics(
        self, label: str, watcher: RunWatcher, cols: dict[str, Any], reset: bool
    ) -> None:
        if self._overlay_watchers.get(label) is not watcher:
            return  # taken off meanwhile
        if label not in self._overlay_loaded or reset:
            if reset and label in self._overlay_loaded:
                what = (
                    "was rewritten (a resume?): reloaded"
                    if cols
                    else "was emptied or removed: cleared"
                )
                self.log_message(f"{label}: metrics.jsonl {what} its overlay")
            self._overlay_loaded.add(label)
            self.plot.add_overlay(label, cols)  # the whole history; keeps its colour
        else:
            self.plot.extend_overlay(label, cols)

    def _on_overlay_polled(
        self, label: str, watcher: RunWatcher, error: BaseException | None
    ) -> None:
        if self._overlay_watchers.get(label) is not watcher or label in self._overlay_loaded:
            return  # later polls' errors are transient (a sync in progress): the next tick
        if error is not None:
            path = self._overlays.get(label)
            self._drop_overlay(label)
            self.show_error(f"{path.name if path else label} could not be overlaid: {error}")
            return
        self._overlay_loaded.add(label)
        self.log_message(f"{label} has no metrics yet; its curves appear as it logs them")
        self.plot.add_overlay(label, {})

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
