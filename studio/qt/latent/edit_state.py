"""The latent being edited in Explore, as a plain object (no Qt) that the sliders show.

``current_z = base + mask · directions.offset(values) + Σ named_value_i · named_std_i · named_i``:
``base`` starts as the *origin* (a sample, a kept latent, an encoded image) and absorbs the
current offsets whenever the sliders under them change (other directions, a new named slider),
so the picture stays while the new sliders start at 0. ``mask`` (None: every number) keeps
the direction sliders to one layer group of a layered latent (StyleGAN's coarse, middle or
fine styles). The slider widgets show ``values`` and
``named_values`` and report a user's change back with :meth:`set_values`. The latents kept for
the tools (:class:`KeptLatents`) are here too; the tray widget shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatentItem:
    """A kept latent: its name, the latent and its image (H x W x 3 uint8)."""

    name: str
    z: np.ndarray
    image: np.ndarray


class KeptLatents:
    """The latents kept for interpolation and arithmetic, in the order kept."""

    def __init__(self) -> None:
        self._items: list[LatentItem] = []

    def add(self, item: LatentItem) -> LatentItem:
        """Keep ``item`` under a name no other kept latent has; returns what was kept."""
        taken = {i.name for i in self._items}
        name, n = item.name, 2
        while name in taken:
            name, n = f"{item.name} ({n})", n + 1
        kept = LatentItem(name, np.array(item.z, np.float32), item.image)
        self._items.append(kept)
        return kept

    def items(self) -> list[LatentItem]:
        return list(self._items)

    def at(self, index: int) -> LatentItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def clear(self) -> None:
        self._items.clear()


def layer_mask(groups: Sequence[Any], layers: int, layer_dim: int, index: int | None) -> np.ndarray:
    """1 on the numbers of layer group ``index`` (a ``LayerGroup``; None: every layer), 0
    elsewhere, over a layered latent of ``layers`` x ``layer_dim`` numbers (flat)."""
    mask = np.zeros((layers, layer_dim), np.float32)
    if index is None:
        mask[:] = 1.0
    else:
        group = groups[index]
        mask[group.start : group.stop] = 1.0
    return mask.reshape(-1)


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, np.float32)


class EditState:
    """Origin, base latent, the directions on the sliders and their values, named sliders."""

    def __init__(self) -> None:
        self.origin = self.base = _zeros(0)
        self.origin_name = ""
        self.dirs: Any = None  # the latent_base.Directions on the sliders (None: none yet)
        self.values = _zeros(0)  # direction slider positions, in standard deviations
        self.named: tuple[Any, ...] = ()  # latent_io.NamedSlider
        self.named_vecs = np.zeros((0, 0), np.float32)
        self.named_std = _zeros(0)
        self.named_values = _zeros(0)
        self.mask: np.ndarray | None = None  # the layer group the direction sliders move
        self.kept = KeptLatents()

    # -- the latent --------------------------------------------------------------------------
    def current_z(self) -> np.ndarray:
        """The latent the sliders describe now."""
        return (self.base + self.direction_offset() + self.named_offset()).astype(np.float32)

    def direction_offset(self) -> np.ndarray | float:
        if self.dirs is None or not len(self.values):
            return 0.0
        offset = self.dirs.offset(self.values)
        return offset if self.mask is None else offset * self.mask

    def set_group(self, mask: np.ndarray | None) -> None:
        """Let the direction sliders move only where ``mask`` is 1 (None: everywhere); the
        current edit is kept in the base and the sliders start at 0."""
        self.base = self.base + self.direction_offset()
        self.mask = None if mask is None else np.asarray(mask, np.float32).copy()
        self.values = _zeros(len(self.values))

    def named_offset(self) -> np.ndarray | float:
        if not len(self.named):
            return 0.0
        return (self.named_values * self.named_std) @ self.named_vecs

    def edited(self) -> bool:
        """Whether any slider is off 0."""
        return bool(np.any(self.values)) or bool(np.any(self.named_values))

    # -- changes -----------------------------------------------------------------------------
    def set_values(self, values: np.ndarray, named_values: np.ndarray | None = None) -> None:
        """The sliders moved (positions in standard deviations)."""
        self.values = np.asarray(values, np.float32).copy()
        if named_values is not None:
            self.named_values = np.asarray(named_values, np.float32).copy()

    def set_origin(self, z: np.ndarray, name: str) -> None:
        """Make ``z`` the latent the sliders start from, all sliders at 0."""
        self.origin = self.base = np.asarray(z, np.float32).copy()
        self.origin_name = name
        self.zero()

    def reset(self) -> None:
        """Back to the origin, every slider at 0."""
        self.base = self.origin.copy()
        self.zero()

    def zero(self) -> None:
        self.values = _zeros(len(self.values))
        self.named_values = _zeros(len(self.named_values))

    def set_directions(self, dirs: Any) -> None:
        """Put ``dirs`` under the sliders, at 0; the current edit is kept in the base."""
        self.base = self.base + self.direction_offset()
        self.dirs = dirs
        self.values = _zeros(0 if dirs is None else len(dirs.names))

    def set_named(self, sliders: Sequence[Any], dim: int, keep_edit: bool = True) -> None:
        """Replace the named sliders, at 0; with ``keep_edit`` their offset goes to the base."""
        if keep_edit:
            self.base = self.base + self.named_offset()  # the picture stays; sliders at 0
        self.named = tuple(sliders)
        self.named_vecs = np.array([s.direction for s in sliders], np.float32).reshape(-1, dim)
        self.named_std = np.array([s.std for s in sliders], np.float32)
        self.named_values = _zeros(len(self.named))

    def named_names(self) -> list[str]:
        return [s.name for s in self.named]
