"""Studio's static files: the icon set, the theme, the Linux desktop entry, AppStream metadata.

This top-level folder is installed as the package ``studio.resources`` (``setup.py`` maps it), so
the same names work in a source checkout, an editable install, a wheel and the frozen app.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
APP_ID = "io.github.studio.Studio"


def path(name: str) -> Path:
    """The resource file ``name`` (``"theme.qss"``, ``"icons/studio.svg"``)."""
    found = HERE / name
    if not found.is_file():
        raise FileNotFoundError(f"Studio's resource file {name} is missing from {HERE}.")
    return found


def text(name: str) -> str:
    return path(name).read_text(encoding="utf-8")


def icon_paths() -> list[Path]:
    """The icon at every size, smallest first, then the scalable one."""
    return [path(f"icons/studio-{size}.png") for size in ICON_SIZES] + [path("icons/studio.svg")]
