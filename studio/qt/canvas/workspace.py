"""The Canvas workspace: paint a mask over an image and inpaint it with a run trained here.

It owns the one live :class:`~studio.core.canvas.CanvasDocument` (only the GUI thread touches
it), the undo stack, the view, the tools, file actions, autosave, the inpaint panel and the
staging strip, and wires them together. Masks belong to the document, so changing the run,
the preset or any other setting never touches them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QImage, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio.core.canvas import CanvasDocument, CanvasError
from studio.core.regions import Rect
from studio.qt.canvas.autosave import AutosaveController, ask_recovery
from studio.qt.canvas.files import CanvasFiles, as_rgb
from studio.qt.canvas.inpaint_panel import InpaintPanel
from studio.qt.canvas.staging import Stager, StagingStrip
from studio.qt.canvas.stylize import StylizePanel
from studio.qt.canvas.toolbar import ToolOptions, ToolStrip, action_button
from studio.qt.canvas.tools import Tool, ToolController
from studio.qt.canvas.translate import TranslatePanel
from studio.qt.canvas.undo import UndoBridge
from studio.qt.canvas.upscale import UpscalePanel
from studio.qt.canvas.view import CanvasView
from studio.qt.engine_thread import JobRunner
from studio.qt.settings import AppSettings
from studio.qt.theme import ACCENT
from studio.qt.widgets import Banner


class CanvasWorkspace(QWidget):
    """Mask painting, files, autosave and inpainting around one canvas document.

    Signals: ``document_changed(doc)`` when another document is shown (opened, pasted, sent,
    recovered); ``mask_changed()`` and ``image_changed()`` on every edit (undo included);
    ``document_saved(path)``; ``status_message(text)`` for the window's status bar.
    """

    document_changed = Signal(object)
    mask_changed = Signal()
    image_changed = Signal()
    document_saved = Signal(str)
    status_message = Signal(str)

    def __init__(
        self, runner: JobRunner, settings: AppSettings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.runner, self._settings = runner, settings
        self._doc: CanvasDocument | None = None
        self._save_path: str | None = None
        self._recovered = False  # a recovered document counts as unsaved
        self._recovering = False  # the next opened document is a recovery
        self._overlay_hidden_for_result = False  # Accept hid the mask; an edit shows it
        self.undo = UndoBridge(self)
        self.tools = ToolController(lambda: self._doc, self.undo, self)
        self.view = CanvasView(self.tools)
        self.tool_strip = ToolStrip(self.tools)
        self.options = ToolOptions(self.tools, self.view)
        self.staging = StagingStrip()
        self.stager = Stager(self.staging, self.view, self.undo, self._settled_document, self)
        self.inpaint_panel = InpaintPanel(runner, settings, self._settled_document)
        self.stylize_panel = StylizePanel(
            runner, settings, self._settled_document, lambda: self.options.feather
        )
        self.translate_panel = TranslatePanel(
            runner, settings, self._settled_document, lambda: self.options.feather
        )
        self.upscale_panel = UpscalePanel(
            runner, settings, self._settled_document, lambda: self.options.feather
        )
        self.files = CanvasFiles(self, self._settled_document)
        self.autosave = AutosaveController(lambda: self._doc, self)
        self.banner = Banner()
        self._make_actions()
        self._build()
        self._connect()
        self._update_title()
        self._update_actions()

    # -- public API ------------------------------------------------------------------------
    @property
    def document(self) -> CanvasDocument | None:
        """The document on the canvas (None before an image is opened)."""
        return self._doc

    def open_image(self, path: str | Path) -> None:
        """Open an image or a ``.studio-canvas`` (read on a worker; ``document_changed``
        follows, or the banner says why it could not be opened)."""
        self.status_message.emit(f"Opening {Path(path).name}…")
        self.files.open(path)

    def set_image(self, image: np.ndarray, name: str = "Sample") -> bool:
        """Show a copy of ``image`` (``H x W x 3`` uint8; gray and RGBA are converted) with an
        empty mask: "send to canvas" from a sample anywhere in the studio. False when the
        user kept the current canvas (it had unsaved edits) or the array is no image."""
        if not self._confirm_replace():
            return False
        try:
            doc = CanvasDocument(as_rgb(image), name=name)
        except (ValueError, CanvasError) as err:
            self.banner.show_message(f"This image cannot go on the canvas: {err}")
            return False
        self._set_document(doc)
        return True

    def offer_recovery(self, parent_widget: QWidget | None = None) -> bool:
        """Offer to recover a canvas autosaved by a session that crashed; True if the user
        chose to (it is read on a worker; ``document_changed`` follows)."""
        info = ask_recovery(parent_widget or self, exclude=[self.autosave.saver.doc_id])
        if info is None:
            return False
        self.autosave.adopt(info.doc_id)  # keep saving over it until a clean exit
        self._recovering = True
        self.status_message.emit(f"Recovering {info.name}…")
        self.files.open(info.path)
        return True

    def has_unsaved_changes(self) -> bool:
        doc = self._doc
        return doc is not None and (self._recovered or not doc.history.is_clean)

    def confirm_close(self, parent_widget: QWidget | None = None) -> bool:
        """Ask before closing with unsaved edits: Save, Discard or Cancel. False = stay open."""
        if not self.has_unsaved_changes():
            return True
        buttons = (
            QMessageBox.StandardButton.Save
            | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel
        )
        answer = QMessageBox.warning(
            parent_widget or self,
            "Unsaved canvas",
            "The canvas has unsaved changes to its mask or image. Save them?",
            buttons,
            QMessageBox.StandardButton.Save,
        )
        if answer == QMessageBox.StandardButton.Cancel:
            return False
        return answer != QMessageBox.StandardButton.Save or self.save(wait=True)

    def build_menu(self, parent: QWidget | None = None) -> QMenu:
        """A "Canvas" menu of the workspace's own actions (the same QActions, so labels,
        enabled states and shortcuts stay in step), for the window's menu bar."""
        menu = QMenu("&Canvas", parent or self)
        groups = (
            (self.open_action, self.save_action, self.save_as_action, self.paste_action),
            (self.import_mask_action, self.export_mask_action),
            (self.undo_action, self.redo_action),
            (self.stylize_action, self.translate_action, self.upscale_action),
            (self.zoom_in_action, self.zoom_out_action, self.fit_action, self.actual_size_action),
        )
        for i, group in enumerate(groups):
            if i:
                menu.addSeparator()
            menu.addActions(list(group))
        return menu

    def set_run(self, path: str | Path) -> None:
        """Use the run at ``path`` for inpainting (the Train panel's current run, say)."""
        self.inpaint_panel.set_run(path)
        self.translate_panel.refresh_runs()
        self.upscale_panel.refresh_runs()

    def shutdown(self) -> None:
        """On a clean exit: cancel inpainting, finish file writes and delete the autosave."""
        self.inpaint_panel.shutdown()
        self.stylize_panel.shutdown()
        self.translate_panel.shutdown()
        self.upscale_panel.shutdown()
        self.files.wait()
        self.autosave.shutdown()

    # -- documents -------------------------------------------------------------------------
    def _settled_document(self) -> CanvasDocument | None:
        """The document with any stroke in progress committed (as its own undo step)."""
        self.undo.commit_stroke()
        return self._doc

    def _set_document(
        self, doc: CanvasDocument, save_path: str | None = None, prepared: QImage | None = None
    ) -> None:
        if self._doc is not None:
            self._doc.remove_listener(self._on_document_edited)
        self.tools.cancel()
        self._doc, self._save_path = doc, save_path
        self._recovered, self._recovering = self._recovering, False
        self.stager.discard()
        self.inpaint_panel.forget_document()
        self.undo.set_document(doc)
        self.view.set_document(doc, prepared)
        doc.add_listener(self._on_document_edited)
        self.banner.clear()
        self._update_title()
        self._update_actions()
        self.document_changed.emit(doc)

    def _confirm_replace(self) -> bool:
        if not self.has_unsaved_changes():
            return True
        answer = QMessageBox.question(
            self,
            "Replace the canvas",
            "Replace the current canvas? Its unsaved mask edits will be lost "
            "(save the canvas or export the mask to keep them).",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _on_document_edited(self, layer: str, _rect: Rect) -> None:
        if layer != "image" and self._overlay_hidden_for_result:
            self._show_overlay(True)  # painting again: the mask must be seen
        (self.image_changed if layer == "image" else self.mask_changed).emit()

    def _show_overlay(self, show: bool) -> None:
        self._overlay_hidden_for_result = False
        self.options.overlay_button.setChecked(show)

    def _on_accepted(self, index: int) -> None:
        # The mask overlay would cover the result just accepted: hide it until the next mask
        # edit (or the Mask button).
        if self.options.overlay_button.isChecked():
            self._show_overlay(False)
            self._overlay_hidden_for_result = True
        self.status_message.emit(
            f"Variation {index + 1} accepted (Ctrl+Z undoes it); the mask overlay is hidden "
            "to show it (the Mask button shows it again)"
        )

    def _on_opened(self, doc: CanvasDocument, canvas_path: str, prepared: QImage) -> None:
        if not self._recovering and not self._confirm_replace():
            return
        self._set_document(doc, canvas_path or None, prepared)
        self.status_message.emit(f"Opened {doc.name} ({doc.shape[1]}x{doc.shape[0]})")

    def _on_file_failed(self, message: str) -> None:
        self._recovering = False
        self.banner.show_message(message)
        self.status_message.emit(message)

    # -- saving ----------------------------------------------------------------------------
    def save(self, path: str | Path | None = None, *, wait: bool = False) -> bool:
        """Save the canvas (image, exact mask) as ``.studio-canvas``; asks where if it was
        never saved. ``wait`` blocks until written (for closing). False if not saved."""
        doc = self._settled_document()
        if doc is None:
            return False
        target = str(path) if path else self._save_path or self.files.choose_save_path(doc.name)
        if not target:
            return False
        self.files.save(doc, target)
        if wait:
            self.files.wait()
            QApplication.processEvents()  # deliver `saved`, which marks the document clean
            return not self.has_unsaved_changes()
        return True

    def save_as(self) -> bool:
        doc = self._doc
        target = self.files.choose_save_path(doc.name) if doc is not None else None
        return bool(target) and self.save(target)

    def _on_saved(self, path: str, doc: CanvasDocument, revision: int) -> None:
        if doc is self._doc:
            self._save_path = path
            if doc.revision == revision:  # nothing changed while it was written
                doc.history.mark_clean()
                self._recovered = False
                self.autosave.discard()
        self._update_title()
        self.status_message.emit(f"Saved {Path(path).name}")
        self.document_saved.emit(path)

    def _on_mask_loaded(self, mask: np.ndarray, doc: CanvasDocument, text: str) -> None:
        if doc is not self._doc or mask.shape != doc.shape:
            self.banner.show_message("The canvas changed while the mask was read; load it again.")
            return
        self.undo.commit_stroke()
        self.undo.record(doc.set_mask(mask, text))
        self.status_message.emit(text)

    def paste(self) -> None:
        """Ctrl+V: an image on the clipboard (or a file copied in a file manager)."""
        found = self.files.clipboard_image()
        if isinstance(found, np.ndarray):
            self.set_image(found, "Pasted image")
        elif isinstance(found, str):
            self.open_image(found)
        else:
            self.banner.show_message("The clipboard holds no image to paste.", "info")

    def _on_files_dropped(self, paths: list[str]) -> None:
        self.open_image(paths[0])
        if len(paths) > 1:
            self.status_message.emit(f"Opened the first of {len(paths)} dropped files")

    # -- layout, actions, wiring -----------------------------------------------------------
    def _make_actions(self) -> None:
        def action(text: str, slot: Any, *keys: str | QKeySequence.StandardKey) -> QAction:
            a = QAction(text, self)
            a.setShortcuts([QKeySequence(k) for k in keys])
            a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            a.triggered.connect(slot)
            self.addAction(a)
            return a

        self.undo_action, self.redo_action = self.undo.make_actions(self)
        for a in (self.undo_action, self.redo_action):
            a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(a)
        self.open_action = action("Open image…", self.files.choose_and_open)
        self.save_action = action("Save canvas", lambda: self.save(), "Ctrl+S")
        self.save_as_action = action("Save canvas as…", self.save_as, "Ctrl+Shift+S")
        self.import_mask_action = action("Load mask…", self.files.choose_and_import_mask)
        self.export_mask_action = action("Export mask…", self.files.choose_and_export_mask)
        self.paste_action = action("Paste image", self.paste, "Ctrl+V")
        self.stylize_action = action(
            "Stylize…", lambda: self.show_panel(self.stylize_panel).open_dialog()
        )
        self.translate_action = action(
            "Translate", lambda: self.show_panel(self.translate_panel).start()
        )
        self.upscale_action = action("Upscale", lambda: self.show_panel(self.upscale_panel).start())
        self.zoom_in_action = action("Zoom in", lambda: self.view.zoom_in(), "+", "=", "Ctrl++")
        self.zoom_out_action = action("Zoom out", lambda: self.view.zoom_out(), "-", "Ctrl+-")
        self.fit_action = action("Fit", self.view.fit, "0")
        self.actual_size_action = action("100%", self.view.actual_size, "1")
        action("Bigger brush", self.tools.grow_size, "]")
        action("Smaller brush", self.tools.shrink_size, "[")
        action("Brush / eraser", self.tools.toggle_eraser, "X")
        for tool, key in (
            (Tool.BRUSH, "B"),
            (Tool.ERASER, "E"),
            (Tool.FILL, "G"),
            (Tool.RECT, "M"),
            (Tool.LASSO, "L"),
        ):
            action(tool.value, lambda _=False, t=tool: self.tools.set_tool(t), key)

    def _build(self) -> None:
        top = QHBoxLayout()
        top.setContentsMargins(4, 0, 4, 0)
        groups = (
            ((self.open_action, "Open…"), (self.save_action, "Save")),
            ((self.import_mask_action, "Load mask…"), (self.export_mask_action, "Export mask…")),
            ((self.undo_action, "Undo"), (self.redo_action, "Redo")),
            (
                (self.zoom_out_action, "\u2212"),
                (self.zoom_in_action, "+"),
                (self.fit_action, "Fit"),
                (self.actual_size_action, "100%"),
            ),
        )
        for group in groups:
            for a, text in group:
                top.addWidget(action_button(a, text))
            top.addSpacing(12)
        self.zoom_label = QLabel("100%")
        self.zoom_label.setObjectName("hint")
        self.zoom_label.setMinimumWidth(48)
        top.addWidget(self.zoom_label)
        self.title_label = QLabel()
        self.title_label.setObjectName("caption")
        top.addStretch(1)
        top.addWidget(self.title_label)

        self.preview_label = QLabel()
        self.preview_label.setObjectName("status")
        # Its line stays reserved while hidden, so showing it never moves a fitted canvas.
        policy = self.preview_label.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.preview_label.setSizePolicy(policy)
        self.preview_label.hide()
        centre = QWidget()
        centre_column = QVBoxLayout(centre)
        centre_column.setContentsMargins(0, 0, 0, 0)
        side = QVBoxLayout()
        side.addWidget(self.tool_strip)
        side.addWidget(self.options.overlay_box)
        side.addStretch(1)
        canvas_row = QHBoxLayout()
        canvas_row.addLayout(side)
        canvas_row.addWidget(self.view, 1)
        centre_column.addLayout(canvas_row, 1)
        centre_column.addWidget(self.preview_label)
        centre_column.addWidget(self.staging)

        # One tool at a time beside the canvas: each panel in its own tab (and scroll area), so
        # none sits below another's previews and every button is reachable without scrolling.
        self.side_tabs = QTabWidget()
        self.side_tabs.setDocumentMode(True)
        widest = 0
        for panel, title in (
            (self.inpaint_panel, "Inpaint"),
            (self.stylize_panel, "Stylize"),
            (self.translate_panel, "Translate"),
            (self.upscale_panel, "Upscale"),
        ):
            scroll = QScrollArea()
            scroll.setWidget(panel)
            scroll.setWidgetResizable(True)
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            scroll.setFrameShape(QScrollArea.Shape.NoFrame)
            self.side_tabs.addTab(scroll, title)
            widest = max(widest, panel.minimumSizeHint().width())
        self.side_tabs.setMinimumWidth(widest + 24)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(centre)
        splitter.addWidget(self.side_tabs)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 0)
        splitter.setSizes([900, 320])
        splitter.setChildrenCollapsible(False)

        # Which tool is on must be obvious at a glance; the theme's checked buttons are subtle.
        self.setStyleSheet(f"QToolButton:checked {{ background: {ACCENT}; color: white; }}")
        column = QVBoxLayout(self)
        column.setContentsMargins(6, 6, 6, 6)
        column.addWidget(self.banner)
        column.addLayout(top)
        column.addWidget(self.options)
        column.addWidget(splitter, 1)

    def show_panel(self, panel: QWidget) -> Any:
        """Bring ``panel``'s tab to the front (a menu action works on what the user then sees)."""
        for i in range(self.side_tabs.count()):
            scroll = self.side_tabs.widget(i)
            if isinstance(scroll, QScrollArea) and scroll.widget() is panel:
                self.side_tabs.setCurrentIndex(i)
        return panel

    def _connect(self) -> None:
        self.view.files_dropped.connect(self._on_files_dropped)
        self.view.zoom_changed.connect(self._on_zoom_changed)
        self.files.opened.connect(self._on_opened)
        self.files.saved.connect(self._on_saved)
        self.files.mask_loaded.connect(self._on_mask_loaded)
        self.files.exported.connect(lambda p: self.status_message.emit(f"Mask exported to {p}"))
        self.files.failed.connect(self._on_file_failed)
        self.autosave.autosave_failed.connect(
            lambda m: self.status_message.emit(f"Autosave failed: {m}")
        )
        self.undo.history_changed.connect(self._update_title)
        self.stager.preview_changed.connect(self._on_preview_changed)
        self.stager.refused.connect(lambda m: self.banner.show_message(m, "warning"))
        self.stager.accepted.connect(self._on_accepted)
        self.options.overlay_button.toggled.connect(
            lambda _on: setattr(self, "_overlay_hidden_for_result", False)
        )
        self.inpaint_panel.variations_ready.connect(self.stager.stage)
        self.stylize_panel.stylized.connect(self.stager.stage)
        self.translate_panel.translated.connect(self.stager.stage)
        self.upscale_panel.upscaled.connect(self.stager.stage)
        self.inpaint_panel.feather_changed.connect(self.options.set_feather)
        self.options.feather_changed.connect(self.inpaint_panel.set_feather)
        self.inpaint_panel.set_feather(self.options.feather)

    def _update_actions(self) -> None:
        has = self._doc is not None
        for a in (
            self.save_action,
            self.save_as_action,
            self.import_mask_action,
            self.export_mask_action,
            self.stylize_action,
            self.translate_action,
            self.upscale_action,
        ):
            a.setEnabled(has)

    def _on_preview_changed(self, text: str) -> None:
        self.preview_label.setText(text)
        self.preview_label.setVisible(bool(text))

    def _on_zoom_changed(self, scale: float) -> None:
        self.zoom_label.setText(f"{scale * 100:.0f}%")

    def _update_title(self) -> None:
        doc = self._doc
        if doc is None:
            self.title_label.setText("No image")
            return
        h, w = doc.shape
        star = " *" if self.has_unsaved_changes() else ""
        self.title_label.setText(f"{doc.name}{star}  ({w}x{h})")
        self.title_label.setToolTip(self._save_path or doc.source_path or "")
