"""Where Studio keeps its files: runs, the demo dataset, caches. ``STUDIO_HOME`` overrides."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def studio_home() -> Path:
    env = os.environ.get("STUDIO_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
        return base / "Studio"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Studio"
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "studio"


def runs_dir() -> Path:
    return studio_home() / "runs"


def demo_dir() -> Path:
    return studio_home() / "demo-shapes"


def cache_dir() -> Path:
    return studio_home() / "cache"
