"""Settings that several families share, each defined once.

A family's ``Config`` lists its fields in the order its settings form and ``docs/models.md``
show them, and a dataclass puts a base class's fields first, so a shared setting cannot always
live in a base class. These helpers return the field instead: the family decides where it
stands and its default, the label and range come from here. ``override`` changes an inherited
setting's default (and, rarely, its text) without writing the whole field again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from studio.models.base import ModelConfig, setting

_META = ("label", "help", "minimum", "maximum", "choices", "main")


def learning_rate(default: float, *, label: str = "Learning rate") -> Any:
    """An optimizer's base learning rate (the trainer's schedule scales it)."""
    return setting(default, label=label, minimum=1e-6, maximum=1e-2, main=True)


def network_width(default: int, *, help: str, maximum: int = 256, main: bool = False) -> Any:
    """Channels of a family's networks; ``help`` says which layer's."""
    return setting(default, label="Network width", help=help, minimum=8, maximum=maximum, main=main)


def lr_warmup(default: int, *, help: str) -> Any:
    """Steps of the family's linear learning-rate warm-up."""
    return setting(default, label="Warm-up steps", help=help, minimum=0, maximum=10000)


def override(base: type[ModelConfig], name: str, default: Any, **changes: Any) -> Any:
    """Setting ``name`` of ``base`` with a new default; ``changes`` replace its label, help,
    range, choices or ``main`` flag. The field keeps its place in the form (a dataclass keeps
    a redefined field where the base class had it)."""
    fields = {f.name: f for f in dataclasses.fields(base)}
    if name not in fields:
        raise AttributeError(f"{base.__name__} has no setting {name!r}")
    unknown = set(changes) - set(_META)
    if unknown:
        raise TypeError(f"override() cannot change {', '.join(sorted(unknown))}")
    meta = {key: fields[name].metadata.get(key) for key in _META}
    meta.update(changes)
    meta["help"] = meta["help"] or ""
    meta["main"] = bool(meta["main"])
    return setting(default, **meta)
