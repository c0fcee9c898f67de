"""The Prompt workspace's recall: a past generation's settings put back into the form.

:class:`RecallMixin` is the part of :class:`~studio.qt.prompt.workspace.PromptWorkspace` that
restores settings from the history panel's metadata or from a PNG (opened or dropped on the
workspace; its text chunks are read on the engine thread), locks the seed so Generate redoes
the image, and says on the banner what could not be restored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import SignalInstance
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QLabel

from studio.qt.job_calls import JobCalls
from studio.qt.prompt import jobs
from studio.qt.prompt.model_list import ModelList
from studio.qt.prompt.params import ParamsForm
from studio.qt.widgets import Banner


def dropped_png(event: QDragEnterEvent | QDropEvent) -> str | None:
    """The local PNG file an event carries (the first), or None."""
    mime = event.mimeData()
    if not mime.hasUrls():
        return None
    for url in mime.urls():
        if url.isLocalFile() and url.toLocalFile().lower().endswith(".png"):
            return url.toLocalFile()
    return None


class RecallMixin:
    """Restore settings from the history or a PNG (a mixin of PromptWorkspace)."""

    # Set up by PromptWorkspace.__init__ and its layout.
    calls: JobCalls
    model_list: ModelList
    params: ParamsForm
    banner: Banner
    status_label: QLabel
    status_message: SignalInstance
    params_restored: SignalInstance

    def recall(self, metadata: dict[str, Any], source: str) -> list[str]:
        """Put a generation's settings back (seed locked, so Generate redoes it)."""
        names = self.params.set_values(metadata)
        if "seed" in metadata:
            self.params.lock_seed.setChecked(True)
        model = metadata.get("model")
        text = f"Restored {len(names)} settings from {source}."
        skipped = [
            k for k in ("seed", "width", "height", "steps") if k in metadata and k not in names
        ]
        unrestored = [str(line) for line in metadata.get("unrestored") or ()]
        warnings = []
        if skipped:
            warnings.append(
                f"Settings restored from {source}, except {', '.join(skipped)}: out of the range "
                "this workspace takes, so the same image cannot be made here."
            )
        elif model and not self.model_list.select(str(model)):
            name = metadata.get("model_name") or Path(str(model)).name
            warnings.append(
                f"Settings restored from {source}, but its model {name} is not in the list: "
                "add it (Add folder… / Add file…) to generate the same image."
            )
        if unrestored:
            warnings.append(
                f"Not restored (this studio has no such setting): {'; '.join(unrestored)}."
            )
        if warnings:
            self.banner.show_message(" ".join(warnings), "warning")
        else:
            self.banner.clear()
        self.status_label.setText(text)
        self.status_message.emit(text)
        self.params_restored.emit(names)
        return names

    def open_png(self, path: str | Path) -> None:
        """Read the settings a PNG carries (on the engine thread) and restore them."""
        name = Path(path).name
        self.status_label.setText(f"Reading {name}…")
        self.calls.submit(
            f"Read {name}",
            jobs.read_png_params(path),
            lambda md: self._on_png_read(md, name),
            lambda m: self.banner.show_message(m),
        )

    def _on_png_read(self, metadata: dict[str, Any] | None, name: str) -> None:
        if not metadata:
            text = (
                f"{name} carries no generation settings. Only PNGs saved by Studio (or by "
                "tools that write a 'parameters' text) can restore settings."
            )
            self.banner.show_message(text, "info")
            self.status_label.setText(text)
            return
        self.recall(metadata, name)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if dropped_png(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        path = dropped_png(event)
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_png(path)
