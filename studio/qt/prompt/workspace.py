"""The Prompt workspace: text-to-image, image-to-image and inpainting from a prompt.

It wires the model list, the settings form, the history panel and the X/Y grid dialog to the
engine thread. Generate snapshots the settings (and, for image-to-image and inpainting, copies
of the canvas image and mask) on the GUI thread and submits :func:`studio.qt.prompt.jobs.generate`;
live previews and progress come back through the runner. Finished images are saved to the
history by the job, shown as a strip of thumbnails and, for image-to-image and inpainting,
staged on the canvas's staging strip. A cancelled job produces nothing, so the canvas and the
results stay as they were.

This module builds and wires the workspace from plain objects split by responsibility: the
request being edited is a :class:`~studio.qt.prompt.state.PromptRequestState` that the settings
form shows and edits; :class:`~studio.qt.prompt.generation.Generation` prepares the request and
follows the job; :class:`~studio.qt.prompt.recall.Recall` restores settings (history, opened or
dropped PNGs) into the state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
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

from studio.qt.engine_thread import JobRunner
from studio.qt.job_calls import JobCalls
from studio.qt.prompt import jobs, model_list
from studio.qt.prompt.generation import Generation, GenerationView, canvas_document
from studio.qt.prompt.history_panel import HistoryPanel
from studio.qt.prompt.model_list import ModelList
from studio.qt.prompt.params import ParamsForm
from studio.qt.prompt.prefs import PromptPrefs
from studio.qt.prompt.recall import Recall, dropped_png
from studio.qt.prompt.results import ResultsStrip
from studio.qt.prompt.state import PromptRequestState
from studio.qt.prompt.xy_dialog import Prepared, XYGridDialog
from studio.qt.settings import AppSettings
from studio.qt.widgets import Banner, ImageView

__all__ = ["PromptWorkspace", "Send", "dropped_png"]

Send = Callable[[np.ndarray, str], None]


class PromptWorkspace(QWidget):
    """Prompt generation around one engine thread and (optionally) the Canvas workspace.

    ``canvas`` is the :class:`~studio.qt.canvas.CanvasWorkspace` whose image and mask
    image-to-image and inpainting start from and whose staging strip receives their results;
    ``send_to_canvas(image, name)`` opens a text-to-image result there (the window sets it).
    Signals: ``status_message(text)``; ``staged_on_canvas(count)`` after results were staged;
    ``results_ready(result)`` with every finished :class:`~studio.qt.prompt.jobs.PromptResult`;
    ``params_restored(names)`` after a recall or a dropped PNG set the settings;
    ``model_ended(path)`` after a generation with the model at ``path`` ended, however it did
    (the model list then shows what a load found out about an unread pickle).
    ``state`` is the request being edited, ``generation`` the
    :class:`~studio.qt.prompt.generation.Generation` and ``recaller`` the
    :class:`~studio.qt.prompt.recall.Recall`; the methods below hand on to them.
    """

    status_message = Signal(str)
    staged_on_canvas = Signal(int)
    results_ready = Signal(object)
    params_restored = Signal(list)
    model_ended = Signal(str)

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
        self.calls = JobCalls(runner, self, kind="Prompt")
        self.consents = model_list.PickleConsents()
        self._shown_once = False
        self._prefs = PromptPrefs(settings)
        self.state = PromptRequestState()
        self.model_list = ModelList(self.calls)
        self.params = ParamsForm()
        self.history = HistoryPanel(self.calls)
        self.xy_dialog: XYGridDialog | None = None
        self._build()
        view = GenerationView(
            self.banner, self.progress, self.status_label, self.preview, self.results, self.history
        )
        self.generation = Generation(
            self.calls, self.state, self.model_list, self.consents, view,
            canvas=canvas, device=settings.device_preference, before_submit=self.save_prefs,
            parent=self,
        )  # fmt: skip
        self.recaller = Recall(
            self.state, self.calls, self.model_list, self.banner, self.status_label,
            self._on_restored,
        )  # fmt: skip
        self.params.bind(self.state)
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
        self.status_label.ensurePolished()  # (the theme's font) two lines, never clipped
        self.status_label.setMinimumHeight(2 * self.status_label.fontMetrics().lineSpacing() + 4)
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
        self.model_ended.connect(self.model_list.refresh_entry)
        gen = self.generation
        for theirs, ours in (
            (gen.status_message, self.status_message), (gen.staged_on_canvas, self.staged_on_canvas),
            (gen.results_ready, self.results_ready), (gen.model_ended, self.model_ended),
        ):  # fmt: skip
            theirs.connect(ours)
        gen.running_changed.connect(lambda _running: self._update_controls())
        self.history.recall_requested.connect(lambda md: self.recall(md, "the history"))
        self.params.mode_changed.connect(lambda _m: self._update_controls())
        self.params.canvas_size_button.clicked.connect(self.use_canvas_size)

    def _on_model_chosen(self, entry: Any) -> None:
        from studio.engine.prompt.modes import modes_for

        self.state.set_model(str(entry.path) if entry is not None else "")
        modes = modes_for(entry)
        self.params.allow_text_to_image(modes.allows("txt2img"), modes.why_not("txt2img"))
        size = int(getattr(entry, "resolution", 0) or 0)
        if size and self.state.mode == "txt2img":  # a run trained here draws at its own size
            self.state.update({"width": size, "height": size})
        self._update_controls()

    # -- preferences -------------------------------------------------------------------------
    def _restore_prefs(self) -> None:
        saved = self._prefs.params()
        self.state.update(saved)
        self.state.set_seed_locked(bool(saved.get("seed_locked", False)))
        self.model_list.select(self._prefs.model())
        state = self._prefs.splitter_state()
        if state is not None:
            self.splitter.restoreState(state)

    def save_prefs(self) -> None:
        values = self.state.values()
        values["seed_locked"] = self.state.seed_locked
        entry = self.model_list.current()
        self._prefs.save(
            values, str(entry.path) if entry is not None else None, self.splitter.saveState()
        )

    # -- sending to the canvas ---------------------------------------------------------------
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

    # -- generation and recall (see Generation and Recall) -----------------------------------
    @property
    def result(self) -> jobs.PromptResult | None:
        """The last finished generation's result."""
        return self.generation.result

    @property
    def running(self) -> bool:
        return self.generation.running

    def generate(self) -> bool:
        """Submit a generation; False (with a banner saying why) when it cannot run."""
        return self.generation.generate()

    def cancel(self) -> None:
        self.generation.cancel()

    def prepare(self, *, new_seed: bool = True) -> Prepared | None:
        return self.generation.prepare(new_seed=new_seed)

    def ask_consent(self, path: str, message: str) -> bool:
        return self.generation.ask_consent(path, message)

    def use_canvas_size(self) -> None:
        from studio.engine.prompt.request import snap8

        doc = canvas_document(self.canvas)
        if doc is None:
            self.banner.show_message("Open an image on the Canvas first.", "info")
            return
        h, w = doc.shape
        self.state.update({"width": snap8(w), "height": snap8(h)})

    def recall(self, metadata: dict[str, Any], source: str) -> list[str]:
        """Put a generation's settings back (seed locked, so Generate redoes it)."""
        return self.recaller.recall(metadata, source)

    def open_png(self, path: str | Path) -> None:
        """Read the settings a PNG carries (on the engine thread) and restore them."""
        self.recaller.open_png(path)

    def _on_restored(self, text: str, names: list[str]) -> None:
        self.status_message.emit(text)
        self.params_restored.emit(names)

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
            self.xy_dialog.model_ended.connect(self.model_list.refresh_entry)
        self.xy_dialog.show()
        self.xy_dialog.raise_()
        return self.xy_dialog

    # -- state -------------------------------------------------------------------------------
    def _update_controls(self) -> None:
        running = self.generation.running
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
