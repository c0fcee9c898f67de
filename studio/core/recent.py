"""Most-recently-used lists (recent folders, recent runs), kept pure so they are easy to test."""

from __future__ import annotations

from collections.abc import Iterable


def push_recent(items: Iterable[str], new: str, limit: int = 10) -> list[str]:
    """Return ``items`` with ``new`` moved to the front, without duplicates, at most ``limit``."""
    out = [new]
    out.extend(item for item in items if item and item != new)
    return out[:limit]
