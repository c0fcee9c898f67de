"""The Prompt workspace's generation: the request, the job and what comes back.

:class:`GenerationMixin` is the part of :class:`~studio.qt.prompt.workspace.PromptWorkspace`
that turns the form and the canvas into a checked request (on the GUI thread, with private
copies of the canvas image and mask), submits :func:`studio.qt.prompt.jobs.generate` to the
engine thread, shows its progress and previews, and handles its outcome: results shown and
(for image-to-image and inpainting) staged on the canvas, a pickle consent asked and the job
resubmitted, a failure on the banner, a cancel that keeps nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QTimer, SignalInstance
from PySide6.QtWidgets import QLabel, QProgressBar

from studio.core.errors import StudioError
from studio.qt.canvas.jobs import InpaintResult
from studio.qt.engine_thread import JobHandle
from studio.qt.job_calls import JobCalls
from studio.qt.prompt import jobs, model_list
from studio.qt.prompt.history_panel import HistoryPanel
from studio.qt.prompt.model_list import ModelList
from studio.qt.prompt.params import ParamsForm
from studio.qt.prompt.results import ResultsStrip
from studio.qt.prompt.xy_dialog import Prepared
from studio.qt.settings import AppSettings
from studio.qt.widgets import Banner, ImageView


class GenerationMixin:
    """Prepare, submit and follow one generation (a mixin of PromptWorkspace)."""

    # Set up by PromptWorkspace.__init__ and its layout.
    _settings: AppSettings
    canvas: Any
    calls: JobCalls
    consents: model_list.PickleConsents
    model_list: ModelList
    params: ParamsForm
    history: HistoryPanel
    banner: Banner
    progress: QProgressBar
    status_label: QLabel
    preview: ImageView
    results: ResultsStrip
    result: jobs.PromptResult | None
    _job: JobHandle | None
    _job_doc: Any
    _job_revision: int
    _job_prepared: Prepared | None
    status_message: SignalInstance
    model_ended: SignalInstance
    staged_on_canvas: SignalInstance
    results_ready: SignalInstance
    save_prefs: Callable[[], None]
    _update_controls: Callable[[], None]

    # -- the request -------------------------------------------------------------------------
    def _canvas_document(self) -> Any:
        return getattr(self.canvas, "document", None) if self.canvas is not None else None

    def use_canvas_size(self) -> None:
        from studio.engine.prompt.request import snap8

        doc = self._canvas_document()
        if doc is None:
            self.banner.show_message("Open an image on the Canvas first.", "info")
            return
        h, w = doc.shape
        self.params.set_values({"width": snap8(w), "height": snap8(h)})

    def prepare(self, *, new_seed: bool = True) -> Prepared | None:
        """The request as the form and the canvas stand now, checked; None (with a banner
        saying what to do) when it cannot run. ``new_seed``: draw a seed unless locked."""
        from studio.engine.prompt.request import GenerateRequest

        entry = self.model_list.current()
        if entry is None:
            self.banner.show_message(
                "Choose a model: add a Stable Diffusion folder or .safetensors file with "
                "Add folder… / Add file…, or train a prompt model in Train."
            )
            return None
        from studio.engine.prompt.modes import refusal

        refused = refusal(self.params.mode, str(getattr(entry, "arch", "")), str(entry.name))
        if refused is not None:
            self.banner.show_message(str(refused))
            return None
        if new_seed:
            self.params.seed_for_next_run()
        fields = self.params.values()
        fields["model"] = str(entry.path)
        fields["device"] = self._settings.device_preference()
        image = mask = None
        if fields["mode"] != "txt2img":
            doc = self._canvas_document()
            if doc is None:
                self.banner.show_message(
                    "Image to image and inpainting start from the picture on the Canvas: "
                    "open one there first (Canvas ▸ Open image…)."
                )
                return None
            image = doc.image.copy()  # private copies: later edits must not reach the job
            if fields["mode"] == "inpaint":
                mask = np.round(np.clip(doc.mask, 0, 1) * 255).astype(np.uint8)
        try:
            GenerateRequest(**fields, image=image, mask=mask).require_inputs()
        except StudioError as err:
            self.banner.show_message(str(err))
            return None
        allow = self.consents.allowed(self, entry)
        if allow is None:
            self.banner.show_message(
                "Not loaded: the model is a pickled checkpoint. Convert it to .safetensors, or "
                "Generate again and agree to load it in weights-only mode.",
                "warning",
            )
            return None
        self.banner.clear()
        return Prepared(fields, image, mask, allow)

    def ask_consent(self, path: str, message: str) -> bool:
        return self.consents.ask(self, path, message)

    # -- generation --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._job is not None

    def generate(self) -> bool:
        """Submit a generation; False (with a banner saying why) when it cannot run."""
        if self._job is not None:
            return False
        prepared = self.prepare()
        if prepared is None:
            return False
        self.save_prefs()
        self._submit(prepared)
        return True

    def _submit(self, prepared: Prepared) -> None:
        doc = self._canvas_document() if prepared.image is not None else None
        self._job_doc = doc
        self._job_revision = doc.image_revision if doc is not None else 0
        self._job_prepared = prepared
        factory = jobs.generate(
            prepared.fields, prepared.image, prepared.mask, allow_pickle=prepared.allow_pickle
        )
        self._job = self.calls.submit(
            f"Generate ({prepared.fields['mode']})",
            factory,
            self._on_generated,
            self._on_failed,
            on_cancelled=self._on_cancelled,
            on_progress=self._on_progress,
            on_end=self._on_end,
        )
        self.progress.setRange(0, 0)
        self.preview.set_image(None)
        busy = self.calls.engine_busy()
        self.status_label.setText("Waiting for the engine (it is busy)…" if busy else "Starting…")
        self._update_controls()

    def cancel(self) -> None:
        if self._job is not None:
            self._job.token.cancel()
            self.status_label.setText("Cancelling…")

    def _on_progress(self, progress: Any, image: Any, _points: Any = None) -> None:
        if progress.total:
            self.progress.setRange(0, int(progress.total))
            self.progress.setValue(int(progress.step))
        if image is not None:
            self.preview.set_image(image)
        if progress.message:
            self.status_label.setText(progress.message)
        elif progress.total:
            self.status_label.setText(f"Step {progress.step} of {progress.total}")

    def _on_generated(self, result: Any) -> None:
        if isinstance(result, jobs.ConsentNeeded):
            prepared = self._job_prepared
            if prepared is not None and self.ask_consent(result.path, result.message):
                again = Prepared(prepared.fields, prepared.image, prepared.mask, True)
                QTimer.singleShot(0, self, lambda: self._submit(again))  # after _on_end
            else:
                self.status_label.setText("Not loaded: the pickled checkpoint was refused.")
            return
        self.result = result
        self.results.set_result(result)
        self.history.add_results(result)
        seeds = ", ".join(str(s) for s in result.seeds)
        text = f"{len(result.images)} image{'s' if len(result.images) != 1 else ''} (seed {seeds})"
        text += ", saved to the history."
        if self._stage_on_canvas(result):
            text += " Staged on the Canvas: preview and Accept them there."
        self.status_label.setText(text)
        self.status_message.emit(text)
        self.results_ready.emit(result)

    def _stage_on_canvas(self, result: jobs.PromptResult) -> bool:
        """Image-to-image and inpainting results the size of the canvas image they came from
        go to its staging strip (Accept there is one undoable step)."""
        doc, canvas = self._job_doc, self.canvas
        if doc is None or canvas is None or doc is not self._canvas_document():
            return False
        if not result.images or any(im.shape != doc.image.shape for im in result.images):
            return False
        staged = InpaintResult(list(result.images), list(result.thumbnails), result.seeds[0])
        canvas.stager.stage(staged, doc, self._job_revision)
        self.staged_on_canvas.emit(len(result.images))
        return True

    def _on_failed(self, message: str) -> None:
        self.status_label.setText("Failed.")
        self.banner.show_message(message)

    def _on_cancelled(self) -> None:
        self.preview.set_image(None)  # the partial image is discarded, not shown as a result
        self.status_label.setText("Cancelled: nothing was kept and the canvas is unchanged.")

    def _on_end(self, _outcome: Any) -> None:
        self._job, self._job_doc = None, None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._update_controls()
        if self._job_prepared is not None:
            self.model_ended.emit(str(self._job_prepared.fields["model"]))
