"""What the window remembers between sessions, over QSettings.

Values come back from QSettings with platform quirks (an INI file returns strings, a
one-element list may come back as a plain string, an empty list as None), so every getter
normalises its value and falls back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from studio.core.options import RESOLUTIONS
from studio.core.recent import push_recent

RECENT_LIMIT = 10
DEVICES = ("auto", "cpu", "cuda")


class AppSettings:
    """Typed access to the app's settings.

    With no argument it uses ``QSettings()`` (the application's organisation and name, the
    default format and path, which tests redirect with ``QSettings.setPath``). Pass a
    QSettings, or use :meth:`at_path` for an explicit INI file.
    """

    def __init__(self, settings: QSettings | None = None) -> None:
        self._s = settings if settings is not None else QSettings()

    @classmethod
    def at_path(cls, path: str | os.PathLike[str]) -> AppSettings:
        """Settings kept in the INI file at ``path`` (created on the first write)."""
        return cls(QSettings(str(path), QSettings.Format.IniFormat))

    @property
    def file_path(self) -> Path:
        return Path(self._s.fileName())

    def sync(self) -> None:
        """Write pending changes to disk now (Qt otherwise does it later, or at exit)."""
        self._s.sync()

    # -- window ----------------------------------------------------------------------------
    def window_geometry(self) -> QByteArray | None:
        return self._bytes("window/geometry")

    def set_window_geometry(self, data: QByteArray) -> None:
        self._s.setValue("window/geometry", data)

    def window_state(self) -> QByteArray | None:
        return self._bytes("window/state")

    def set_window_state(self, data: QByteArray) -> None:
        self._s.setValue("window/state", data)

    # -- recent folders and runs -----------------------------------------------------------
    def recent_folders(self) -> list[str]:
        return self._list("recent/folders")

    def add_recent_folder(self, folder: str | os.PathLike[str]) -> list[str]:
        return self._push("recent/folders", str(folder))

    def recent_runs(self) -> list[str]:
        return self._list("recent/runs")

    def add_recent_run(self, run: str | os.PathLike[str]) -> list[str]:
        return self._push("recent/runs", str(run))

    # -- choices ---------------------------------------------------------------------------
    def last_resolution(self) -> int:
        value = self._int("dataset/resolution", RESOLUTIONS[0])
        return value if value in RESOLUTIONS else RESOLUTIONS[0]

    def set_last_resolution(self, value: int) -> None:
        self._s.setValue("dataset/resolution", int(value))

    def device_preference(self) -> str:
        value = str(self._s.value("train/device", "auto") or "auto")
        return value if value in DEVICES else "auto"

    def set_device_preference(self, value: str) -> None:
        self._s.setValue("train/device", value if value in DEVICES else "auto")

    # -- helpers ---------------------------------------------------------------------------
    # -- a panel's own keys (its layout, last values) -----------------------------------------
    def value(self, key: str, default: Any = None) -> Any:
        return self._s.value(key, default)

    def set_value(self, key: str, value: Any) -> None:
        self._s.setValue(key, value)

    def _push(self, key: str, item: str) -> list[str]:
        items = push_recent(self._list(key), item, RECENT_LIMIT)
        self._s.setValue(key, items)
        return items

    def _list(self, key: str) -> list[str]:
        value: Any = self._s.value(key)
        if value is None or value == "":
            return []
        if isinstance(value, str):
            return [value]
        return [str(v) for v in value if v][:RECENT_LIMIT]

    def _int(self, key: str, default: int) -> int:
        try:
            return int(self._s.value(key, default))
        except (TypeError, ValueError):
            return default

    def _bytes(self, key: str) -> QByteArray | None:
        value = self._s.value(key)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None
