"""Pieces of the Train workspace: the model picker, the training options, the status line."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QLabel, QVBoxLayout, QWidget

from studio.core import options
from studio.core.jobs import Progress, TrainStatus
from studio.qt.engine_jobs import FamilySpec

DEVICE_CHOICES = tuple(d for d in options.DEVICE_CHOICES if d != "mps" or sys.platform == "darwin")
#: The training settings shown under the model's own: a dataclass derived from the options
#: declared in studio.core.options (see TrainConfig for their use).
TrainingOptions = options.form_dataclass(DEVICE_CHOICES)


def _group(spec: FamilySpec) -> str:
    """The heading a family is listed under: its FamilyInfo's group title, else its kind."""
    return spec.group_title or spec.kind.title()


class ModelPicker(QWidget):
    """A combo box of every registered model, grouped under a header per kind, with the
    chosen model's one-line summary below it."""

    model_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.setPlaceholderText("Loading models…")
        self.combo.setEnabled(False)
        self.combo.currentIndexChanged.connect(self._on_index_changed)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setObjectName("hint")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.summary)
        self._specs: dict[str, FamilySpec] = {}

    def set_families(self, families: tuple[FamilySpec, ...] | list[FamilySpec]) -> None:
        """List ``families`` grouped under their ``group_title`` (FamilyInfo's), the groups
        in the order the registry first lists them (built-in first, then plug-ins)."""
        self.combo.blockSignals(True)
        self.combo.clear()
        self._specs = {spec.key: spec for spec in families}
        kinds = list(dict.fromkeys(_group(s) for s in families))
        model = self.combo.model()
        bold = QFont(self.combo.font())
        bold.setBold(True)
        for kind in kinds:
            if self.combo.count():
                self.combo.insertSeparator(self.combo.count())
            self.combo.addItem(kind)
            header = self.combo.count() - 1
            if isinstance(model, QStandardItemModel):
                item = model.item(header)
                item.setFlags(Qt.ItemFlag.NoItemFlags)  # a header, not a choice
                item.setFont(bold)
            # Registry order within a kind: it is curated (the simplest model first).
            for spec in (s for s in families if _group(s) == kind):
                self.combo.addItem(f"  {spec.display_name}", spec.key)
                self.combo.setItemData(
                    self.combo.count() - 1, spec.summary, Qt.ItemDataRole.ToolTipRole
                )
        self.combo.setEnabled(bool(families))
        self.combo.blockSignals(False)
        if not families:
            self.combo.setPlaceholderText("No models available")
            self.summary.setText("")
            return
        first = next(i for i in range(self.combo.count()) if self.combo.itemData(i))
        self.combo.setCurrentIndex(-1)
        self.combo.setCurrentIndex(first)

    def keys(self) -> list[str]:
        return list(self._specs)

    def current_key(self) -> str | None:
        data = self.combo.currentData()
        return str(data) if data else None

    def current_spec(self) -> FamilySpec | None:
        key = self.current_key()
        return self._specs.get(key) if key else None

    def spec(self, key: str) -> FamilySpec | None:
        return self._specs.get(key)

    def set_current_key(self, key: str) -> bool:
        index = self.combo.findData(key)
        if index < 0:
            return False
        self.combo.setCurrentIndex(index)
        return True

    def _on_index_changed(self, _index: int) -> None:
        spec = self.current_spec()
        self.summary.setText(spec.summary if spec else "")
        if spec is not None:
            self.model_changed.emit(spec.key)


# -- the status line -----------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``83`` -> ``1:23``; ``3723`` -> ``1:02:03``."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_status(progress: Progress, info: Mapping[str, Any] | None = None) -> str:
    """``Step 1,234 / 5,000 · 812 img/s · ETA 1:23 · CPU (8 threads) · 1.2 GB``."""
    info = info if info is not None else progress.info
    if progress.stage not in ("train", "paused"):
        # Loading and decoding the dataset: their step counts images, not training steps.
        return progress.message or f"{progress.stage.title()}…"
    parts = []
    if progress.total:
        parts.append(f"Step {progress.step:,} / {progress.total:,}")
    elif progress.step:
        parts.append(f"Step {progress.step:,}")
    if progress.stage == "paused":
        parts.append("paused")
    status = TrainStatus.read(info)
    if status.phase:
        parts.append(status.phase)
    if status.images_per_s:
        parts.append(f"{status.images_per_s:,.0f} img/s")
    if status.eta_s is not None and progress.stage != "paused":
        parts.append(f"ETA {format_duration(status.eta_s)}")
    if status.device:
        parts.append(status.device)
    if status.memory:
        # Loaded here, not at import: the engine thread has imported torch by the time a
        # report carries memory figures.
        from studio.engine.device import format_bytes

        parts.append(format_bytes(status.memory))
    if not parts and progress.message:
        return progress.message
    return " · ".join(parts)
