"""The Train workspace's advice from a run's logged metrics.

The advice is the family's own (:meth:`GenerativeModel.diagnose`, reached through the
family listing's :class:`~studio.qt.engine_jobs.FamilySpec`): this file knows no family and
no metric name. It keeps the last few logged points of the run on show and asks again when
new ones arrive; the family's check is a handful of float comparisons.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PySide6.QtWidgets import QLabel, QWidget

from studio.qt.engine_jobs import known_family

HISTORY = 50  # logged points kept for the family's check


class DiagnosisLabel(QLabel):
    """Shows the family's advice on the run on show; hidden when it has none."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("warning")
        self.setWordWrap(True)
        self.setStyleSheet("QLabel { color: #e0a030; }")
        self._history: deque[dict[str, float]] = deque(maxlen=HISTORY)
        self._family = ""
        self.hide()

    @property
    def hints(self) -> list[str]:
        return [line for line in self.text().split("\n") if line]

    def reset(self, family: str) -> None:
        """Another run (of ``family``) is on show: forget the old run's points."""
        self._family = family
        self._history.clear()
        self._update()

    def add_points(self, points: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Points as the job delivers them: ``(step, {name: value})``."""
        for _step, values in points:
            self._history.append({k: float(v) for k, v in values.items() if _number(v)})
        self._update()

    def load_columns(self, columns: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """A stored run's metrics (``{name: (steps, values)}``): its last points."""
        rows: dict[int, dict[str, float]] = {}
        for name, (steps, values) in columns.items():
            for step, value in zip(steps[-HISTORY:], values[-HISTORY:]):
                rows.setdefault(int(step), {})[name] = float(value)
        self._history.clear()
        self._history.extend(rows[s] for s in sorted(rows)[-HISTORY:])
        self._update()

    def _update(self) -> None:
        spec = known_family(self._family)
        hints: list[str] = []
        if spec is not None and spec.diagnose is not None and self._history:
            try:
                hints = list(spec.diagnose(list(self._history)))
            except Exception:  # noqa: BLE001 - a plug-in's advice must not break the window
                hints = []
        self.setText("\n".join(hints))
        self.setVisible(bool(hints))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
