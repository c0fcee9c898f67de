"""The Prompt workspace's generation: the request, the job and what comes back.

:class:`Generation` turns the request being edited (a
:class:`~studio.qt.prompt.state.PromptRequestState`) and the canvas into a checked request (on
the GUI thread, with private copies of the canvas image and mask), submits
:func:`studio.qt.prompt.jobs.generate` to the engine thread through the window's
:class:`~studio.qt.job_calls.JobCalls`, shows its progress and previews, and handles its
outcome: results shown and (for image-to-image and inpainting) staged on the canvas, a pickle
consent asked and the job resubmitted, a failure on the banner, a cancel that keeps nothing.
Everything it uses is given to its constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QWidget

from studio.core.errors import StudioError
from studio.engine import live  # no torch: which run trains here, and its step
from studio.qt.canvas.jobs import InpaintResult
from studio.qt.engine_thread import JobHandle
from studio.qt.job_calls import JobCalls
from studio.qt.prompt import jobs, model_list
from studio.qt.prompt.history_panel import HistoryPanel
from studio.qt.prompt.jobs import waiting_text
from studio.qt.prompt.model_list import ModelList
from studio.qt.prompt.results import ResultsStrip
from studio.qt.prompt.state import PromptRequestState
from studio.qt.prompt.xy_dialog import Prepared
from studio.qt.widgets import Banner, ImageView

__all__ = ["Generation", "GenerationView", "canvas_document", "waiting_text"]

WAIT_REFRESH_MS = 500  # how often a waiting generation's status line shows the run's step


def canvas_document(canvas: Any) -> Any:
    """The document open on the Canvas workspace ``canvas`` (None: no canvas or no image)."""
    return getattr(canvas, "document", None) if canvas is not None else None


@dataclass(frozen=True)
class GenerationView:
    """The widgets a generation reports to."""

    banner: Banner
    progress: QProgressBar
    status_label: QLabel
    preview: ImageView
    results: ResultsStrip
    history: HistoryPanel


class Generation(QObject):
    """Prepare, submit and follow one generation at a time.

    Signals: ``status_message(text)`` when results came; ``staged_on_canvas(count)``;
    ``results_ready(result)``; ``model_ended(path)`` after a job with that model ended however
    it did; ``running_changed(running)`` when a job starts or ends."""

    status_message = Signal(str)
    staged_on_canvas = Signal(int)
    results_ready = Signal(object)
    model_ended = Signal(str)
    running_changed = Signal(bool)

    def __init__(
        self,
        calls: JobCalls,
        state: PromptRequestState,
        models: ModelList,
        consents: model_list.PickleConsents,
        view: GenerationView,
        *,
        canvas: Any,
        device: Callable[[], str],
        before_submit: Callable[[], None],
        parent: QWidget,
    ) -> None:
        super().__init__(parent)
        self.calls, self.state, self.models, self.consents = calls, state, models, consents
        self.view, self.canvas, self._device = view, canvas, device
        self._before_submit, self._dialog_parent = before_submit, parent
        self.result: jobs.PromptResult | None = None
        self.job: JobHandle | None = None
        self._job_doc: Any = None
        self._job_revision = 0
        self._job_prepared: Prepared | None = None
        # While the job waits its turn (a run trains on the one device), the status line says
        # what it waits for and refreshes the run's step.
        self._waiting = QTimer(self)
        self._waiting.setInterval(WAIT_REFRESH_MS)
        self._waiting.timeout.connect(self._show_waiting)

    # -- the request -------------------------------------------------------------------------
    def prepare(self, *, new_seed: bool = True) -> Prepared | None:
        """The request as the state and the canvas stand now, checked; None (with a banner
        saying what to do) when it cannot run. ``new_seed``: draw a seed unless locked."""
        banner = self.view.banner
        entry = self.models.current()
        if entry is None:
            banner.show_message(
                "Choose a model: add a Stable Diffusion folder or .safetensors file with "
                "Add folder… / Add file…, or train a prompt model in Train."
            )
            return None
        from studio.engine.prompt.modes import refusal

        refused = refusal(self.state.mode, str(getattr(entry, "arch", "")), str(entry.name))
        if refused is not None:
            banner.show_message(str(refused))
            return None
        if new_seed:
            self.state.seed_for_next_run()
        self.state.set_model(str(entry.path))
        fields = self.state.values()
        fields["model"] = str(entry.path)
        fields["device"] = self._device()
        image = mask = None
        if fields["mode"] != "txt2img":
            doc = canvas_document(self.canvas)
            if doc is None:
                banner.show_message(
                    "Image to image and inpainting start from the picture on the Canvas: "
                    "open one there first (Canvas ▸ Open image…)."
                )
                return None
            image = doc.image.copy()  # private copies: later edits must not reach the job
            if fields["mode"] == "inpaint":
                mask = np.round(np.clip(doc.mask, 0, 1) * 255).astype(np.uint8)
        try:
            self.state.to_request(image=image, mask=mask, device=fields["device"]).require_inputs()
        except StudioError as err:
            banner.show_message(str(err))
            return None
        allow = self.consents.allowed(self._dialog_parent, entry)
        if allow is None:
            banner.show_message(
                "Not loaded: the model is a pickled checkpoint. Convert it to .safetensors, or "
                "Generate again and agree to load it in weights-only mode.",
                "warning",
            )
            return None
        banner.clear()
        return Prepared(fields, image, mask, allow)

    def ask_consent(self, path: str, message: str) -> bool:
        return self.consents.ask(self._dialog_parent, path, message)

    # -- the job -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job is not None

    def generate(self) -> bool:
        """Submit a generation; False (with a banner saying why) when it cannot run."""
        if self.job is not None:
            return False
        prepared = self.prepare()
        if prepared is None:
            return False
        self._before_submit()
        self._submit(prepared)
        return True

    def _submit(self, prepared: Prepared) -> None:
        doc = canvas_document(self.canvas) if prepared.image is not None else None
        self._job_doc = doc
        self._job_revision = doc.image_revision if doc is not None else 0
        self._job_prepared = prepared
        factory = jobs.generate(
            prepared.fields, prepared.image, prepared.mask, allow_pickle=prepared.allow_pickle
        )
        self.job = self.calls.submit(
            f"Generate ({prepared.fields['mode']})",
            factory,
            self._on_generated,
            self._on_failed,
            on_cancelled=self._on_cancelled,
            on_progress=self._on_progress,
            on_started=self._on_started,
            on_end=self._on_end,
        )
        self.view.progress.setRange(0, 0)
        self.view.preview.set_image(None)
        if self.calls.engine_busy():
            self._show_waiting()
            self._waiting.start()
        else:
            self.view.status_label.setText("Starting…")
        self.running_changed.emit(True)

    def _show_waiting(self) -> None:
        """Say what the queued generation waits for: a generation cannot share the device
        with a training run, so it starts when the run ends (Cancel takes it off the queue)."""
        if self.job is None or self.job.started:
            self._waiting.stop()
            return
        self.view.status_label.setText(waiting_text(live.progress()))

    def _on_started(self, _handle: JobHandle) -> None:
        self._waiting.stop()
        self.view.status_label.setText("Starting…")

    def cancel(self) -> None:
        if self.job is not None:
            self.view.status_label.setText("Cancelling…")
            self.calls.withdraw_or_cancel(self.job)  # a queued one ends at once

    def _on_progress(self, progress: Any, image: Any, _points: Any = None) -> None:
        view = self.view
        if progress.total:
            view.progress.setRange(0, int(progress.total))
            view.progress.setValue(int(progress.step))
        if image is not None:
            view.preview.set_image(image)
        if progress.message:
            view.status_label.setText(progress.message)
        elif progress.total:
            view.status_label.setText(f"Step {progress.step} of {progress.total}")

    def _on_generated(self, result: Any) -> None:
        if isinstance(result, jobs.ConsentNeeded):
            prepared = self._job_prepared
            if prepared is not None and self.ask_consent(result.path, result.message):
                again = Prepared(prepared.fields, prepared.image, prepared.mask, True)
                QTimer.singleShot(0, self, lambda: self._submit(again))  # after _on_end
            else:
                self.view.status_label.setText("Not loaded: the pickled checkpoint was refused.")
            return
        self.result = result
        self.view.results.set_result(result)
        self.view.history.add_results(result)
        seeds = ", ".join(str(s) for s in result.seeds)
        text = f"{len(result.images)} image{'s' if len(result.images) != 1 else ''} (seed {seeds})"
        text += ", saved to the history."
        if self._stage_on_canvas(result):
            text += " Staged on the Canvas: preview and Accept them there."
        self.view.status_label.setText(text)
        self.status_message.emit(text)
        self.results_ready.emit(result)

    def _stage_on_canvas(self, result: jobs.PromptResult) -> bool:
        """Image-to-image and inpainting results the size of the canvas image they came from
        go to its staging strip (Accept there is one undoable step)."""
        doc, canvas = self._job_doc, self.canvas
        if doc is None or canvas is None or doc is not canvas_document(canvas):
            return False
        if not result.images or any(im.shape != doc.image.shape for im in result.images):
            return False
        staged = InpaintResult(list(result.images), list(result.thumbnails), result.seeds[0])
        canvas.stager.stage(staged, doc, self._job_revision)
        self.staged_on_canvas.emit(len(result.images))
        return True

    def _on_failed(self, message: str) -> None:
        self.view.status_label.setText("Failed.")
        self.view.banner.show_message(message)

    def _on_cancelled(self) -> None:
        self.view.preview.set_image(None)  # the partial image is discarded, not shown
        self.view.status_label.setText("Cancelled: nothing was kept and the canvas is unchanged.")

    def _on_end(self, _outcome: Any) -> None:
        self._waiting.stop()
        self.job, self._job_doc = None, None
        self.view.progress.setRange(0, 1)
        self.view.progress.setValue(0)
        self.running_changed.emit(False)
        if self._job_prepared is not None:
            self.model_ended.emit(str(self._job_prepared.fields["model"]))
