"""A seed box that holds any seed the engine takes (0 .. 2^63-1).

``QSpinBox`` holds a 32-bit int, so seeds above 2,147,483,647 (AUTOMATIC1111 draws them up to
4,294,967,295, and ``studio generate --seed`` takes more) could not be restored from a PNG.
:class:`SeedBox` keeps its value as a Python int and offers the parts of ``QSpinBox`` the
panels use: ``value``/``setValue``, ``minimum``/``maximum``/``setRange``, the arrows, the
wheel and the keyboard, and ``valueChanged``.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QAbstractSpinBox, QWidget

#: The largest seed the engine takes (``studio.engine.prompt.request.MAX_SEED``).
MAX_SEED = 2**63 - 1


class SeedBox(QAbstractSpinBox):
    """A whole-number box for seeds; ``valueChanged(int)`` as a Python int (any size)."""

    valueChanged = Signal(object)  # noqa: N815 - QSpinBox's name

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._minimum, self._maximum, self._value = 0, MAX_SEED, 0
        self.lineEdit().setText("0")
        self.lineEdit().textEdited.connect(self._on_text_edited)
        self.editingFinished.connect(self._on_editing_finished)

    # -- QSpinBox's interface ------------------------------------------------------------------
    def value(self) -> int:
        return self._value

    def minimum(self) -> int:
        return self._minimum

    def maximum(self) -> int:
        return self._maximum

    def setRange(self, minimum: int, maximum: int) -> None:  # noqa: N802 - Qt naming
        self._minimum, self._maximum = int(minimum), max(int(minimum), int(maximum))
        self.setValue(self._value)

    def setValue(self, value: int) -> None:  # noqa: N802 - Qt naming
        """Set the seed, clamped to the range (as ``QSpinBox`` does)."""
        value = min(max(int(value), self._minimum), self._maximum)
        if self.lineEdit().text() != str(value):
            self.lineEdit().setText(str(value))
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    # -- QAbstractSpinBox ----------------------------------------------------------------------
    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        """Wide enough for a 10-digit seed (QAbstractSpinBox alone sizes for an empty box)."""
        hint = super().sizeHint()
        wide = self.fontMetrics().horizontalAdvance("4294967295") + 36
        return QSize(max(hint.width(), wide), hint.height())

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        self.setValue(self._value + steps)
        self.selectAll()

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:  # noqa: N802 - Qt override
        flags = QAbstractSpinBox.StepEnabledFlag.StepNone
        if self._value > self._minimum:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        if self._value < self._maximum:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        return flags

    def validate(self, text: str, pos: int) -> object:
        return self._state(text), text, pos

    def fixup(self, text: str) -> str:
        return str(self._value)

    # -- typing --------------------------------------------------------------------------------
    def _state(self, text: str) -> QValidator.State:
        stripped = text.strip()
        if not stripped:
            return QValidator.State.Intermediate
        if not stripped.isdigit() or not stripped.isascii():
            return QValidator.State.Invalid
        number = int(stripped)
        if number > self._maximum:
            return QValidator.State.Invalid
        if number < self._minimum:
            return QValidator.State.Intermediate
        return QValidator.State.Acceptable

    def _on_text_edited(self, text: str) -> None:
        """Keyboard tracking, as QSpinBox: the value follows every acceptable keystroke."""
        if self._state(text) == QValidator.State.Acceptable:
            value = int(text.strip())
            if value != self._value:
                self._value = value
                self.valueChanged.emit(value)

    def _on_editing_finished(self) -> None:
        text = self.lineEdit().text()
        if self._state(text) != QValidator.State.Acceptable:
            self.lineEdit().setText(str(self._value))
