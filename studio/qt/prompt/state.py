"""The request being edited in the Prompt workspace, as a plain object (no Qt).

:class:`PromptRequestState` holds what Generate will ask for: the model, the
:class:`~studio.engine.prompt.request.GenerateRequest` fields the settings form shows (prompt,
negative prompt, sampler settings, seed, size, mode options) and whether the seed is locked.
The form binds to it (it shows the state and writes every edit back), a recall from the
history or a PNG sets it, and the generation reads it. The canvas image and mask are not held
here: they are copied from the canvas when a generation starts and passed to
:meth:`PromptRequestState.to_request`.

:meth:`PromptRequestState.update` takes what the form's widgets take and nothing else (the
ranges in :data:`LIMITS` are the form's), so a value the form could not show is refused, never
clamped: a clamped seed or size would make another image.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from studio.engine.prompt.request import MEMORY_MODES, MODES, SCHEDULERS

if TYPE_CHECKING:
    from studio.engine.prompt.request import GenerateRequest

__all__ = ["DEFAULTS", "LIMITS", "PromptRequestState", "RANDOM_SEED_MAX"]

DEFAULTS: dict[str, Any] = {
    "mode": "txt2img",
    "prompt": "",
    "negative_prompt": "",
    "steps": 30,
    "guidance": 7.5,
    "scheduler": "dpmpp_2m",
    "seed": 0,
    "width": 512,
    "height": 512,
    "batch_count": 1,
    "strength": 0.75,
    "mask_blur": 4,
    "only_masked": False,
    "only_masked_padding": 32,
    "memory": "auto",
    "compile": False,
}
#: The whole-number settings and the ranges the form takes (inclusive).
LIMITS: dict[str, tuple[int, int]] = {
    "steps": (1, 500),
    "seed": (0, 2**63 - 1),
    "width": (8, 4096),
    "height": (8, 4096),
    "batch_count": (1, 16),
    "mask_blur": (0, 64),
    "only_masked_padding": (0, 512),
}
#: The decimal settings: their range and the decimals the form shows.
DECIMALS: dict[str, tuple[float, float, int]] = {
    "guidance": (0.0, 30.0, 1),
    "strength": (0.0, 1.0, 2),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "mode": tuple(MODES),
    "scheduler": tuple(SCHEDULERS),
    "memory": tuple(MEMORY_MODES),
}
#: A fresh seed is drawn below this (it fits every tool's 32-bit seed field).
RANDOM_SEED_MAX = 2**32 - 1


def _checked(key: str, value: Any) -> Any:
    """``value`` as the form would hold it; ValueError/TypeError when it cannot."""
    if key in CHOICES:
        if str(value) not in CHOICES[key]:
            raise ValueError(key)
        return str(value)
    if key in LIMITS:
        lo, hi = LIMITS[key]
        number = int(value)
        if not lo <= number <= hi:
            raise ValueError(key)  # never clamp: a clamped seed or size makes another image
        return number
    if key in DECIMALS:
        lo, hi, places = DECIMALS[key]
        return round(min(max(float(value), lo), hi), places)
    if key == "prompt":
        return str(value)
    if key == "negative_prompt":
        return str(value or "")
    if key in ("only_masked", "compile"):
        return bool(value)
    raise KeyError(key)


class PromptRequestState:
    """The request being edited: ``model``, the request fields and ``seed_locked``.

    Listeners added with :meth:`on_changed` are called (with no arguments) after anything
    changed."""

    def __init__(self, values: Mapping[str, Any] | None = None, model: str = "") -> None:
        self._values: dict[str, Any] = dict(DEFAULTS)
        self._model = str(model)
        self._seed_locked = False
        self._listeners: list[Callable[[], None]] = []
        if values:
            self.update(values)

    # -- listening ---------------------------------------------------------------------------
    def on_changed(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in list(self._listeners):
            callback()

    # -- reading -----------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self._model

    @property
    def seed_locked(self) -> bool:
        return self._seed_locked

    @property
    def mode(self) -> str:
        return str(self._values["mode"])

    def values(self) -> dict[str, Any]:
        """A copy of the request's fields other than the model, the image and the mask."""
        return dict(self._values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    # -- writing -----------------------------------------------------------------------------
    def update(self, values: Mapping[str, Any]) -> list[str]:
        """Set every known field in ``values`` that the form can hold; return their names.

        Unknown keys and values of the wrong type or out of range are skipped, so an old
        settings file or a PNG from another version restores what it can."""
        done: list[str] = []
        changed = False
        for key, value in values.items():
            try:
                checked = _checked(key, value)
            except (KeyError, TypeError, ValueError, OverflowError):
                continue
            done.append(key)
            if self._values[key] != checked or type(self._values[key]) is not type(checked):
                self._values[key] = checked
                changed = True
        if changed:
            self._changed()
        return done

    def set_model(self, model: str) -> None:
        if str(model) != self._model:
            self._model = str(model)
            self._changed()

    def set_seed_locked(self, locked: bool) -> None:
        if bool(locked) != self._seed_locked:
            self._seed_locked = bool(locked)
            self._changed()

    def seed_for_next_run(self) -> int:
        """The seed Generate uses: a fresh one unless the seed is locked."""
        if not self._seed_locked:
            self.update({"seed": random.randint(0, RANDOM_SEED_MAX)})
        return int(self._values["seed"])

    # -- requests ----------------------------------------------------------------------------
    def to_request(
        self, *, image: Any = None, mask: Any = None, device: str = "auto"
    ) -> GenerateRequest:
        """The :class:`GenerateRequest` this state describes (checked on construction)."""
        from studio.engine.prompt.request import GenerateRequest

        return GenerateRequest(
            model=self._model, **self._values, image=image, mask=mask, device=device
        )

    def load_request(self, request: GenerateRequest) -> list[str]:
        """Take a request's model and fields (what the form can hold); return the names set."""
        self.set_model(str(request.model))
        return self.update({key: getattr(request, key) for key in DEFAULTS})

    @classmethod
    def from_request(cls, request: GenerateRequest) -> PromptRequestState:
        state = cls()
        state.load_request(request)
        return state
