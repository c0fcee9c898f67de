"""The model list: Stable Diffusion models added from disk and prompt models trained here.

Listing, inspecting an added folder or file and removing all run on the engine thread
(:mod:`studio.qt.prompt.jobs`); the list shows what came back. A pickled checkpoint is never
read without the user's yes (:func:`ask_pickle_consent`), and then only in weights-only mode;
until then it is listed as "Unknown". Once a load has read it, the engine records what it is in
the library and :meth:`ModelList.refresh_entry` reads that one entry back and updates its row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from studio.qt.job_calls import JobCalls
from studio.qt.prompt import jobs
from studio.qt.widgets import Banner

ARCH_NAMES = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x",
    "sdxl": "SDXL",
    "sdxl-refiner": "SDXL refiner",
    "studio": "Trained here",
}
KIND_NAMES = {"diffusers-folder": "folder", "single-file": "file", "studio-run": "run"}
CHECKPOINT_FILTER = "Checkpoints (*.safetensors *.ckpt *.pt *.bin *.pth);;All files (*)"


def ask_pickle_consent(parent: QWidget | None, path: str, message: str) -> bool:
    """Ask before a pickled checkpoint is read (weights only). A function, so tests can
    answer it."""
    answer = QMessageBox.warning(
        parent,
        "Pickled checkpoint",
        f"{message}\n\n{Path(path).name or path} is a pickled checkpoint. Pickle files can run "
        "code when loaded; Studio reads them only in restricted weights-only mode, which "
        "refuses anything but tensors. Load it that way?\n\n(A .safetensors copy of the model "
        "needs no such question.)",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


class PickleConsents:
    """The pickled checkpoints the user agreed to load (weights-only), for this session."""

    def __init__(self) -> None:
        self.paths: set[str] = set()

    def ask(self, parent: QWidget | None, path: str, message: str) -> bool:
        if ask_pickle_consent(parent, path, message):
            self.paths.add(path)
            return True
        return False

    def allowed(self, parent: QWidget | None, entry: Any) -> bool | None:
        """``allow_pickle`` for ``entry``, asking first if it needs consent; None if refused."""
        path = str(entry.path)
        if path in self.paths:
            return True
        if not getattr(entry, "needs_consent", False):
            return False
        return True if self.ask(parent, path, "This model is stored as a pickle.") else None


def human_size(n: int | None) -> str:
    if not n:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def describe_type(entry: Any) -> str:
    arch = ARCH_NAMES.get(str(getattr(entry, "arch", "")), "Unknown")
    kind = KIND_NAMES.get(str(getattr(entry, "kind", "")), "")
    text = f"{arch} {kind}".strip()
    if getattr(entry, "inpainting", False):
        text += ", inpainting"
    if getattr(entry, "file_format", "") == "pickle":
        text += ", pickle"
    return text


def _fill_row(item: QTreeWidgetItem, entry: Any) -> None:
    columns = (
        str(entry.name),
        describe_type(entry),
        human_size(getattr(entry, "size_bytes", 0)),
        str(getattr(entry, "precision", "") or ""),
    )
    for col, text in enumerate(columns):
        item.setText(col, text)
    item.setData(0, Qt.ItemDataRole.UserRole, entry)
    item.setToolTip(0, str(entry.path))


class ModelList(QWidget):
    """Library entries with type, size and precision; Add folder…, Add file…, Remove.

    ``model_chosen(entry)`` when the selection changes, or the chosen entry is updated (None:
    nothing chosen); ``models_loaded(entries)`` after every listing; ``entry_updated(entry)``
    after one row was updated (:meth:`update_entry`).
    """

    model_chosen = Signal(object)
    models_loaded = Signal(object)
    entry_updated = Signal(object)

    def __init__(self, calls: JobCalls, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._calls = calls
        self._entries: list[Any] = []
        self._wanted: str | None = None  # an entry to select once listed (id or path)
        self.busy = False
        self.banner = Banner()
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Model", "Type", "Size", "Precision"])
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.currentItemChanged.connect(self._on_current_changed)
        self.hint = QLabel(
            "Add a Stable Diffusion model: a diffusers folder (with model_index.json) or a "
            ".safetensors checkpoint. Prompt models trained here appear by themselves."
        )
        self.hint.setObjectName("hint")
        self.hint.setWordWrap(True)
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.clicked.connect(self.choose_folder)
        self.add_file_button = QPushButton("Add file…")
        self.add_file_button.clicked.connect(self.choose_file)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Forget this model (its files stay on disk)")
        self.remove_button.clicked.connect(self.remove_current)
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip(
            "Free the memory the loaded model holds (it loads again on the next Generate). "
            "Training on the GPU does this by itself."
        )
        self.unload_button.clicked.connect(self.unload)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        buttons = QHBoxLayout()
        for b in (self.add_folder_button, self.add_file_button, self.remove_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.unload_button)
        buttons.addWidget(self.refresh_button)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.banner)
        column.addWidget(self.tree, 1)
        column.addWidget(self.hint)
        column.addLayout(buttons)
        self._update_buttons()

    # -- public ------------------------------------------------------------------------------
    @property
    def entries(self) -> list[Any]:
        return list(self._entries)

    def current(self) -> Any:
        item = self.tree.currentItem()
        return item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None

    def select(self, key: str | None) -> bool:
        """Select the entry whose id, path or name is ``key``; remembered until listed."""
        if not key:
            return False
        for i in range(self.tree.topLevelItemCount()):
            entry = self.tree.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole)
            if key in (str(entry.id), str(entry.path), str(entry.name)):
                self.tree.setCurrentItem(self.tree.topLevelItem(i))
                self._wanted = None
                return True
        self._wanted = key
        return False

    def refresh(self) -> None:
        self._run("List models", jobs.list_models())

    def refresh_entry(self, path: str) -> None:
        """After a load of the model at ``path``: if it is listed as a pickle of unknown type
        (not read yet), read its library entry back on the engine thread, where the load
        recorded what it found, and update its row. Nothing is rescanned."""
        listed = next((e for e in self._entries if str(e.path) == str(path)), None)
        unread = (getattr(listed, "arch", ""), getattr(listed, "file_format", "")) == (
            "unknown",
            "pickle",
        )
        if not unread:
            return
        self._calls.submit(
            f"Update {Path(path).name}",
            jobs.library_entry(path),
            self.update_entry,
            interactive=True,  # a short file read: between training steps, never after them
        )

    def update_entry(self, entry: Any) -> bool:
        """Show ``entry`` in place of the listed entry with its id: its row's text and, when it
        is the chosen one, ``model_chosen`` again (the modes offered follow its type). False
        when it is not listed or nothing changed."""
        if entry is None:
            return False
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            old = item.data(0, Qt.ItemDataRole.UserRole)
            if str(old.id) != str(entry.id):
                continue
            if old == entry:
                return False
            self._entries = [entry if e is old else e for e in self._entries]
            _fill_row(item, entry)
            if item is self.tree.currentItem():
                self._on_current_changed()
            self.entry_updated.emit(entry)
            return True
        return False

    def unload(self) -> None:
        """Unload the loaded model (on the engine thread, after a generation that is running)."""
        self.busy = True
        self._update_buttons()
        self.banner.clear()
        self._calls.submit(
            "Unload models",
            jobs.release_models(),
            lambda line: self.banner.show_message(line, "info"),
            self._on_failed,
            on_end=self._on_end,
        )

    def add(self, path: str | Path) -> None:
        """Inspect ``path`` on the engine thread and add it; it is selected when listed."""
        self._wanted = str(path)
        self._run(f"Add {Path(path).name}", jobs.add_model(path))

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Add a diffusers model folder (with model_index.json)"
        )
        if folder:
            self.add(folder)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Add a Stable Diffusion checkpoint", "", CHECKPOINT_FILTER
        )
        if path:
            self.add(path)

    def remove_current(self) -> None:
        entry = self.current()
        if entry is None or getattr(entry, "kind", "") == "studio-run":
            return
        self._run(f"Remove {entry.name}", jobs.remove_model(str(entry.id)))

    # -- jobs --------------------------------------------------------------------------------
    def _run(self, name: str, factory: jobs.Factory) -> None:
        self.busy = True
        self._update_buttons()
        self.banner.clear()
        # Library reads and edits are short file work: they run between training (or
        # generation) steps instead of waiting for the run to end.
        self._calls.submit(
            name, factory, self._on_listing, self._on_failed, on_end=self._on_end, interactive=True
        )

    def _on_end(self, _outcome: Any) -> None:
        self.busy = False
        self._update_buttons()

    def _on_failed(self, message: str) -> None:
        self._wanted = None
        self.banner.show_message(message)

    def _on_listing(self, listing: Any) -> None:
        if isinstance(listing, jobs.ConsentNeeded):
            # Adding a pickled file needs no unpickling: the library records that it needs
            # consent, which is asked for when it is first used to generate.
            self.banner.show_message(listing.message, "warning")
            return
        if listing.warning:
            self.banner.show_message(listing.warning, "warning")
        if listing.added is not None:
            self._wanted = str(listing.added.id)
        self.set_entries(listing.entries)

    def set_entries(self, entries: list[Any]) -> None:
        current = self.current()
        keep = self._wanted or (str(current.id) if current is not None else None)
        self._entries = list(entries)
        self.tree.blockSignals(True)
        self.tree.clear()
        for entry in self._entries:
            item = QTreeWidgetItem()
            _fill_row(item, entry)
            self.tree.addTopLevelItem(item)
        self.tree.blockSignals(False)
        if not (keep and self.select(keep)) and self.tree.topLevelItemCount():
            self.tree.setCurrentItem(self.tree.topLevelItem(0))
        self._wanted = None
        self._on_current_changed()
        self.hint.setVisible(not self._entries)
        self.models_loaded.emit(self.entries)

    def _on_current_changed(self, *_: object) -> None:
        self._update_buttons()
        self.model_chosen.emit(self.current())

    def _update_buttons(self) -> None:
        entry = self.current()
        for b in (
            self.add_folder_button,
            self.add_file_button,
            self.unload_button,
            self.refresh_button,
        ):
            b.setEnabled(not self.busy)
        removable = entry is not None and getattr(entry, "kind", "") != "studio-run"
        self.remove_button.setEnabled(not self.busy and removable)
