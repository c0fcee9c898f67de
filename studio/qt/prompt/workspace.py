"""The Prompt workspace: text-to-image, image-to-image and inpainting from a prompt.

It wires the model list, the settings form, the history panel and the X/Y grid dialog to the
engine thread. Generate snapshots the settings (and, for image-to-image and inpainting, copies
of the canvas image and mask) on the GUI thread and submits :func:`studio.qt.prompt.jobs.generate`;
live previews and progress come back through the runner. Finished images are saved to the
history by the job, shown as a strip of thumbnails and, for image-to-image and inpainting,
staged on the canvas's staging strip. A cancelled job produces nothing, so the canvas and the
results stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QShowEvent
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.core.errors import StudioError
from studio.qt.canvas.jobs import InpaintResult
from studio.qt.engine_thread import JobHandle, JobRunner
from studio.qt.prompt import jobs, model_list
from studio.qt.prompt.calls import JobCalls
from studio.qt.prompt.history_panel import HistoryPanel
from studio.qt.prompt.model_list import ModelList
from studio.qt.prompt.params import ParamsForm
from studio.qt.prompt.prefs import PromptPrefs
from studio.qt.prompt.results import ResultsStrip
from studio.qt.prompt.xy_dialog import Prepared, XYGridDialog
from studio.qt.settings import AppSettings
from studio.qt.widgets import Banner, ImageView

Send = Callable[[np.ndarray, str], None]


def dropped_png(event: QDragEnterEvent | QDropEvent) -> str | None:
    """The local PNG file an event carries (the first), or None."""
    mime = event.mimeData()
    if not mime.hasUrls():
        return None
    for url in mime.urls():
        if url.isLocalFile() and url.toLocalFile().lower().endswith(".png"):
            return url.toLocalFile()
    return None


class PromptWorkspace(QWidget):
    """Prompt generation around one engine thread and (optionally) the Canvas workspace.

    ``canvas`` is the :class:`~studio.qt.canvas.CanvasWorkspace` whose image and mask
    image-to-image and inpainting start from and whose staging strip receives their results;
    ``send_to_canvas(image, name)`` opens a text-to-image result there (the window sets it).
    Signals: ``status_message(text)``; ``staged_on_canvas(count)`` after results were staged;
    ``results_ready(result)`` with every finished :class:`~studio.qt.prompt.jobs.PromptResult`;
    ``params_restored(names)`` after a recall or a dropped PNG set the settings.
    """

    status_message = Signal(str)
    staged_on_canvas = Signal(int)
    results_ready = Signal(object)
    params_restored = Signal(list)

    def __init__(
        self,
        runner: JobRunner,
        settings: AppSettings,
        canvas: Any = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._settings, self.canvas = settings, canvas
        self._send: Send | None = None
        self.calls = JobCalls(runner, self)
        self._job: JobHandle | None = None
        self._job_doc: Any = None
        self._job_revision = 0
        self._job_prepared: Prepared | None = None
        self.consents = model_list.PickleConsents()
        self._shown_once = False
        self._prefs = PromptPrefs(settings)
        self.result: jobs.PromptResult | None = None
        self.model_list = ModelList(self.calls)
        self.params = ParamsForm()
        self.history = HistoryPanel(self.calls)
        self.xy_dialog: XYGridDialog | None = None
        self._build()
        self._connect()
        self._restore_prefs()
        self.setAcceptDrops(True)
        self._update_controls()

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.banner = Banner()
        models_box = QGroupBox("Models")
        QVBoxLayout(models_box).addWidget(self.model_list)
        history_box = QGroupBox("History")
        QVBoxLayout(history_box).addWidget(self.history)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(models_box)
        left.addWidget(history_box)
        left.setSizes([300, 400])

        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("primary")
        self.generate_button.setShortcut("Ctrl+Return")
        self.generate_button.setToolTip("Generate with the chosen model (Ctrl+Enter)")
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop now; nothing of this generation is kept")
        self.cancel_button.clicked.connect(self.cancel)
        self.xy_button = QPushButton("X/Y grid…")
        self.xy_button.setToolTip("Vary two settings and compare every combination in a grid")
        self.xy_button.clicked.connect(self.open_xy_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.xy_button)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.status_label = QLabel("Choose a model, write a prompt, Generate.")
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        self.preview = ImageView(
            "Previews appear here while it runs; drop a PNG to reuse its settings"
        )
        self.results = ResultsStrip()
        self.results.image_chosen.connect(self.preview.set_image)
        self.results.send_requested.connect(self._on_send_requested)
        centre = QWidget()
        centre_column = QVBoxLayout(centre)
        centre_column.setContentsMargins(0, 0, 0, 0)
        centre_column.addWidget(self.params.prompt_area)
        centre_column.addLayout(buttons)
        centre_column.addWidget(self.progress)
        centre_column.addWidget(self.status_label)
        centre_column.addWidget(self.preview, 1)
        centre_column.addWidget(self.results)

        scroll = QScrollArea()
        scroll.setWidget(self.params)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setMinimumWidth(self.params.sizeHint().width() + 24)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(centre)
        self.splitter.addWidget(scroll)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([290, 600, 340])
        self.splitter.setChildrenCollapsible(False)
        column = QVBoxLayout(self)
        column.setContentsMargins(6, 6, 6, 6)
        column.addWidget(self.banner)
        column.addWidget(self.splitter, 1)

    def _connect(self) -> None:
        self.model_list.model_chosen.connect(self._on_model_chosen)
        self.history.recall_requested.connect(lambda md: self.recall(md, "the history"))
        self.params.mode_changed.connect(lambda _m: self._update_controls())
        self.params.canvas_size_button.clicked.connect(self.use_canvas_size)

    def _on_model_chosen(self, entry: Any) -> None:
        from studio.engine.prompt.library import IMAGE_ONLY_ARCHS

        refiner = getattr(entry, "arch", "") in IMAGE_ONLY_ARCHS
        self.params.allow_text_to_image(
            not refiner,
            "An SDXL refiner refines an existing image: use Image to image or Inpaint, or "
            "choose a base model for Text to image.",
        )
        size = int(getattr(entry, "resolution", 0) or 0)
        if size and self.params.mode == "txt2img":  # a run trained here draws at its own size
            self.params.width_spin.setValue(size)
            self.params.height_spin.setValue(size)
        self._update_controls()

    # -- preferences -------------------------------------------------------------------------
    def _restore_prefs(self) -> None:
        saved = self._prefs.params()
        self.params.set_values(saved)
        self.params.lock_seed.setChecked(bool(saved.get("seed_locked", False)))
        self.model_list.select(self._prefs.model())
        state = self._prefs.splitter_state()
        if state is not None:
            self.splitter.restoreState(state)

    def save_prefs(self) -> None:
        values = self.params.values()
        values["seed_locked"] = self.params.lock_seed.isChecked()
        entry = self.model_list.current()
        self._prefs.save(
            values, str(entry.path) if entry is not None else None, self.splitter.saveState()
        )

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
        from studio.engine.prompt.library import IMAGE_ONLY_ARCHS

        if self.params.mode == "txt2img" and getattr(entry, "arch", "") in IMAGE_ONLY_ARCHS:
            from studio.engine.prompt.loading import refiner_txt2img_error

            self.banner.show_message(str(refiner_txt2img_error(str(entry.name))))
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

    def _on_progress(self, progress: Any, image: Any) -> None:
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

    @property
    def send_to_canvas(self) -> Send | None:
        """Opens an image on the canvas (the window's ``send_to_canvas``)."""
        return self._send

    @send_to_canvas.setter
    def send_to_canvas(self, send: Send | None) -> None:
        self._send = send
        self.results.set_can_send(send is not None)

    def _on_send_requested(self, image: np.ndarray, name: str) -> None:
        if self._send is not None:
            self._send(image, name)

    # -- recall ------------------------------------------------------------------------------
    def recall(self, metadata: dict[str, Any], source: str) -> list[str]:
        """Put a generation's settings back (seed locked, so Generate redoes it)."""
        names = self.params.set_values(metadata)
        if "seed" in metadata:
            self.params.lock_seed.setChecked(True)
        model = metadata.get("model")
        text = f"Restored {len(names)} settings from {source}."
        skipped = [k for k in ("seed", "width", "height", "steps") if k in metadata and k not in names]
        if skipped:
            self.banner.show_message(
                f"Settings restored from {source}, except {', '.join(skipped)}: out of the range "
                "this workspace takes, so the same image cannot be made here.",
                "warning",
            )
        elif model and not self.model_list.select(str(model)):
            name = metadata.get("model_name") or Path(str(model)).name
            self.banner.show_message(
                f"Settings restored from {source}, but its model {name} is not in the list: "
                "add it (Add folder… / Add file…) to generate the same image.",
                "warning",
            )
        else:
            self.banner.clear()
        self.status_label.setText(text)
        self.status_message.emit(text)
        self.params_restored.emit(names)
        return names

    def open_png(self, path: str | Path) -> None:
        """Read the settings a PNG carries (on the engine thread) and restore them."""
        name = Path(path).name
        self.status_label.setText(f"Reading {name}…")
        self.calls.submit(
            f"Read {name}",
            jobs.read_png_params(path),
            lambda md: self._on_png_read(md, name),
            lambda m: self.banner.show_message(m),
        )

    def _on_png_read(self, metadata: dict[str, Any] | None, name: str) -> None:
        if not metadata:
            text = (
                f"{name} carries no generation settings. Only PNGs saved by Studio (or by "
                "tools that write a 'parameters' text) can restore settings."
            )
            self.banner.show_message(text, "info")
            self.status_label.setText(text)
            return
        self.recall(metadata, name)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if dropped_png(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        path = dropped_png(event)
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_png(path)

    # -- X/Y grid ----------------------------------------------------------------------------
    def open_xy_dialog(self) -> XYGridDialog:
        if self.xy_dialog is None:
            self.xy_dialog = XYGridDialog(
                self.calls, lambda: self.prepare(new_seed=False), self.ask_consent, self
            )
        self.xy_dialog.show()
        self.xy_dialog.raise_()
        return self.xy_dialog

    # -- state -------------------------------------------------------------------------------
    def _update_controls(self) -> None:
        running = self._job is not None
        self.generate_button.setEnabled(not running and self.model_list.current() is not None)
        self.cancel_button.setEnabled(running)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        if not self._shown_once:
            self._shown_once = True  # list the models and the history on first show
            self.model_list.refresh()
            self.history.refresh()
        super().showEvent(event)

    def shutdown(self) -> None:
        """The window is closing: cancel a generation or grid and keep the settings."""
        self.cancel()
        if self.xy_dialog is not None:
            self.xy_dialog.cancel()
        self.save_prefs()
