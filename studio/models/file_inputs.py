"""Files a family reads through the engine: the models layer never imports the engine.

A family whose settings name a file (:func:`studio.core.schema.file_setting`: a style image,
a VGG-19 weights file) asks :func:`read_file_input` for it by kind; the engine registers one
reader per kind on import (:mod:`studio.engine.file_inputs`), so what checks a file (the
image decoder's guards, the weights-only reading of a pickle) stays in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from studio.core.errors import StudioError

# (path) -> what the file holds: an image as a 3 x H x W float tensor in [0, 1], a network
FileReader = Callable[[Path], Any]
_readers: dict[str, FileReader] = {}


def set_file_reader(kind: str, reader: FileReader) -> None:
    """The engine's reader of files of ``kind`` (``studio.engine.file_inputs`` registers them)."""
    _readers[kind] = reader


def read_file_input(kind: str, path: str | Path, label: str, name: str = "NAME") -> Any:
    """The content of the file ``path`` of ``kind``, for the setting ``label`` (``name`` in
    the config): a clear error when no file is chosen or no reader is registered; the
    reader's own errors (a missing or wrong file) pass through."""
    text = str(path or "").strip()
    if not text:
        raise StudioError(f"Choose a file for '{label}' (studio train --set {name}=PATH).")
    reader = _readers.get(kind)
    if reader is None:
        raise StudioError(
            f"Cannot read the {kind} file {text}: no reader (import studio.engine first)."
        )
    return reader(Path(text).expanduser())
