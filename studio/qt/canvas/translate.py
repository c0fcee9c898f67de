"""Translate on the Canvas: repaint the image (or its masked region) with a run of an
image-to-image family (:mod:`studio.engine.translate`, ``Capability.PAIRED``).

:class:`TranslatePanel` offers the recent runs whose family translates images (read on a
worker, never on the GUI thread; other runs are not offered, and one opened by hand is
refused with a reason), the direction for runs that translate both ways, the area and the
seed. It submits the job to the engine thread and hands the finished image to the staging
strip like an inpainting variation, so Accept is one undoable step and Discard leaves the
canvas as it was. Cancel drops the job's work.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
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
from studio.core.jobs import CancelToken, Outcome, Progress, Status
from studio.core.paths import runs_dir
from studio.qt.canvas.jobs import thumbnail
from studio.qt.canvas.tasks import TaskPool
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.job_calls import JobCalls
from studio.qt.settings import AppSettings
from studio.qt.widgets import Banner

AREAS = (("whole", "Whole image"), ("masked", "Masked region only (feathered)"))
DIRECTION_LABELS = (("a2b", "A to B"), ("b2a", "B to A"))


@dataclass(frozen=True)
class TranslateChoice:
    """What the panel asks for: the run, the direction (None: the run's only way), whether
    only the mask, and the seed."""

    run: str
    direction: str | None
    masked: bool
    seed: int = 0


@dataclass(frozen=True)
class TranslatedImage:
    """A finished translation for the staging strip (the fields the Stager reads)."""

    accept_text: ClassVar[str] = "Accept translation"
    images: list[np.ndarray]
    thumbnails: list[np.ndarray]
    seed: int | None
    weights_text: str


def translate(
    image: np.ndarray,
    mask: np.ndarray | None,
    feather: float,
    choice: TranslateChoice,
    device: str = "auto",
) -> Callable[[CancelToken], Generator[Progress, None, TranslatedImage]]:
    """A factory for one job (runs on the engine thread): translate a private copy of
    ``image`` whole (``mask`` None) or the window around the mask, blended through it."""

    def factory(token: CancelToken) -> Generator[Progress, None, TranslatedImage]:
        from studio.engine.translate import translate_canvas_job

        job = translate_canvas_job(
            choice.run, image, mask, feather, choice.seed, choice.direction, device
        )
        out = yield from job
        token.check()
        h, w = out.shape[:2]
        way = dict(DIRECTION_LABELS).get(choice.direction or "", "")
        text = f"Translated by {Path(choice.run).name}" + (f", {way}" if way else "")
        return TranslatedImage([out], [thumbnail(out, (0, h, 0, w))], choice.seed, text)

    return factory


def _list_translators(paths: list[str]) -> list[Any]:
    from studio.engine.translate import translating_runs

    return translating_runs(paths)


def _describe(path: str) -> Any:
    from studio.engine.translate import describe_translator

    return describe_translator(path)


class TranslatePanel(QGroupBox):
    """The run picker, direction, area and seed, Translate, the job's progress, Cancel.

    ``document()`` returns the canvas's document (a stroke in progress committed) and
    ``feather()`` the tool bar's feather radius. ``translated(result, doc, image_revision)``:
    a job finished for ``doc`` as it was then. ``runs_listed()``: the run list was refilled.
    """

    translated = Signal(object, object, int)
    running_changed = Signal(bool)
    runs_listed = Signal()

    def __init__(
        self,
        runner: JobRunner,
        settings: AppSettings,
        document: Callable[[], CanvasDocument | None],
        feather: Callable[[], float],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Image to image", parent)
        self._runner, self._settings = runner, settings
        self._document, self._feather = document, feather
        self._calls = JobCalls(runner, self, kind="Canvas")
        self._tasks = TaskPool(self)
        self._job: JobHandle | None = None
        self._job_doc: CanvasDocument | None = None
        self._job_revision = 0
        self._both_ways: dict[str, bool] = {}  # offered run -> translates both ways
        self._build()
        self.refresh_runs()

    def _build(self) -> None:
        self.banner = Banner()
        self.run_combo = QComboBox()
        self.run_combo.setPlaceholderText("Choose a translating run…")
        self.run_combo.setMinimumContentsLength(18)
        self.run_combo.setToolTip("Recent runs whose model translates images (trained on A and B)")
        self.run_combo.currentIndexChanged.connect(self._update_controls)
        self.open_run_button = QPushButton("Open run…")
        self.open_run_button.clicked.connect(self.choose_run)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_combo, 1)
        run_row.addWidget(self.open_run_button)
        self.direction_combo = QComboBox()
        for key, text in DIRECTION_LABELS:
            self.direction_combo.addItem(text, key)
        self.direction_combo.setToolTip("Runs trained on two unpaired folders translate both ways")
        self.area_combo = QComboBox()
        for key, text in AREAS:
            self.area_combo.addItem(text, key)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip("Models with dropout translate a little differently per seed")
        form = QFormLayout()
        form.addRow("Run", run_row)
        form.addRow("Direction", self.direction_combo)
        form.addRow("Area", self.area_combo)
        form.addRow("Seed", self.seed_spin)
        self.translate_button = QPushButton("Translate")
        self.translate_button.setToolTip(
            "Translate the image, or its masked region, with the chosen run"
        )
        self.translate_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.translate_button, 1)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.status_label = QLabel()
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        column = QVBoxLayout(self)
        column.addWidget(self.banner)
        column.addLayout(form)
        column.addLayout(buttons)
        column.addWidget(self.progress)
        column.addWidget(self.status_label)
        self._update_controls()

    # -- runs --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._job is not None

    def run(self) -> str | None:
        data = self.run_combo.currentData()
        return str(data) if data else None

    def refresh_runs(self) -> None:
        """Refill the run list from the recent runs that translate (read on a worker;
        ``runs_listed`` follows). The chosen run stays chosen."""
        paths = self._settings.recent_runs()
        self._tasks.submit(lambda: _list_translators(paths), self._on_runs_listed)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        # Runs trained (or opened elsewhere) since the list was filled show up on return.
        self.refresh_runs()
        super().showEvent(event)

    def choose_run(self) -> None:
        start = str(Path(self.run()).parent) if self.run() else str(runs_dir())
        folder = QFileDialog.getExistingDirectory(self, "Open a run to translate with", start)
        if folder:
            self.set_run(folder)

    def set_run(self, path: str | Path) -> None:
        """Offer and choose the run at ``path`` if it translates images (checked on a worker;
        the banner says why not)."""
        self.banner.clear()
        self._tasks.submit(lambda: _describe(str(path)), self._on_run_described, self._on_refused)

    def _on_runs_listed(self, found: list[Any]) -> None:
        current = self.run()
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        known, self._both_ways = self._both_ways, {}
        if current is not None and current not in {str(t.path) for t in found}:
            self._add(current, known.get(current, False), current)  # opened by hand
        for t in found:
            self._add(str(t.path), t.both_ways, f"{t.path.name} ({t.display_name})")
        self.run_combo.setCurrentIndex(self.run_combo.findData(current) if current else -1)
        if self.run_combo.currentIndex() < 0 and self.run_combo.count():
            self.run_combo.setCurrentIndex(0)
        self.run_combo.blockSignals(False)
        self._update_controls()
        self.runs_listed.emit()

    def _add(self, path: str, both_ways: bool, text: str) -> None:
        self._both_ways[path] = both_ways
        self.run_combo.addItem(text, path)
        self.run_combo.setItemData(self.run_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)

    def _on_run_described(self, info: Any) -> None:
        path = str(info.path)
        self._settings.add_recent_run(path)
        if self.run_combo.findData(path) < 0:
            self._add(path, info.both_ways, f"{info.path.name} ({info.display_name})")
        self._both_ways[path] = info.both_ways
        self.run_combo.setCurrentIndex(self.run_combo.findData(path))
        self._update_controls()

    def _on_refused(self, message: str) -> None:
        self.banner.show_message(message)

    # -- the job -----------------------------------------------------------------------------
    def choice(self) -> TranslateChoice | None:
        run = self.run()
        if run is None:
            return None
        both = self._both_ways.get(run, False)
        direction = str(self.direction_combo.currentData()) if both else None
        masked = self.area_combo.currentData() == "masked"
        return TranslateChoice(run, direction, masked, self.seed_spin.value())

    def start(self) -> bool:
        """Submit a translation of the current document; False (with a banner) if not."""
        doc = self._document()
        if self._job is not None:
            return False
        if doc is None:
            self.banner.show_message("Open an image on the canvas first.")
            return False
        choice = self.choice()
        if choice is None:
            self.banner.show_message(
                "Choose a run that translates images (trained on folders A and B)."
            )
            return False
        mask = doc.mask.copy() if choice.masked else None
        if mask is not None and not (mask > 0).any():
            self.banner.show_message("No mask painted: paint the region to translate first.")
            return False
        self.banner.clear()
        device = self._settings.device_preference()
        factory = translate(doc.image.copy(), mask, self._feather(), choice, device)
        self._job_doc, self._job_revision = doc, doc.image_revision
        self._job = self._calls.submit(
            f"Translate with {Path(choice.run).name}",
            factory,
            on_progress=self._on_progress,
            on_end=self._on_end,
        )
        busy = self._runner.engine.running_job() is not None
        self.status_label.setText("Waiting for the engine (it is busy)…" if busy else "Starting…")
        self.progress.setRange(0, 0)
        self._update_controls()
        self.running_changed.emit(True)
        return True

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()
            self.status_label.setText("Cancelling…")

    def shutdown(self) -> None:
        self.cancel()
        self._tasks.wait(5_000)

    def _on_progress(self, progress: Progress, _image: Any, _points: Any) -> None:
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.step)
            self.status_label.setText(f"Translating: step {progress.step:,} / {progress.total:,}")
        elif progress.message:
            self.status_label.setText(progress.message)

    def _on_end(self, outcome: Outcome[Any]) -> None:
        doc, self._job, self._job_doc = self._job_doc, None, None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        if outcome.status is Status.FINISHED and outcome.result is not None:
            self.progress.setValue(1)
            self.status_label.setText("Ready in the strip below: click it to preview, Accept.")
            self.translated.emit(outcome.result, doc, self._job_revision)
        elif outcome.status is Status.CANCELLED:
            self.status_label.setText("Cancelled: the canvas is unchanged.")
        else:
            self.status_label.setText("Failed.")
            self.banner.show_message(outcome.error or "Translation failed.")
        self._update_controls()
        self.running_changed.emit(False)

    def _update_controls(self, *_: Any) -> None:
        running = self._job is not None
        run = self.run()
        self.translate_button.setEnabled(not running and run is not None)
        self.cancel_button.setEnabled(running)
        self.direction_combo.setEnabled(bool(run) and self._both_ways.get(run or "", False))
        if not self.direction_combo.isEnabled():
            self.direction_combo.setToolTip("This run translates one way only (A to B)")
        else:
            self.direction_combo.setToolTip("A to B or B to A")
