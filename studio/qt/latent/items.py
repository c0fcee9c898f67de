"""Kept latents: the tray of samples and encoded images the other tools pick from.

Interpolation, arithmetic and "show" all work on these items. Each holds its latent (a numpy
vector) and its image; the tray shows a :class:`~studio.qt.latent.edit_state.KeptLatents` in a
row, as thumbnails.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QComboBox, QListView, QListWidget, QListWidgetItem, QWidget

from studio.qt.imaging import numpy_to_qimage
from studio.qt.latent.edit_state import KeptLatents, LatentItem

__all__ = ["ItemPicker", "ItemTray", "LatentItem", "thumbnail"]

THUMB = 64


def thumbnail(image: np.ndarray, size: int = THUMB) -> QPixmap:
    """A crisp (nearest-neighbour) square thumbnail of a small image."""
    pixmap = QPixmap.fromImage(numpy_to_qimage(image))
    return pixmap.scaled(
        size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation
    )


class ItemTray(QListWidget):
    """A horizontal row of kept latents. ``item_activated(index)`` on double-click."""

    items_changed = Signal()
    item_activated = Signal(int)

    def __init__(self, kept: KeptLatents | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kept = kept if kept is not None else KeptLatents()
        self.setObjectName("latentTray")
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setGridSize(QSize(THUMB + 44, THUMB + 28))
        self.setFixedHeight(THUMB + 48)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setToolTip("Kept latents: double-click one to edit it with the sliders")
        self.itemDoubleClicked.connect(lambda it: self.item_activated.emit(self.row(it)))

    def add(self, item: LatentItem) -> int:
        """Keep ``item`` (names are made unique); returns its index."""
        item = self.kept.add(item)
        entry = QListWidgetItem(QIcon(thumbnail(item.image)), item.name)
        entry.setToolTip(item.name)
        entry.setTextAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.addItem(entry)
        self.scrollToItem(entry)
        self.items_changed.emit()
        return len(self.kept.items()) - 1

    def items(self) -> list[LatentItem]:  # type: ignore[override]
        return self.kept.items()

    def item_at(self, index: int) -> LatentItem | None:
        return self.kept.at(index)

    def clear_items(self) -> None:
        self.kept.clear()
        self.clear()
        self.items_changed.emit()


class ItemPicker(QComboBox):
    """A combo box listing the tray's items, kept in step with it."""

    def __init__(
        self, tray: ItemTray, default_index: int = 0, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._tray = tray
        self._default = default_index
        self._chosen = False  # until the user picks, follow the default as the tray grows
        self.activated.connect(self._on_activated)
        self.setMinimumContentsLength(10)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setIconSize(QSize(24, 24))
        tray.items_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        current = self.currentIndex()
        items = self._tray.items()
        self.blockSignals(True)
        self.clear()
        for item in items:
            self.addItem(QIcon(thumbnail(item.image, 24)), item.name)
        if self._chosen and 0 <= current < len(items):
            self.setCurrentIndex(current)
        elif items:
            self.setCurrentIndex(min(self._default, len(items) - 1))
        self.blockSignals(False)

    def _on_activated(self, index: int) -> None:
        self._chosen = index >= 0

    def selected(self) -> LatentItem | None:
        return self._tray.item_at(self.currentIndex())
