"""The generation history: every finished image, with its settings, under the Studio folder.

Layout (``root`` defaults to ``studio_home()/generations``)::

    generations/
      index.jsonl                 one line per image, oldest first (what the history lists)
      2026-11-05/00001.png        the image, with its settings in its PNG text (pngmeta)
      2026-11-05/thumbs/00001.png a thumbnail, at most 128 px

Images and thumbnails are written atomically; the index line is appended (and fsynced) only
after the image is complete, so every listed entry has its file. A torn last line (a crash
mid-append) is skipped when reading. Each index line holds the image's full metadata, so
the history lists without opening a single PNG. :func:`list_history` reads the index from its end, so it
stays fast however long the history grows.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from studio.core.paths import studio_home
from studio.engine.prompt.pngmeta import png_bytes, read_png_metadata

THUMB = 128
INDEX = "index.jsonl"
_lock = threading.Lock()  # one writer per process at a time; files are claimed with O_EXCL


def history_root() -> Path:
    return studio_home() / "generations"


@dataclass(frozen=True)
class HistoryEntry:
    """One saved image: its PNG, thumbnail, save time and full generation metadata."""

    path: Path
    thumbnail: Path | None
    time: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def read_metadata(self) -> dict[str, Any] | None:
        """The metadata as stored in the PNG itself (the index holds the same)."""
        return read_png_metadata(self.path)


def _claim(folder: Path, suffix: str = ".png") -> Path:
    """A new numbered file in ``folder``, created empty with O_EXCL so no two writers share it."""
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.stem) for p in folder.glob(f"*{suffix}") if p.stem.isdigit()]
    n = max(numbers, default=0) + 1
    while True:
        path = folder / f"{n:05d}{suffix}"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            n += 1


def save_generation(
    image: np.ndarray,
    metadata: dict[str, Any],
    *,
    root: str | os.PathLike[str] | None = None,
    now: _dt.datetime | None = None,
) -> Path:
    """Save one finished image with its metadata, list it in the index; return its path."""
    from studio.core.atomic import write_bytes

    root = Path(root) if root is not None else history_root()
    now = now or _dt.datetime.now()
    with _lock:
        path = _claim(root / now.strftime("%Y-%m-%d"))
        write_bytes(path, png_bytes(image, metadata))
        thumb = path.parent / "thumbs" / path.name
        small = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
        small.thumbnail((THUMB, THUMB), Image.LANCZOS)
        write_bytes(thumb, png_bytes(np.asarray(small), None, compress_level=1))
        line = json.dumps(
            {
                "path": path.relative_to(root).as_posix(),
                "thumbnail": thumb.relative_to(root).as_posix(),
                "time": now.isoformat(timespec="seconds"),
                "metadata": metadata,
            },
            sort_keys=True,
            default=str,
        )
        with open(root / INDEX, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return path


def _tail_lines(path: Path, count: int, block: int = 1 << 16) -> tuple[list[bytes], bool]:
    """The last ``count`` non-empty lines of ``path`` (reading backwards in blocks), and
    whether they reach the start of the file."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            start = max(0, end - block)
            fh.seek(start)
            data = fh.read(end - start) + data
            end = start
    lines = data.split(b"\n")
    if end > 0:
        lines = lines[1:]  # the first piece may be the tail of a line cut by the block
    lines = [line for line in lines if line.strip()]
    return lines[-count:], end == 0 and len(lines) <= count


def _entry(root: Path, raw: bytes) -> HistoryEntry | None:
    try:
        rec = json.loads(raw)
        path = root / rec["path"]
    except (ValueError, KeyError, TypeError):
        return None  # a torn or foreign line
    if not path.is_file():
        return None
    thumb = root / rec["thumbnail"] if rec.get("thumbnail") else None
    return HistoryEntry(
        path=path,
        thumbnail=thumb if thumb is not None and thumb.is_file() else None,
        time=str(rec.get("time", "")),
        metadata=dict(rec.get("metadata") or {}),
    )


def list_history(
    limit: int = 100, *, root: str | os.PathLike[str] | None = None
) -> list[HistoryEntry]:
    """The newest ``limit`` saved images, newest first. Entries whose file is gone (or torn
    index lines) are skipped, and older ones take their place."""
    root = Path(root) if root is not None else history_root()
    index = root / INDEX
    if limit <= 0 or not index.exists():
        return []
    count = limit + 1
    while True:
        lines, whole = _tail_lines(index, count)
        entries = [e for e in (_entry(root, raw) for raw in reversed(lines)) if e is not None]
        if len(entries) >= limit or whole:
            return entries[:limit]
        count *= 2
