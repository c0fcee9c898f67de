"""Settings forms built from a config dataclass and its ``setting()`` metadata.

Each dataclass field whose metadata has a ``label`` gets a widget: a combo box for
``choices``, a check box for bools, spin boxes bounded by ``minimum``/``maximum``, a line edit
for text, and for a run setting (``studio.core.schema.run_setting``: a run this one builds on)
an editable list of the runs it accepts with a Browse button; the list is filled by the
caller (``set_run_choices``), since finding runs reads files. Fields marked ``main`` come first; the rest sit in a collapsed "More settings"
section. The form reads only the metadata, never the model, so it works for any family.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from studio.core.schema import FileInput, RunRequirement
from studio.qt.wheel_guard import guard_field

# Set from the dataset, never typed in.
DATASET_FIELDS = ("resolution", "channels", "num_classes")
INT_LIMIT = 2**31 - 1
_PARTIAL_NUMBER = re.compile(r"^[+-]?(\d*\.?\d*)?([eE][+-]?\d*)?$")
# 1-2-5 steps over many decades: the ladder a learning-rate spin box walks with its arrows.
_LADDER = [m * 10.0**e for e in range(-12, 10) for m in (1, 2, 5)]


def format_number(value: float) -> str:
    """Short text for a float: ``2e-4`` for small or huge values, ``0.5`` or ``12.25`` else."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) < 1e-2 or abs(value) >= 1e5:
        mantissa, _, exponent = f"{value:.3e}".partition("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.6g}"


class FloatSpinBox(QDoubleSpinBox):
    """A spin box for floats that shows ``2e-4`` rather than ``0.000200`` and accepts it typed.

    With ``log_steps`` the arrows walk a 1-2-5 ladder (1e-4, 2e-4, 5e-4, 1e-3, ...), which is
    how learning rates are tuned; otherwise they add a step suited to the range.
    """

    def __init__(
        self,
        minimum: float,
        maximum: float,
        *,
        log_steps: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._log_steps = log_steps
        self.setDecimals(12)  # QDoubleSpinBox rounds values to this many decimals
        self.setRange(minimum, maximum)
        span = maximum - minimum
        if not log_steps and span > 0:
            self.setSingleStep(10.0 ** round(math.log10(span / 50)))

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt override
        return format_number(value)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        """Qt sizes the box for its range's ends ("0" and "0.5"), which leaves no room for a
        value between them ("0.15" showed as "0."): two more digits' width."""
        hint = super().sizeHint()
        return QSize(hint.width() + self.fontMetrics().horizontalAdvance("00"), hint.height())

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt override
        try:
            return float(text.strip())
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        stripped = text.strip()
        try:
            value = float(stripped)
        except ValueError:
            state = (
                QValidator.State.Intermediate
                if _PARTIAL_NUMBER.match(stripped)
                else QValidator.State.Invalid
            )
            return state, text, pos
        if self.minimum() <= value <= self.maximum():
            return QValidator.State.Acceptable, text, pos
        return QValidator.State.Intermediate, text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        value = self.value()
        if not self._log_steps or value <= 0:
            super().stepBy(steps)
            return
        if steps > 0:
            i = bisect.bisect_right(_LADDER, value * (1 + 1e-9)) + steps - 1
        else:
            i = bisect.bisect_left(_LADDER, value * (1 - 1e-9)) + steps
        i = min(max(i, 0), len(_LADDER) - 1)
        self.setValue(min(max(_LADDER[i], self.minimum()), self.maximum()))


class RunPicker(QWidget):
    """A run folder for a run setting: an editable list of the runs that fit (filled by the
    form's owner) and a Browse button. Its value is the folder's path ("" = none)."""

    edited = Signal()

    def __init__(self, requires: RunRequirement, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.requires = requires
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.lineEdit().setPlaceholderText(f"Choose {requires.what}…")
        self.combo.currentTextChanged.connect(lambda _text: self.edited.emit())
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._on_browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.browse)

    def path(self) -> str:
        """The chosen folder: an item's path, or the text typed in."""
        text = self.combo.currentText().strip()
        index = self.combo.findText(text)
        data = self.combo.itemData(index) if index >= 0 else None
        return str(data) if data else text

    def set_path(self, path: str) -> None:
        index = self.combo.findData(path) if path else -1
        if index >= 0:
            self.combo.setCurrentIndex(index)
        else:
            self.combo.setEditText(path)

    def set_choices(self, choices: Iterable[tuple[str, str]]) -> None:
        """The runs on offer, as (label, folder); the current value stays."""
        current = self.path()
        self.combo.blockSignals(True)
        try:
            self.combo.clear()
            for label, path in choices:
                self.combo.addItem(label, path)
                self.combo.setItemData(self.combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
            self.set_path(current)
        finally:
            self.combo.blockSignals(False)

    def _on_browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, f"Choose {self.requires.what}", self.path())
        if folder:
            self.set_path(folder)


class FilePicker(QWidget):
    """A file for a file setting (a style image, a VGG-19 weights file): the path, typed or
    chosen with Browse…. Its value is the path ("" = none)."""

    edited = Signal()

    def __init__(self, accepts: FileInput, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.accepts = accepts
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(f"Choose {accepts.what}…")
        self.edit.textChanged.connect(lambda _text: self.edited.emit())
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._on_browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.browse)

    def path(self) -> str:
        return self.edit.text().strip()

    def set_path(self, path: str) -> None:
        self.edit.setText(path)

    def _on_browse(self) -> None:
        start = str(Path(self.path()).expanduser().parent) if self.path() else ""
        chosen, _ = QFileDialog.getOpenFileName(
            self, f"Choose {self.accepts.what}", start, self.accepts.patterns
        )
        if chosen:
            self.set_path(chosen)


@dataclasses.dataclass
class _Row:
    name: str
    widget: QWidget
    default: Any


class SettingsForm(QWidget):
    """A form for ``config_cls`` (a dataclass). ``values_changed`` fires on every edit."""

    values_changed = Signal()

    def __init__(
        self,
        config_cls: type,
        *,
        hidden: Iterable[str] = DATASET_FIELDS,
        more_title: str = "More settings",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.config_cls = config_cls
        hidden = set(hidden)
        self._rows: dict[str, _Row] = {}
        main_form, more_form = QFormLayout(), QFormLayout()
        for form in (main_form, more_form):
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        fields = [
            f
            for f in dataclasses.fields(config_cls)
            if f.metadata.get("label") and f.name not in hidden
        ]
        # Main settings first, and among them the runs this one builds on (a latent diffusion's
        # autoencoder, declared by a subclass after its parent's fields): nothing else means
        # much until that is chosen. Stable: otherwise the declared order.
        fields.sort(
            key=lambda f: (
                not f.metadata.get("main", False),
                not isinstance(f.metadata.get("run"), RunRequirement),
            )
        )
        for f in fields:
            default = _default_of(f)
            widget = self._make_widget(f, default)
            label = QLabel(f.metadata["label"])
            help_text = f.metadata.get("help") or ""
            if help_text:
                label.setToolTip(help_text)
                widget.setToolTip(help_text)
            label.setBuddy(widget)
            widget.setObjectName(f"setting_{f.name}")
            target = main_form if f.metadata.get("main") else more_form
            target.addRow(label, widget)
            self._rows[f.name] = _Row(f.name, widget, default)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(main_form)
        self.more = QCollapsible(more_title, self, expandedIcon="▾", collapsedIcon="▸")
        more_widget = QWidget()
        more_form.setContentsMargins(0, 0, 0, 0)
        more_widget.setLayout(more_form)
        self.more.addWidget(more_widget)
        self.more.setVisible(more_form.rowCount() > 0)
        layout.addWidget(self.more)

    # -- public API ------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._rows)

    def widget(self, name: str) -> QWidget:
        return self._rows[name].widget

    def values(self) -> dict[str, Any]:
        """The current value of every shown field."""
        return {name: _read(row.widget) for name, row in self._rows.items()}

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Set the fields named in ``values``; unknown names are ignored."""
        changed = False
        for name, value in values.items():
            row = self._rows.get(name)
            if row is None:
                continue
            row.widget.blockSignals(True)
            try:
                _write(row.widget, value)
            finally:
                row.widget.blockSignals(False)
            changed = True
        if changed:
            self.values_changed.emit()

    def run_settings(self) -> dict[str, RunRequirement]:
        """The shown run settings (runs this one builds on) and what each accepts."""
        return {
            name: row.widget.requires
            for name, row in self._rows.items()
            if isinstance(row.widget, RunPicker)
        }

    def file_settings(self) -> dict[str, FileInput]:
        """The shown file settings and what each accepts."""
        return {
            name: row.widget.accepts
            for name, row in self._rows.items()
            if isinstance(row.widget, FilePicker)
        }

    def set_run_choices(self, name: str, choices: Iterable[tuple[str, str]]) -> None:
        """Offer ``choices`` ((label, run folder) pairs) for run setting ``name``."""
        widget = self._rows[name].widget
        if isinstance(widget, RunPicker):
            widget.set_choices(choices)

    def reset(self) -> None:
        """Back to the dataclass defaults."""
        self.set_values({name: row.default for name, row in self._rows.items()})

    # -- building --------------------------------------------------------------------------
    def _make_widget(self, f: dataclasses.Field[Any], default: Any) -> QWidget:
        meta = f.metadata
        choices = meta.get("choices")
        lo, hi = meta.get("minimum"), meta.get("maximum")
        kind = _kind_of(f, default)
        if isinstance(meta.get("run"), RunRequirement):
            widget: QWidget = RunPicker(meta["run"])
            widget.edited.connect(self._on_edited)
            _write(widget, default)
            guard_field(widget.combo)
            return widget
        if isinstance(meta.get("file"), FileInput):
            widget = FilePicker(meta["file"])
            widget.edited.connect(self._on_edited)
            _write(widget, default)
            return widget
        if choices:
            widget = QComboBox()
            for choice in choices:
                widget.addItem(str(choice), choice)
            widget.currentIndexChanged.connect(self._on_edited)
        elif kind is bool:
            widget = QCheckBox()
            widget.toggled.connect(self._on_edited)
        elif kind is int:
            widget = QSpinBox()
            widget.setRange(
                int(lo) if lo is not None else -INT_LIMIT, int(hi) if hi is not None else INT_LIMIT
            )
            widget.setGroupSeparatorShown(True)
            widget.valueChanged.connect(self._on_edited)
        elif kind is float:
            lo_f = float(lo) if lo is not None else -1e12
            hi_f = float(hi) if hi is not None else 1e12
            log_steps = lo_f > 0 and hi_f / lo_f >= 1000  # learning rates and the like
            widget = FloatSpinBox(lo_f, hi_f, log_steps=log_steps)
            widget.valueChanged.connect(self._on_edited)
        else:
            widget = QLineEdit()
            widget.textChanged.connect(self._on_edited)
        _write(widget, default)
        guard_field(widget)  # the wheel scrolls the form, not an unfocused field
        return widget

    def _on_edited(self, *_args: Any) -> None:
        self.values_changed.emit()


def _kind_of(f: dataclasses.Field[Any], default: Any) -> type:
    """The field's declared type (``lr: float = 1`` is a float), else its default's type."""
    declared = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    return _KINDS.get(str(declared).strip(), type(default))


_KINDS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _read(widget: QWidget) -> Any:
    if isinstance(widget, RunPicker | FilePicker):
        return widget.path()
    if isinstance(widget, QComboBox):
        return widget.currentData()
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, FloatSpinBox):
        return float(widget.value())
    if isinstance(widget, QSpinBox):
        return int(widget.value())
    if isinstance(widget, QLineEdit):
        return widget.text()
    raise TypeError(f"no reader for {type(widget).__name__}")


def _write(widget: QWidget, value: Any) -> None:
    if isinstance(widget, RunPicker | FilePicker):
        widget.set_path("" if value is None else str(value))
        return
    if isinstance(widget, QComboBox):
        index = widget.findData(value)
        if index < 0:  # a value saved by another version: show it rather than lose it
            widget.addItem(str(value), value)
            index = widget.count() - 1
        widget.setCurrentIndex(index)
    elif isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, FloatSpinBox):
        widget.setValue(float(value))
    elif isinstance(widget, QSpinBox):
        widget.setValue(int(value))
    elif isinstance(widget, QLineEdit):
        widget.setText("" if value is None else str(value))
