"""What the Train workspace shows of the dataset, and what its form remembers between sessions.

The header line says which folder, how many images and what resolution *Start* will use (or
that Start needs a folder). The form's memory keeps the family picked last, each family's model
settings and the training options in :class:`~studio.qt.settings.AppSettings`; saved values
are given back only where they still fit the form (same field, same type), so settings saved by
another version never break it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

NO_DATASET = "Dataset: none chosen. Start needs a folder of images: choose one in Dataset."


def dataset_header(
    folder: str, n_images: int, resolution: int, checking: bool = False
) -> tuple[str, str]:
    """The Train header's text and tooltip (the full path) for the dataset Start will use."""
    if not folder:
        return NO_DATASET, ""
    name = Path(folder).name or folder
    if checking:
        return f"Dataset: {name} · checking images…", folder
    if not n_images:
        return (
            f"Dataset: {name} · no usable images. Start needs a folder of images: choose one in "
            "Dataset.",
            folder,
        )
    plural = "s" if n_images != 1 else ""
    return f"Dataset: {name} · {n_images:,} image{plural} · {resolution} px", folder


def fitting(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The saved values whose field is still in the form with a value of the same type."""
    kept: dict[str, Any] = {}
    for name, value in saved.items():
        if name not in current:
            continue
        now = current[name]
        if isinstance(now, bool) or isinstance(value, bool):
            ok = isinstance(now, bool) and isinstance(value, bool)
        elif isinstance(now, float):
            ok = isinstance(value, int | float)
        else:
            ok = type(value) is type(now)
        if ok:
            kept[name] = value
    return kept


def plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values a settings file can hold and give back as they were (numbers, text, yes/no)."""
    return {k: v for k, v in values.items() if isinstance(v, bool | int | float | str)}
