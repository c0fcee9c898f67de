"""Canvas files: open an image or a ``.studio-canvas``, save, import and export mask PNGs,
paste from the clipboard.

Decoding and encoding run on a worker (:class:`~studio.qt.canvas.tasks.TaskPool`), never on
the GUI thread: a 4000 x 3000 PNG takes a good fraction of a second. The live document is
only read (copied) and edited on the GUI thread; a save writes a private copy of it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from studio.core.canvas import CanvasDocument
from studio.engine.canvas_io import (
    SUFFIX,
    MaskSizeError,
    export_mask_png,
    import_mask,
    open_document,
    save_document,
)
from studio.qt.canvas.tasks import TaskPool
from studio.qt.canvas.view import display_image
from studio.qt.imaging import qimage_to_numpy

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.gif);;All files (*)"
OPEN_FILTER = f"Images and canvases (*{SUFFIX} *.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.gif)"
CANVAS_FILTER = f"Studio canvas (*{SUFFIX})"


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any ``H x W``, ``x 1``, ``x 3`` or ``x 4`` array as ``H x W x 3`` uint8 (a copy)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"an image is H x W x 3 (or 1 or 4 channels), not {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3]).copy()


class CanvasFiles(QObject):
    """The canvas's file operations.

    ``opened(doc, path, image)``: a document was read (``path`` is the ``.studio-canvas`` it
    came from, or "" for an image; ``image`` its picture ready for the view). ``saved(path, doc, revision)``: a save finished.
    ``mask_loaded(mask, doc, text)``: a mask PNG was read for ``doc``. ``exported(path)``.
    ``failed(message)``: for the banner.
    """

    opened = Signal(object, str, object)
    saved = Signal(str, object, int)
    mask_loaded = Signal(object, object, str)
    exported = Signal(str)
    failed = Signal(str)

    def __init__(
        self, parent_widget: QWidget, document: Callable[[], CanvasDocument | None]
    ) -> None:
        """``document`` returns the canvas's document with any stroke in progress committed."""
        super().__init__(parent_widget)
        self._widget = parent_widget
        self._document = document
        self._tasks = TaskPool(self)
        self.last_dir = str(Path.home())

    def busy(self) -> bool:
        return self._tasks.busy()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        return self._tasks.wait(timeout_ms)

    # -- opening ---------------------------------------------------------------------------
    def choose_and_open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self._widget, "Open an image or a canvas", self.last_dir, OPEN_FILTER
        )
        if path:
            self.open(path)

    def open(self, path: str | Path) -> None:
        """Read an image or a ``.studio-canvas`` on the worker; ``opened`` or ``failed``."""
        p = Path(path)
        self.last_dir = str(p.parent)
        source = str(p) if p.suffix.lower() == SUFFIX else ""

        def read() -> tuple[CanvasDocument, QImage]:
            doc = open_document(p)
            return doc, display_image(doc.image)  # the conversion too stays off the GUI

        self._tasks.submit(read, lambda r: self.opened.emit(r[0], source, r[1]), self.failed.emit)

    def clipboard_image(self) -> np.ndarray | str | None:
        """The clipboard's image as RGB, else the first local file it names, else None."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None:
            return None
        if mime.hasImage():
            image = QImage(mime.imageData())
            if not image.isNull():
                # Already decoded by Qt; flatten any alpha so transparent areas are not black.
                flat = QImage(image.size(), QImage.Format.Format_RGB888)
                flat.fill(0xFFFFFFFF)
                painter = QPainter(flat)
                painter.drawImage(0, 0, image)
                painter.end()
                return qimage_to_numpy(flat)
        if mime.hasUrls():
            for url in mime.urls():
                if url.isLocalFile():
                    return url.toLocalFile()
        return None

    # -- saving ----------------------------------------------------------------------------
    def choose_save_path(self, suggested: str) -> str | None:
        start = str(Path(self.last_dir) / f"{suggested}{SUFFIX}")
        path, _ = QFileDialog.getSaveFileName(self._widget, "Save canvas", start, CANVAS_FILTER)
        if not path:
            return None
        if not path.lower().endswith(SUFFIX):
            path += SUFFIX
        self.last_dir = str(Path(path).parent)
        return path

    def save(self, doc: CanvasDocument, path: str | Path) -> None:
        """Save ``doc`` to ``path`` on the worker, from a private copy taken now."""
        snapshot = CanvasDocument(
            doc.image,
            doc.mask,
            name=doc.name,
            source_path=doc.source_path,
            metadata=copy.deepcopy(doc.metadata),  # later edits must not reach the worker
        )
        revision, target = doc.revision, str(path)
        self._tasks.submit(
            lambda: save_document(snapshot, target),
            lambda _p: self.saved.emit(target, doc, revision),
            self.failed.emit,
        )

    # -- masks -----------------------------------------------------------------------------
    def choose_and_import_mask(self) -> None:
        doc = self._document()
        if doc is None:
            self.failed.emit("Open an image before loading a mask for it.")
            return
        path, _ = QFileDialog.getOpenFileName(
            self._widget, "Load a mask", self.last_dir, IMAGE_FILTER
        )
        if path:
            self.import_mask(path)

    def import_mask(self, path: str | Path, *, resize: bool = False) -> None:
        """Read a mask PNG for the current document. A mask of another size asks whether to
        stretch it, and otherwise says what is wrong."""
        doc = self._document()
        if doc is None:
            self.failed.emit("Open an image before loading a mask for it.")
            return
        p, shape = Path(path), doc.shape

        def read() -> Any:
            try:
                return import_mask(p, shape, resize=resize)
            except MaskSizeError as err:
                return err  # not a failure yet: the user may choose to stretch it

        def done(result: Any) -> None:
            if isinstance(result, MaskSizeError):
                self._on_wrong_size(p, str(result))
            else:
                self.mask_loaded.emit(result, doc, f"Load mask {p.name}")

        self._tasks.submit(read, done, self.failed.emit)

    def _on_wrong_size(self, path: Path, message: str) -> None:
        answer = QMessageBox.question(
            self._widget,
            "The mask does not fit",
            f"{message}\n\nStretch the mask to this image's size?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.import_mask(path, resize=True)
        else:
            self.failed.emit(message)

    def choose_and_export_mask(self) -> None:
        doc = self._document()
        if doc is None:
            self.failed.emit("There is no mask to export: open an image and paint one first.")
            return
        start = str(Path(self.last_dir) / f"{doc.name}_mask.png")
        path, _ = QFileDialog.getSaveFileName(
            self._widget, "Export the mask", start, "PNG image (*.png)"
        )
        if path:
            if not path.lower().endswith(".png"):
                path += ".png"
            self.export_mask(path)

    def export_mask(self, path: str | Path) -> None:
        """Write the current mask as an 8-bit PNG (white = masked), on the worker."""
        doc = self._document()
        if doc is None:
            return
        mask, target = doc.mask.copy(), str(path)
        self.last_dir = str(Path(target).parent)
        self._tasks.submit(
            lambda: export_mask_png(mask, target),
            lambda _r: self.exported.emit(target),
            self.failed.emit,
        )
