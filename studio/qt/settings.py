"""What the window remembers between sessions, over QSettings.

Values come back from QSettings with platform quirks (an INI file returns strings, a
one-element list may come back as a plain string, an empty list as None), so every getter
normalises its value and falls back to a default.
"""

from __future__ import annotations

import json
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

    def recent_projects(self) -> list[str]:
        return self._list("recent/projects")

    def add_recent_project(self, folder: str | os.PathLike[str]) -> list[str]:
        return self._push("recent/projects", str(folder))

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

    # -- what each workspace showed last (restored at the next start) ------------------------
    def last_folder(self) -> str:
        """The dataset folder last scanned with usable images ("" when none)."""
        return str(self._s.value("dataset/folder", "") or "")

    def set_last_folder(self, folder: str | os.PathLike[str]) -> None:
        self._s.setValue("dataset/folder", str(folder))

    def last_flip(self) -> bool:
        return self._bool("dataset/flip", True)

    def set_last_flip(self, value: bool) -> None:
        self._s.setValue("dataset/flip", bool(value))

    def workspace(self) -> int:
        return self._int("window/workspace", 0)

    def set_workspace(self, index: int) -> None:
        self._s.setValue("window/workspace", int(index))

    def splitter_state(self, key: str) -> QByteArray | None:
        return self._bytes(f"splitters/{key}")

    def set_splitter_state(self, key: str, data: QByteArray) -> None:
        self._s.setValue(f"splitters/{key}", data)

    def last_family(self) -> str:
        return str(self._s.value("train/family", "") or "")

    def set_last_family(self, key: str) -> None:
        self._s.setValue("train/family", key)

    def family_settings(self, key: str) -> dict[str, Any]:
        """The model settings last used with family ``key`` (``{}`` when none or unreadable)."""
        return self._json_dict(f"train/model/{key.replace('/', '_')}")

    def set_family_settings(self, key: str, values: dict[str, Any]) -> None:
        self._s.setValue(f"train/model/{key.replace('/', '_')}", json.dumps(values, default=str))

    def train_options(self) -> dict[str, Any]:
        return self._json_dict("train/options")

    def set_train_options(self, values: dict[str, Any]) -> None:
        self._s.setValue("train/options", json.dumps(values, default=str))

    def last_canvas_image(self) -> str:
        return str(self._s.value("canvas/image", "") or "")

    def set_last_canvas_image(self, path: str | os.PathLike[str]) -> None:
        self._s.setValue("canvas/image", str(path))

    def compare_runs(self) -> list[str]:
        return self._list("compare/runs")

    def set_compare_runs(self, runs: list[str]) -> None:
        self._s.setValue("compare/runs", [str(r) for r in runs])

    def explore_run(self) -> str:
        return str(self._s.value("explore/run", "") or "")

    def set_explore_run(self, run: str | os.PathLike[str]) -> None:
        self._s.setValue("explore/run", str(run))

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

    def _bool(self, key: str, default: bool) -> bool:
        value = self._s.value(key, default)
        if isinstance(value, str):  # an INI file gives "true" / "false"
            return {"true": True, "false": False}.get(value.strip().lower(), default)
        return bool(value) if isinstance(value, bool | int) else default

    def _json_dict(self, key: str) -> dict[str, Any]:
        try:
            value = json.loads(str(self._s.value(key, "") or "{}"))
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _bytes(self, key: str) -> QByteArray | None:
        value = self._s.value(key)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None
