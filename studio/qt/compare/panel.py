"""One column of the Compare workspace: a run's samples, its numbers and its controls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.core.imaging import make_grid
from studio.qt.weights import describe_weights
from studio.qt.widgets import ImageView

FD_TIP = (
    "Fréchet distance between sample and held-out features (lower is better). Biased upwards "
    "at small n: compare it only between panels with the same n, never with published FID."
)


class ComparePanel(QFrame):
    """Title, remove button, the family's sampling controls (built from the SamplingOption
    rows it declares; none for a family without options), sample grid, numbers."""

    remove_requested = Signal(object)  # self
    nearest_requested = Signal(object)  # self

    def __init__(
        self,
        run: Path,
        family: str,
        parent: QWidget | None = None,
        options: tuple[Any, ...] = (),
        kind: str = "",
    ) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.run, self.family = Path(run), family
        self.kind = kind or family.partition(".")[0]  # a label (FamilyInfo.kind), never a switch
        self.result: Any = None  # a studio.engine.compare.PanelResult once scored
        self.live = False  # the result on show came from a training run's live weights

        title = QLabel(f"<b>{self.run.name}</b><br>{family}")
        title.setToolTip(str(self.run))
        self.remove_button = QToolButton()
        self.remove_button.setText("✕")
        self.remove_button.setToolTip("Remove this run from the comparison")
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self))
        top = QHBoxLayout()
        top.addWidget(title, 1)
        top.addWidget(self.remove_button, 0, Qt.AlignmentFlag.AlignTop)

        self.sampling_row = SamplingControls(options)
        self.sampling_row.setVisible(bool(self.sampling_row.controls))

        self.view = ImageView("Press Regenerate")
        self.view.setMinimumSize(140, 140)
        self.numbers = QLabel("")
        self.numbers.setWordWrap(True)
        self.numbers.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = QLabel("")
        self.weights_label = QLabel("")  # which step's weights the samples come from
        self.weights_label.setObjectName("caption")
        self.weights_label.setWordWrap(True)
        self.nearest_button = QPushButton("Nearest training images")
        self.nearest_button.setToolTip("The samples closest to a training image, beside it")
        self.nearest_button.setEnabled(False)
        self.nearest_button.clicked.connect(lambda: self.nearest_requested.emit(self))

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.sampling_row)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.weights_label)
        layout.addWidget(self.numbers)
        layout.addWidget(self.nearest_button)

    def sampling(self) -> dict[str, Any]:
        """Per-panel sampling values for the engine (the family's declared options)."""
        return self.sampling_row.values()

    def clear_result(self) -> None:
        self.result = None
        self.live = False
        self.weights_label.clear()
        self.numbers.clear()
        self.numbers.setToolTip("")
        self.nearest_button.setEnabled(False)

    def set_status(self, text: str) -> None:
        self.status.setText(text)

    def set_live(self, live: bool) -> None:
        """Whether the result (shown next) came from the training run's current weights."""
        self.live = live

    def set_result(self, result: Any, extractor: str) -> None:
        """Show a PanelResult: its grid, which weights made it, and its numbers, each naming
        n."""
        self.result = result
        self.weights_label.setText(describe_weights(self.live, result.step))
        self.view.set_image(result.grid)
        q = result.quality
        n, ref = q["n_samples"], q["n_reference"]
        lines = [
            f"FD {q['fd']:.4g} (n={n} vs {ref} held-out)",
            f"KID {q['kid_mean']:.3g} ± {q['kid_std']:.2g} (n={n})",
            f"precision {q['precision']:.2f} · recall {q['recall']:.2f}",
            f"memorisation {q['memorisation_share']:.2f} (0.5 healthy, 1 copies)",
        ]
        if q.get("psnr") is not None:  # a run that translates, scored against its targets
            lines.insert(
                0,
                f"L1 {q['l1']:.4f} · PSNR {q['psnr']:.2f} dB · SSIM {q['ssim']:.3f} "
                f"(to {n} targets)",
            )
        if q.get("psnr_bicubic") is not None:  # super-resolution: bicubic on the same inputs
            lines.insert(
                1,
                f"Bicubic: L1 {q['l1_bicubic']:.4f} · PSNR {q['psnr_bicubic']:.2f} dB · "
                f"SSIM {q['ssim_bicubic']:.3f} (same inputs)",
            )
        if result.bits_per_dim is not None:
            lines.append(f"bits/dim {result.bits_per_dim:.3f} on {ref} held-out images")
        lines.append(f"{result.seconds_per_image * 1000:.1f} ms/image · step {result.step}")
        self.numbers.setText("\n".join(lines))
        self.numbers.setToolTip(f"{FD_TIP}\n\nFeatures: {extractor}")
        self.status.setText("")
        self.nearest_button.setEnabled(True)


class NearestDialog(QDialog):
    """Each row: a sample, then the training image nearest to it (closest first)."""

    def __init__(self, title: str, pairs: list[Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Nearest training images: {title}")
        self.view = ImageView("No samples")
        if pairs:
            tiles = np.stack([img for p in pairs for img in (p.sample, p.training_image)])
            self.view.set_image(make_grid(tiles, nrow=2))
        lines = [
            f"sample {p.sample_index}: training image {p.dataset_index}"
            f"{' (mirrored)' if p.mirrored else ''}, RMS distance {p.distance:.3f}"
            for p in pairs
        ]
        text = QLabel("Left: sample · right: its nearest training image\n" + "\n".join(lines))
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addWidget(text)
        layout.addWidget(buttons)


class SamplingControls(QWidget):
    """One control per SamplingOption (studio.models.capabilities), in a row: a combo box for
    a choice, a spin box for a number. An option whose default depends on another's value
    (steps per sampler) follows it. Options with no default and no range (a model's own
    guidance) are left out."""

    def __init__(self, options: tuple[Any, ...] = (), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.options = {o.name: o for o in options}
        self.controls: dict[str, QWidget] = {}
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for option in options:
            control = self._control(option)
            if control is None:
                continue
            control.setToolTip(option.help)
            self.controls[option.name] = control
            row.addWidget(QLabel(option.label))
            row.addWidget(control, 1 if option.type == "choice" else 0)
        for option in options:
            leader = self.controls.get(option.defaults_by)
            if option.name in self.controls and isinstance(leader, QComboBox):
                leader.currentTextChanged.connect(lambda _=None, o=option: self._follow(o))
                self._follow(option)

    def _control(self, option: Any) -> QWidget | None:
        if option.type == "choice":
            combo = QComboBox()
            combo.addItems([str(c) for c in option.choices])
            if option.default in option.choices:
                combo.setCurrentText(str(option.default))
            return combo
        if option.default is None and not option.defaults_by:
            return None  # "the model's own": nothing sensible to show before it loads
        if option.type == "int":
            spin = QSpinBox()
            low = int(option.minimum if option.minimum is not None else 0)
            spin.setRange(low, int(option.maximum if option.maximum is not None else 1_000_000))
            if option.default is not None:
                spin.setValue(int(option.default))
            return spin
        if option.type == "float":
            from studio.qt.forms import FloatSpinBox

            low = float(option.minimum if option.minimum is not None else 0.0)
            fspin = FloatSpinBox(low, float(option.maximum if option.maximum is not None else 1e6))
            fspin.setValue(float(option.default))
            return fspin
        return None

    def _follow(self, option: Any) -> None:
        value = option.default_for(self.values(only_choices=True))
        control = self.controls[option.name]
        if value is not None and isinstance(control, QSpinBox):
            control.setValue(int(value))

    def values(self, only_choices: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, control in self.controls.items():
            if isinstance(control, QComboBox):
                out[name] = control.currentText()
            elif not only_choices and hasattr(control, "value"):
                out[name] = control.value()
        return out
