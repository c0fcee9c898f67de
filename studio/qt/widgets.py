"""Small widgets shared by the panels: a message banner and a pixel-exact image view."""

from __future__ import annotations

import random

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QToolButton,
    QWidget,
)

from studio.qt.imaging import numpy_to_qimage
from studio.qt.seed_box import MAX_SEED, SeedBox


class Banner(QFrame):
    """A message across the top of a panel: what went wrong, in words, with no traceback.

    ``level`` (``error``, ``warning``, ``info``) is a dynamic property the theme styles.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str, level: str = "error") -> None:
        self.label.setText(text)
        self.setProperty("level", level)
        # Re-polish so the stylesheet picks up the changed property.
        self.style().unpolish(self)
        self.style().polish(self)
        self.show()

    def text(self) -> str:
        return self.label.text() if not self.isHidden() else ""

    def level(self) -> str:
        return str(self.property("level") or "")

    def clear(self) -> None:
        self.label.clear()
        self.hide()


class ImageView(QWidget):
    """Shows one image scaled to fit, keeping its aspect ratio.

    Enlarging uses nearest-neighbour scaling so a 32 px sample grid stays crisp rather than
    blurred; shrinking is smooth.
    """

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image = QImage()
        self._placeholder = placeholder
        self.generation = 0  # bumped on every new image (tests and captions read it)
        self.setMinimumSize(160, 160)

    def set_image(self, image: np.ndarray | QImage | None) -> None:
        if image is None:
            self._image = QImage()
        elif isinstance(image, QImage):
            self._image = image.copy()
        else:
            self._image = numpy_to_qimage(image)
        self.generation += 1
        self.update()

    def image(self) -> QImage:
        return self._image

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(320, 320)

    def target_rect(self) -> QRect:
        """Where the image is drawn: the largest fit, centred across and at the top."""
        w, h = self._image.width(), self._image.height()
        if w == 0 or h == 0:
            return QRect()
        scale = min(self.width() / w, self.height() / h)
        if scale >= 2:
            scale = float(int(scale))  # whole multiples where that costs little space
        tw, th = max(1, int(w * scale)), max(1, int(h * scale))
        return QRect((self.width() - tw) // 2, 0, tw, th)  # top: right under its caption

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        if self._image.isNull():
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(
                self.rect(),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                self._placeholder,
            )
            return
        target = self.target_rect()
        smooth = target.width() < self._image.width()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, smooth)
        painter.drawImage(target, self._image)


#: *New* draws seeds up to this, as AUTOMATIC1111 does; the box holds any seed to MAX_SEED.
RANDOM_SEED_MAX = 2**32 - 1


class SeedRow(QHBoxLayout):
    """A seed box, *Lock* (keep this seed) and *New* (draw a random one), as one form row."""

    def __init__(self) -> None:
        super().__init__()
        self.spin = SeedBox()
        self.spin.setRange(0, MAX_SEED)
        self.lock = QCheckBox("Lock")
        self.lock.setToolTip("Keep this seed; unlocked, every Generate draws a new one")
        self.dice = QToolButton()
        self.dice.setText("New")
        self.dice.setToolTip("Draw a random seed")
        self.dice.clicked.connect(self.randomise)
        self.addWidget(self.spin, 1)
        self.addWidget(self.lock)
        self.addWidget(self.dice)

    def randomise(self) -> None:
        self.spin.setValue(random.randint(0, RANDOM_SEED_MAX))
