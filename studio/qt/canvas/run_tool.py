"""What the Canvas's run-applying tools share (*Translate*, *Upscale*): a side panel that
offers the recent runs a tool can apply (read on a worker, never on the GUI thread; a run
opened by hand that does not fit is refused with a reason), the area (whole image or masked
region), a seed and the tool's own settings; its button submits one job for the document
(:class:`~studio.qt.canvas.job_panel.CanvasJobPanel`: progress, cancel, the result handed
to the staging strip).

A tool subclasses :class:`RunToolPanel` and says what differs: its words, how its runs are
listed and described (engine functions, called on a worker), its extra rows and the job.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.core.canvas import CanvasDocument
from studio.core.jobs import Progress
from studio.core.paths import runs_dir
from studio.qt.canvas.job_panel import CanvasJobPanel, Factory
from studio.qt.canvas.tasks import TaskPool
from studio.qt.engine_thread import JobRunner
from studio.qt.settings import AppSettings

AREAS = (("whole", "Whole image"), ("masked", "Masked region only (feathered)"))


class RunToolPanel(CanvasJobPanel):
    """The run picker, the tool's rows, area and seed, the tool's button, the job's progress,
    Cancel.

    ``document()`` returns the canvas's document (a stroke in progress committed) and
    ``feather()`` the tool bar's feather radius. ``finished(result, doc, image_revision)``:
    a job finished for ``doc`` as it was then (the Stager stages it). ``runs_listed()``: the
    run list was refilled.
    """

    runs_listed = Signal()

    # The tool's words.
    title: ClassVar[str] = ""
    verb: ClassVar[str] = ""  # the button and the job: "Translate"
    progress_verb: ClassVar[str] = ""  # "Translating"
    run_placeholder: ClassVar[str] = "Choose a run…"
    run_tooltip: ClassVar[str] = ""
    button_tooltip: ClassVar[str] = ""
    seed_tooltip: ClassVar[str] = ""
    no_run_message: ClassVar[str] = ""
    no_mask_message: ClassVar[str] = ""

    def __init__(
        self,
        runner: JobRunner,
        settings: AppSettings,
        document: Callable[[], CanvasDocument | None],
        feather: Callable[[], float],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(self.title, runner, settings, document, feather, parent)
        self._tasks = TaskPool(self)
        self._infos: dict[str, Any] = {}  # offered run -> what describe() said of it
        self._build()
        self.refresh_runs()

    # -- what a tool says ---------------------------------------------------------------------
    @staticmethod
    def list_runs(paths: list[str]) -> list[Any]:
        """(On a worker) the runs among ``paths`` this tool applies, each with ``path`` and
        ``display_name``."""
        raise NotImplementedError

    @staticmethod
    def describe(path: str) -> Any:
        """(On a worker) the run at ``path`` if this tool applies it; StudioError otherwise."""
        raise NotImplementedError

    def add_rows(self, form: QFormLayout) -> None:
        """The tool's own rows, between the run and the area."""

    def make_job(
        self, image: np.ndarray, mask: np.ndarray | None, run: str, device: str
    ) -> Factory:
        """The job for ``image`` (a private copy) and ``mask`` (None: the whole image)."""
        raise NotImplementedError

    def update_tool_controls(self, run: str | None, running: bool) -> None:
        """Enable the tool's own rows for ``run``."""

    # -- building -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.run_combo = QComboBox()
        self.run_combo.setPlaceholderText(self.run_placeholder)
        self.run_combo.setMinimumContentsLength(18)
        self.run_combo.setToolTip(self.run_tooltip)
        self.run_combo.currentIndexChanged.connect(self._update_controls)
        self.open_run_button = QPushButton("Open run…")
        self.open_run_button.clicked.connect(self.choose_run)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_combo, 1)
        run_row.addWidget(self.open_run_button)
        self.area_combo = QComboBox()
        for key, text in AREAS:
            self.area_combo.addItem(text, key)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip(self.seed_tooltip)
        form = QFormLayout()
        form.addRow("Run", run_row)
        self.add_rows(form)
        form.addRow("Area", self.area_combo)
        form.addRow("Seed", self.seed_spin)
        self.action_button = QPushButton(self.verb)
        self.action_button.setToolTip(self.button_tooltip)
        self.action_button.clicked.connect(self.start)
        buttons = self.job_controls(self.action_button)
        column = QVBoxLayout(self)
        column.addWidget(self.banner)
        column.addLayout(form)
        column.addLayout(buttons)
        column.addWidget(self.progress)
        column.addWidget(self.status_label)
        column.addStretch(1)  # the controls at the top, however tall the tab
        self._update_controls()

    # -- runs ---------------------------------------------------------------------------------
    def run(self) -> str | None:
        data = self.run_combo.currentData()
        return str(data) if data else None

    def run_info(self, run: str | None) -> Any:
        """What the run list knows of ``run`` (None: nothing)."""
        return self._infos.get(run or "")

    def refresh_runs(self) -> None:
        """Refill the run list from the recent runs this tool applies (read on a worker;
        ``runs_listed`` follows). The chosen run stays chosen."""
        paths = self._settings.recent_runs()
        lister = type(self).list_runs
        self._tasks.submit(lambda: lister(paths), self._on_runs_listed)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        # Runs trained (or opened elsewhere) since the list was filled show up on return.
        self.refresh_runs()
        super().showEvent(event)

    def choose_run(self) -> None:
        start = str(Path(self.run()).parent) if self.run() else str(runs_dir())
        what = f"Open a run to {self.verb.lower()} with"
        folder = QFileDialog.getExistingDirectory(self, what, start)
        if folder:
            self.set_run(folder)

    def set_run(self, path: str | Path) -> None:
        """Offer and choose the run at ``path`` if this tool applies it (checked on a worker;
        the banner says why not)."""
        self.banner.clear()
        describe = type(self).describe
        self._tasks.submit(lambda: describe(str(path)), self._on_run_described, self._on_refused)

    def _on_runs_listed(self, found: list[Any]) -> None:
        current = self.run()
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        known, self._infos = self._infos, {}
        if current is not None and current not in {str(t.path) for t in found}:
            self._add(current, known.get(current), current)  # opened by hand
        for t in found:
            self._add(str(t.path), t, f"{t.path.name} ({t.display_name})")
        self.run_combo.setCurrentIndex(self.run_combo.findData(current) if current else -1)
        if self.run_combo.currentIndex() < 0 and self.run_combo.count():
            self.run_combo.setCurrentIndex(0)
        self.run_combo.blockSignals(False)
        self._update_controls()
        self.runs_listed.emit()

    def _add(self, path: str, info: Any, text: str) -> None:
        self._infos[path] = info
        self.run_combo.addItem(text, path)
        self.run_combo.setItemData(self.run_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)

    def _on_run_described(self, info: Any) -> None:
        path = str(info.path)
        self._settings.add_recent_run(path)
        if self.run_combo.findData(path) < 0:
            self._add(path, info, f"{info.path.name} ({info.display_name})")
        self._infos[path] = info
        self.run_combo.setCurrentIndex(self.run_combo.findData(path))
        self._update_controls()

    def _on_refused(self, message: str) -> None:
        self.banner.show_message(message)

    # -- the job ------------------------------------------------------------------------------
    def masked(self) -> bool:
        return self.area_combo.currentData() == "masked"

    def start(self) -> bool:
        """Submit the tool's job on the current document; False (with a banner) if not."""
        doc = self._document()
        if self._job is not None:
            return False
        if doc is None:
            self.banner.show_message("Open an image on the canvas first.")
            return False
        run = self.run()
        if run is None:
            self.banner.show_message(self.no_run_message)
            return False
        mask = doc.mask.copy() if self.masked() else None
        if mask is not None and not (mask > 0).any():
            self.banner.show_message(self.no_mask_message)
            return False
        self.banner.clear()
        factory = self.make_job(doc.image.copy(), mask, run, self._settings.device_preference())
        self.submit(doc, f"{self.verb} with {Path(run).name}", factory)
        return True

    def shutdown(self) -> None:
        self.cancel()
        self._tasks.wait(5_000)

    def progress_text(self, progress: Progress) -> str:
        text = progress.message or self.progress_verb
        return f"{text}: step {progress.step:,} / {progress.total:,}"

    @property
    def failed_message(self) -> str:  # type: ignore[override]
        return f"{self.verb} failed."

    def _update_controls(self, *_: Any) -> None:
        super()._update_controls()
        running = self._job is not None
        run = self.run()
        self.action_button.setEnabled(not running and run is not None)
        self.update_tool_controls(run, running)
