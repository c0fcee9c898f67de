"""The staging strip: inpainting variations (or a stylized or translated image) waiting for a decision.

Clicking a thumbnail previews that variation on the canvas (nothing is committed); Accept
puts it into the document as one undoable step; Discard drops them all. :class:`StagingStrip`
is the widget, :class:`Stager` holds the variations and acts on the document.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.core.canvas import CanvasDocument, CanvasError
from studio.qt.canvas.jobs import THUMB_SIZE, InpaintResult
from studio.qt.canvas.undo import UndoBridge
from studio.qt.canvas.view import CanvasView
from studio.qt.imaging import numpy_to_qimage


class StagingStrip(QWidget):
    """Thumbnails of the staged variations with Accept and Discard.

    ``variation_chosen(index)``: a thumbnail was selected (-1: none). ``accept_requested(index)``
    and ``discard_requested()``: the buttons (the workspace acts on them).
    """

    variation_chosen = Signal(int)
    accept_requested = Signal(int)
    discard_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setFlow(QListView.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        self.list.setSpacing(4)
        self.list.setFixedHeight(THUMB_SIZE + 40)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.list.currentRowChanged.connect(self._on_row_changed)
        self.caption = QLabel()
        self.caption.setObjectName("caption")
        self.caption.setWordWrap(True)
        self.accept_button = QPushButton("Accept")
        self.accept_button.setObjectName("primary")
        self.accept_button.setToolTip("Put the selected variation into the image (undoable)")
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Drop all the variations; the image stays as it is")
        self.accept_button.clicked.connect(self._on_accept_clicked)
        self.discard_button.clicked.connect(self.discard_requested)
        buttons = QVBoxLayout()
        buttons.addWidget(self.caption)
        buttons.addStretch(1)
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.discard_button)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.list, 1)
        row.addLayout(buttons)
        self._update()

    def set_variations(
        self, thumbnails: list[np.ndarray], seed: int | None = None, weights: str = ""
    ) -> None:
        """Show new thumbnails (replacing any) and select none, so the canvas shows the
        original until the user picks one. ``weights`` says which weights made them."""
        self.list.blockSignals(True)
        self.list.clear()
        for i, thumb in enumerate(thumbnails):
            item = QListWidgetItem(QIcon(QPixmap.fromImage(numpy_to_qimage(thumb))), f"#{i + 1}")
            item.setToolTip(f"Variation {i + 1}: click to preview it on the canvas")
            self.list.addItem(item)
        self.list.setCurrentRow(-1)
        self.list.blockSignals(False)
        seed_text = f" (seed {seed})" if seed is not None else ""
        weights_text = f"\n{weights}" if weights else ""
        self.caption.setText(
            f"{len(thumbnails)} variation{'s' if len(thumbnails) != 1 else ''}{seed_text}: "
            f"click one to preview it{weights_text}"
        )
        self._update()

    def clear(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        self.list.blockSignals(False)
        self.caption.clear()
        self._update()

    def count(self) -> int:
        return self.list.count()

    def current(self) -> int:
        return self.list.currentRow()

    def choose(self, index: int) -> None:
        self.list.setCurrentRow(index)

    def _on_row_changed(self, row: int) -> None:
        self._update()
        self.variation_chosen.emit(row)

    def _on_accept_clicked(self) -> None:
        if self.current() >= 0:
            self.accept_requested.emit(self.current())

    def _update(self) -> None:
        has = self.count() > 0
        # Always shown (empty, with a hint, until variations come): a strip that appeared
        # would shrink the canvas and make a fitted image jump to another zoom.
        if not has:
            self.caption.setText(
                "Inpainting variations, stylized and translated images appear here."
            )
        self.accept_button.setEnabled(self.current() >= 0)
        self.discard_button.setEnabled(has)


class Stager(QObject):
    """The staged variations of one document, previewed on the view until accepted or
    discarded.

    ``preview_changed(text)``: what the canvas shows now ("" = the document itself).
    ``accepted(index)``: a variation went into the document. ``refused(message)``: it could
    not (the image changed since the variations were made).
    """

    preview_changed = Signal(str)
    accepted = Signal(int)
    refused = Signal(str)

    def __init__(
        self,
        strip: StagingStrip,
        view: CanvasView,
        undo: UndoBridge,
        document: Callable[[], CanvasDocument | None],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._strip, self._view, self._undo, self._document = strip, view, undo, document
        # The variations, the document they were made for and its image revision then.
        self._staged: tuple[InpaintResult, CanvasDocument, int] | None = None
        strip.variation_chosen.connect(self._on_variation_chosen)
        strip.accept_requested.connect(self._on_accept_requested)
        strip.discard_requested.connect(self.discard)

    def stage(self, result: InpaintResult, doc: CanvasDocument, image_revision: int) -> None:
        if doc is not self._document():
            return  # another document was opened meanwhile; these belong to the old one
        self._staged = (result, doc, image_revision)
        self._strip.set_variations(result.thumbnails, result.seed, result.weights_text)

    def discard(self) -> None:
        self._staged = None
        self._strip.clear()
        self._view.set_preview(None)
        self.preview_changed.emit("")

    def _on_variation_chosen(self, index: int) -> None:
        staged = self._staged
        if staged is None or index < 0 or staged[1] is not self._document():
            self._view.set_preview(None)
            self.preview_changed.emit("")
            return
        self._view.set_preview(staged[0].images[index])
        self.preview_changed.emit(
            f"Previewing variation {index + 1}: Accept keeps it, Discard drops them all."
        )

    def _on_accept_requested(self, index: int) -> None:
        staged, doc = self._staged, self._document()
        if staged is None or doc is None or staged[1] is not doc:
            return
        if doc.image_revision != staged[2]:
            # Each variation is a whole image made from the pixels as they were then.
            self.refused.emit("The image changed since these variations were made; Generate again.")
            return
        try:
            result = staged[0]
            # An upscale (``resizes``) enlarges the canvas, its mask stretched with it.
            resizes = bool(getattr(result, "resizes", False))
            command = doc.replace_image(
                result.images[index], text=result.accept_text, resize_mask=resizes
            )
        except CanvasError as err:
            self.refused.emit(str(err))
            return
        self._undo.record(command)
        self.discard()
        self.accepted.emit(index)
