"""The Train workspace's *Continue on another folder…* dialog: the new folder, the replay
share, the EWC lambda and the total steps for a run that goes on learning
(studio.engine.continual). The dialog only asks; the panel submits the job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
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

from studio.core import continual


@dataclass(frozen=True)
class ContinueRequest:
    folder: str
    replay: float
    ewc: float
    steps: int  # the total to reach


class ContinueDialog(QDialog):
    """Ask where and how a run at ``step`` continues; ``default_steps`` is the total the
    Steps box starts at (the run's step plus its steps setting)."""

    def __init__(
        self, run: Path, step: int, default_steps: int, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Continue on another folder")
        self._step = step
        intro = QLabel(
            f"{run.name} is at step {step:,}. It goes on learning from another folder; replay "
            "and EWC keep it from forgetting the one it learned (see docs/continual.md)."
        )
        intro.setWordWrap(True)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("a folder of new images")
        self.folder_edit.textChanged.connect(self._update)
        choose = QPushButton("Choose…")
        choose.clicked.connect(self.choose_folder)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(choose)

        self.replay_box = QDoubleSpinBox()
        self.replay_box.setRange(0.0, continual.MAX_REPLAY)
        self.replay_box.setSingleStep(0.05)
        self.replay_box.setValue(continual.DEFAULT_REPLAY)
        self.replay_box.setToolTip(continual.REPLAY_HELP)
        self.ewc_box = QDoubleSpinBox()
        self.ewc_box.setDecimals(1)
        self.ewc_box.setRange(0.0, continual.MAX_EWC)
        self.ewc_box.setSingleStep(10.0)
        self.ewc_box.setValue(continual.DEFAULT_EWC)
        self.ewc_box.setToolTip(continual.EWC_HELP)
        self.steps_box = QSpinBox()
        self.steps_box.setRange(step + 1, 10_000_000)
        self.steps_box.setValue(max(step + 1, default_steps))
        self.steps_box.setToolTip("the total steps to reach, counted from the run's start")

        form = QFormLayout()
        form.addRow("New folder", row)
        form.addRow("Replay share", self.replay_box)
        form.addRow("EWC lambda", self.ewc_box)
        form.addRow("Train to step", self.steps_box)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Continue")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.buttons)
        self._update()

    def choose_folder(self) -> None:
        start = self.folder_edit.text() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "The new folder of images", start)
        if folder:
            self.folder_edit.setText(folder)

    def request(self) -> ContinueRequest:
        return ContinueRequest(
            folder=self.folder_edit.text().strip(),
            replay=float(self.replay_box.value()),
            ewc=float(self.ewc_box.value()),
            steps=int(self.steps_box.value()),
        )

    def _update(self) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(bool(self.folder_edit.text().strip()))
