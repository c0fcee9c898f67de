"""Pieces of the Train workspace: the model picker, the training options, the status line."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QLabel, QVBoxLayout, QWidget

from studio.core.jobs import Progress
from studio.qt.engine_jobs import FamilySpec

KIND_TITLES = {
    "gan": "GANs",
    "vae": "Variational autoencoders",
    "flow": "Normalizing flows",
    "diffusion": "Diffusion models",
}
KIND_ORDER = ("gan", "vae", "flow", "diffusion")
DEVICE_CHOICES = (
    ("auto", "cpu", "cuda", "mps") if sys.platform == "darwin" else ("auto", "cpu", "cuda")
)


def _option(
    default: Any,
    *,
    label: str,
    help: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[Any, ...] | None = None,
    main: bool = False,
) -> Any:
    # The same metadata as studio.models.base.setting(), which we cannot import here: it
    # would load torch on the GUI thread before the window shows.
    meta = {
        "label": label,
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
        "main": main,
    }
    return field(default=default, metadata=meta)


@dataclass
class TrainingOptions:
    """The training settings shown under the model's own (see TrainConfig for their use)."""

    steps: int = _option(
        2000,
        label="Steps",
        minimum=1,
        maximum=10_000_000,
        main=True,
        help="Total training steps. Resuming a run trains on to this number.",
    )
    batch_size: int = _option(
        64,
        label="Batch size",
        minimum=1,
        maximum=4096,
        main=True,
        help="Images per step. Lower it if memory runs out.",
    )
    device: str = _option(
        "auto",
        label="Device",
        choices=DEVICE_CHOICES,
        main=True,
        help="auto picks the GPU when there is one, else the CPU",
    )
    sample_every: int = _option(
        100, label="Sample every", minimum=1, maximum=1_000_000, help="Steps between sample grids"
    )
    seed: int = _option(
        0,
        label="Seed",
        minimum=0,
        maximum=2**31 - 1,
        help="Same seed, same data order and noise: runs can be compared",
    )
    checkpoint_every: int = _option(
        500,
        label="Checkpoint every",
        minimum=1,
        maximum=10_000_000,
        help="Steps between checkpoints (also every 10 minutes)",
    )
    log_every: int = _option(
        10,
        label="Log every",
        minimum=1,
        maximum=100_000,
        help="Steps between points on the loss plot",
    )
    # Optimisation and speed: the same fields as studio.engine.runs.TrainConfig.
    lr_schedule: str = _option(
        "constant",
        label="Learning rate",
        choices=("constant", "cosine"),
        help="cosine: decay from the model's rate to a tenth of it by the last step",
    )
    warmup_steps: int = _option(
        0,
        label="Warm-up steps",
        minimum=0,
        maximum=1_000_000,
        help="Linear learning-rate warm-up; 0 keeps the model's own default",
    )
    grad_clip: float = _option(
        0.0,
        label="Gradient clip",
        minimum=0.0,
        maximum=1e6,
        help="Largest gradient norm; 0 keeps the model's own default",
    )
    accumulate: int = _option(
        1,
        label="Accumulate",
        minimum=1,
        maximum=64,
        help="Split each batch into this many micro-batches (same result, less memory). "
        "GANs train on the whole batch.",
    )
    precision: str = _option(
        "auto",
        label="Precision",
        choices=("auto", "bf16", "fp16", "fp32"),
        help="On a GPU: auto trains in bf16 where the GPU has it, else in fp16 with gradient "
        "scaling; fp32 is the slowest. The CPU always trains in fp32.",
    )
    compile: str = _option(
        "off",
        label="Compile",
        choices=("off", "auto", "on"),
        help="torch.compile the networks (auto: on a GPU). Falls back to eager if it fails; "
        "the first steps are slow while it compiles.",
    )
    channels_last: str = _option(
        "auto",
        label="Channels last",
        choices=("auto", "on", "off"),
        help="Memory layout for convolutions (auto: on a GPU)",
    )
    auto_batch: bool = _option(
        False,
        label="Find batch size",
        help="On a GPU: halve the batch size until a step fits in memory",
    )
    cpu_threads: int = _option(
        0,
        label="CPU threads",
        minimum=0,
        maximum=256,
        help="Torch threads when training on the CPU; 0 picks one per physical core",
    )


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
        """List ``families`` grouped by kind (known kinds first, in a fixed order)."""
        self.combo.blockSignals(True)
        self.combo.clear()
        self._specs = {spec.key: spec for spec in families}
        kinds = sorted(
            {s.kind for s in families},
            key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else 99, k),
        )
        model = self.combo.model()
        bold = QFont(self.combo.font())
        bold.setBold(True)
        for kind in kinds:
            if self.combo.count():
                self.combo.insertSeparator(self.combo.count())
            self.combo.addItem(KIND_TITLES.get(kind, kind.title()))
            header = self.combo.count() - 1
            if isinstance(model, QStandardItemModel):
                item = model.item(header)
                item.setFlags(Qt.ItemFlag.NoItemFlags)  # a header, not a choice
                item.setFont(bold)
            # Registry order within a kind: it is curated (the simplest model first).
            for spec in (s for s in families if s.kind == kind):
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
    rate = info.get("images_per_s")
    if rate:
        parts.append(f"{rate:,.0f} img/s")
    eta = info.get("eta_s")
    if eta is not None and progress.stage != "paused":
        parts.append(f"ETA {format_duration(eta)}")
    if info.get("device"):
        parts.append(str(info["device"]))
    memory = info.get("memory")
    if memory:
        # Loaded here, not at import: the engine thread has imported torch by the time a
        # report carries memory figures.
        from studio.engine.device import format_bytes

        parts.append(format_bytes(int(memory)))
    if not parts and progress.message:
        return progress.message
    return " · ".join(parts)
