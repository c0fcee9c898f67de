"""The Prompt workspace's recall: a past generation's settings put back into the request.

:class:`Recall` restores settings from the history panel's metadata or from a PNG (opened or
dropped on the workspace; its text chunks are read on the engine thread) into the
:class:`~studio.qt.prompt.state.PromptRequestState` the settings form shows, locks the seed so
Generate redoes the image, chooses the model it names, and says on the banner what could not be
restored. Everything it uses is given to its constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QLabel

from studio.qt.job_calls import JobCalls
from studio.qt.prompt import jobs
from studio.qt.prompt.model_list import ModelList
from studio.qt.prompt.state import PromptRequestState
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


class Recall:
    """Restore settings from the history or a PNG into the request being edited.

    ``announce(text, names)`` is called after settings were restored (the workspace puts
    ``text`` on the status bar and emits ``params_restored(names)``)."""

    def __init__(
        self,
        state: PromptRequestState,
        calls: JobCalls,
        models: ModelList,
        banner: Banner,
        status_label: QLabel,
        announce: Callable[[str, list[str]], None],
    ) -> None:
        self.state, self.calls, self.models = state, calls, models
        self.banner, self.status_label, self._announce = banner, status_label, announce

    def recall(self, metadata: dict[str, Any], source: str) -> list[str]:
        """Put a generation's settings back (seed locked, so Generate redoes it)."""
        names = self.state.update(metadata)
        if "seed" in metadata:
            self.state.set_seed_locked(True)
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
        elif model and not self.models.select(str(model)):
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
        self._announce(text, names)
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
            interactive=True,  # text chunks only: between training steps, never after them
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
