"""The explorer's top bar: which run is open, how its latent works, and how to pick another."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.qt.settings import AppSettings


class RunHeader(QWidget):
    """Run name and description on the left; Open run…, Recent runs ▾ and Reload on the right.

    ``run_chosen(path)`` when the user picks a run from the menu (Open run… is left to the
    workspace, which owns the file dialog).
    """

    run_chosen = Signal(str)
    open_requested = Signal()
    reload_requested = Signal()

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self.title = QLabel("No run open")
        self.title.setObjectName("headline")
        self.subtitle = QLabel("Open a GAN, VAE, flow or diffusion run to explore its latent.")
        self.subtitle.setObjectName("caption")
        self.subtitle.setWordWrap(True)
        text = QVBoxLayout()
        text.setSpacing(2)
        text.addWidget(self.title)
        text.addWidget(self.subtitle)

        self.open_button = QPushButton("Open run…")
        self.open_button.clicked.connect(self.open_requested)
        self.recent_button = QToolButton()
        self.recent_button.setText("Recent runs ▾")
        self.recent_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_menu = QMenu(self.recent_button)
        self.recent_menu.aboutToShow.connect(self.fill_recent_menu)
        self.recent_button.setMenu(self.recent_menu)
        self.reload_button = QPushButton("Reload")
        self.reload_button.setToolTip("Load the run's newest weights (after more training)")
        self.reload_button.clicked.connect(self.reload_requested)
        self.reload_button.setEnabled(False)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(text, 1)
        layout.addWidget(self.open_button)
        layout.addWidget(self.recent_button)
        layout.addWidget(self.reload_button)

    def fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        runs = self._settings.recent_runs()
        if not runs:
            self.recent_menu.addAction("No recent runs").setEnabled(False)
        from studio.qt.run_names import run_labels

        labels = run_labels()
        labels.refresh(runs)  # "name — family, dataset, step N", read on a worker
        for run in runs:
            action = self.recent_menu.addAction(labels.text(run))
            action.setToolTip(run)
            action.triggered.connect(lambda _=False, r=run: self.run_chosen.emit(r))

    def show_run(self, name: str, description: str) -> None:
        self.title.setText(name)
        self.subtitle.setText(description)
