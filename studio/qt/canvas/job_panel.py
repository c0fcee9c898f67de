"""What every Canvas side tool that runs one job at a time shares (*Stylize*, *Translate*,
*Upscale*): the buttons row with Cancel, the progress bar and status line, one job on the
engine thread for the document as it was when it started, progress, cancel, and the finished
image handed on (``finished``) for the staging strip, so Accept is one undoable step and
Discard leaves the canvas as it was.

A tool subclasses :class:`CanvasJobPanel`, builds its own rows around :meth:`job_controls`,
and says what a failure is called and which of its controls a running job disables.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, ClassVar

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from studio.core.canvas import CanvasDocument
from studio.core.jobs import CancelToken, Outcome, Progress, Status
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.job_calls import JobCalls
from studio.qt.settings import AppSettings
from studio.qt.widgets import Banner

Factory = Callable[[CancelToken], Generator[Progress, None, Any]]


class CanvasJobPanel(QGroupBox):
    """One job at a time for the canvas's document.

    ``document()`` returns the canvas's document (a stroke in progress committed) and
    ``feather()`` the tool bar's feather radius. ``finished(result, doc, image_revision)``: a
    job finished for ``doc`` as it was then (the Stager stages it). ``running_changed``.
    """

    finished = Signal(object, object, int)
    running_changed = Signal(bool)

    failed_message: ClassVar[str] = "The job failed."

    def __init__(
        self,
        title: str,
        runner: JobRunner,
        settings: AppSettings,
        document: Callable[[], CanvasDocument | None],
        feather: Callable[[], float],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(title, parent)
        self._runner, self._settings = runner, settings
        self._document, self._feather = document, feather
        self._calls = JobCalls(runner, self, kind="Canvas")
        self._job: JobHandle | None = None
        self._job_doc: CanvasDocument | None = None
        self._job_revision = 0
        self.banner = Banner()

    def job_controls(self, *buttons: QPushButton) -> QHBoxLayout:
        """``buttons`` (the tool's own, the first stretched) and Cancel in a row; makes
        ``cancel_button``, ``progress`` and ``status_label`` for the tool to place."""
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        for i, button in enumerate(buttons):
            row.addWidget(button, 1 if i == 0 else 0)
        row.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.status_label = QLabel()
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        return row

    # -- the job ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._job is not None

    def submit(self, doc: CanvasDocument, name: str, factory: Factory) -> None:
        """Run ``factory``'s job on the engine thread for ``doc`` as it is now."""
        self._job_doc, self._job_revision = doc, doc.image_revision
        self._job = self._calls.submit(
            name, factory, on_progress=self._on_progress, on_end=self._on_end
        )
        busy = self._runner.engine.running_job() is not None
        self.status_label.setText("Waiting for the engine (it is busy)…" if busy else "Starting…")
        self.progress.setRange(0, 0)
        self._update_controls()
        self.running_changed.emit(True)

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()
            self.status_label.setText("Cancelling…")

    def shutdown(self) -> None:
        self.cancel()

    def _on_progress(self, progress: Progress, image: Any, points: Any) -> None:
        del image, points
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.step)
            self.status_label.setText(self.progress_text(progress))
        elif progress.message:
            self.status_label.setText(progress.message)

    def progress_text(self, progress: Progress) -> str:
        return f"{progress.message or 'Working'}: step {progress.step:,} / {progress.total:,}"

    def _on_end(self, outcome: Outcome[Any]) -> None:
        doc, self._job, self._job_doc = self._job_doc, None, None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        if outcome.status is Status.FINISHED and outcome.result is not None:
            self.progress.setValue(1)
            self.status_label.setText("Ready in the strip below: click it to preview, Accept.")
            self.finished.emit(outcome.result, doc, self._job_revision)
        elif outcome.status is Status.CANCELLED:
            self.status_label.setText("Cancelled: the canvas is unchanged.")
        else:
            self.status_label.setText("Failed.")
            self.banner.show_message(outcome.error or self.failed_message)
        self._update_controls()
        self.running_changed.emit(False)

    def _update_controls(self, *_: Any) -> None:
        self.cancel_button.setEnabled(self._job is not None)
