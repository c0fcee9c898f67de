"""The sample timeline in a tab, and beside it one tab per image a family shows beyond its
samples (``GenerativeModel.extra_images``: an RBM's learned filters, say).

The trainer writes each as ``samples/<name>.png`` and rewrites it at every sample step; the run
watcher lists them (:func:`studio.qt.run_watch.extra_files`) with a stamp that changes on each
rewrite. A changed file is decoded on a worker thread, never in a slot; the tab bar shows only
when there is more than the samples tab. Nothing here knows which family wrote them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLabel, QTabWidget, QVBoxLayout, QWidget

from studio.qt.run_watch import BackgroundReader, Extra
from studio.qt.timeline import decode_png
from studio.qt.widgets import ImageView


def tab_title(name: str) -> str:
    """``learned_filters`` -> ``Learned filters``."""
    return name.replace("_", " ").capitalize()


class ExtraImage(QWidget):
    """One extra image: a caption and the image, scaled to fit."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.caption = QLabel(f"{tab_title(name)} (loading…)")
        self.caption.setObjectName("caption")
        self.caption.setWordWrap(True)
        self.view = ImageView()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.view, 1)


class SampleTabs(QTabWidget):
    """``timeline`` as the first tab ("Samples"), then one :class:`ExtraImage` per extra
    image of the run on show (:meth:`set_extras`)."""

    def __init__(self, timeline: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDocumentMode(True)
        self.setTabBarAutoHide(True)  # a run without extra images: just the timeline
        self.addTab(timeline, "Samples")
        self.pages: dict[str, ExtraImage] = {}
        self._stamps: dict[str, tuple[int, int]] = {}  # of the file each page shows or loads
        self._loading: dict[int, tuple[str, tuple[int, int]]] = {}  # ticket -> (name, stamp)
        self.reader = BackgroundReader(self)
        self.reader.finished.connect(self._on_decoded)

    def set_extras(self, extras: list[Extra]) -> None:
        """The extra images on disk now: new and rewritten ones are (re)loaded, tabs of the
        ones gone are removed."""
        names = {name for name, _, _ in extras}
        for name in [n for n in self.pages if n not in names]:
            self._remove(name)
        for name, path, stamp in extras:
            if name not in self.pages:
                page = self.pages[name] = ExtraImage(name)
                self.addTab(page, tab_title(name))
                self.setTabToolTip(
                    self.indexOf(page), f"{path.name}: rewritten at every sample step"
                )
            if self._stamps.get(name) != stamp:
                self._stamps[name] = stamp
                self._load(name, path, stamp)

    def clear_extras(self) -> None:
        """Back to the samples tab alone (another run)."""
        for name in list(self.pages):
            self._remove(name)
        self.setCurrentIndex(0)

    def _remove(self, name: str) -> None:
        page = self.pages.pop(name)
        self._stamps.pop(name, None)
        self.removeTab(self.indexOf(page))
        page.deleteLater()

    def _load(self, name: str, path: Path, stamp: tuple[int, int]) -> None:
        ticket = self.reader.submit(lambda: decode_png(path))
        self._loading[ticket] = (name, stamp)

    def _on_decoded(self, ticket: int, image: Any, error: BaseException | None) -> None:
        name, stamp = self._loading.pop(ticket, ("", (0, 0)))
        page = self.pages.get(name)
        if page is None or self._stamps.get(name) != stamp:
            return  # removed, or rewritten again meanwhile: a newer load is on its way
        title = tab_title(name)
        if error is not None or not isinstance(image, QImage):
            page.caption.setText(f"{title}: could not be read ({error})")
            return
        page.view.set_image(image)
        page.caption.setText(f"{title}, as of the newest sample step")
