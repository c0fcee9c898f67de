"""What the Prompt workspace remembers between sessions: its settings, model and layout.

Kept in the app's settings (:class:`~studio.qt.settings.AppSettings`) under ``prompt/``. The
settings are stored as one JSON string, so an INI file cannot turn numbers into strings.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QByteArray

from studio.qt.settings import AppSettings

PARAMS_KEY, MODEL_KEY, SPLITTER_KEY = "prompt/params", "prompt/model", "prompt/splitter"


class PromptPrefs:
    def __init__(self, settings: AppSettings) -> None:
        # AppSettings has no generic accessor; its QSettings is where every panel's choices live.
        self._s = settings

    def params(self) -> dict[str, Any]:
        try:
            saved = json.loads(str(self._s.value(PARAMS_KEY, "") or "{}"))
        except ValueError:
            return {}
        return saved if isinstance(saved, dict) else {}

    def model(self) -> str | None:
        value = self._s.value(MODEL_KEY)
        return str(value) if value else None

    def splitter_state(self) -> QByteArray | None:
        value = self._s.value(SPLITTER_KEY)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def save(self, params: dict[str, Any], model: str | None, splitter: QByteArray) -> None:
        self._s.set_value(PARAMS_KEY, json.dumps(params))
        if model:
            self._s.set_value(MODEL_KEY, model)
        self._s.set_value(SPLITTER_KEY, splitter)
