"""The canvas document: an image, its mask, and undo that stores only what changed. Pure.

Every edit becomes a command object with ``undo()``, ``redo()`` and ``text``, recorded in a
:class:`History` *after* it was applied (a brush stroke is painted live). A Qt ``QUndoStack``
can wrap these commands; its wrapper must skip the first ``redo()`` that ``push`` makes.
Listeners registered with :meth:`CanvasDocument.add_listener` hear of every change as
``fn(kind, rect)`` where ``kind`` is ``"mask"`` or ``"image"``.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from studio.core import brush
from studio.core.brush import BrushMode, BrushSettings, MaskPatch, Op, Rect
from studio.core.errors import StudioError

DEFAULT_HISTORY_BUDGET = 256 * 1024 * 1024

Listener = Callable[[str, Rect], None]


class CanvasError(StudioError):
    """An edit the canvas refuses (a size mismatch, a malformed array)."""


class Command(Protocol):
    """One undoable edit. ``nbytes`` is what it keeps in memory."""

    text: str

    def undo(self) -> None: ...
    def redo(self) -> None: ...
    @property
    def nbytes(self) -> int: ...


class MaskCommand:
    """A change to one rectangle of the mask: ``before``/``after`` hold only that patch."""

    def __init__(self, doc: CanvasDocument, patch: MaskPatch, text: str) -> None:
        self.doc, self.patch, self.text = doc, patch, text

    @property
    def nbytes(self) -> int:
        return self.patch.nbytes

    def undo(self) -> None:
        self.doc._write_mask(self.patch.rect, self.patch.before)

    def redo(self) -> None:
        self.doc._write_mask(self.patch.rect, self.patch.after)


class ImageCommand:
    """An image replaced as a whole (with the mask too when it had to be resized)."""

    def __init__(
        self,
        doc: CanvasDocument,
        before: tuple[np.ndarray, np.ndarray | None],
        after: tuple[np.ndarray, np.ndarray | None],
        text: str,
    ) -> None:
        self.doc, self.before, self.after, self.text = doc, before, after, text

    @property
    def nbytes(self) -> int:
        arrays = [a for pair in (self.before, self.after) for a in pair if a is not None]
        return int(sum(a.nbytes for a in arrays))

    def undo(self) -> None:
        self.doc._set_image(*self.before)

    def redo(self) -> None:
        self.doc._set_image(*self.after)


class History:
    """Undo and redo stacks of commands, within a memory budget.

    Past ``budget_bytes`` the oldest commands are dropped (the newest one is always kept, so
    the last edit can be undone however big it is). A new command clears the redo stack.
    """

    def __init__(self, budget_bytes: int = DEFAULT_HISTORY_BUDGET) -> None:
        self.budget_bytes = budget_bytes
        self._undo: deque[tuple[int, Command]] = deque()
        self._redo: list[tuple[int, Command]] = []
        self._ids = itertools.count(1)
        self._clean_id: int | None = 0  # 0: the state with nothing to undo
        self.nbytes = 0

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_text(self) -> str:
        return self._undo[-1][1].text if self._undo else ""

    @property
    def redo_text(self) -> str:
        return self._redo[-1][1].text if self._redo else ""

    def __len__(self) -> int:
        return len(self._undo)

    def push(self, command: Command) -> None:
        """Record a command that has already been applied."""
        for _, dropped in self._redo:
            self.nbytes -= dropped.nbytes
        self._redo.clear()
        self._undo.append((next(self._ids), command))
        self.nbytes += command.nbytes
        while self.nbytes > self.budget_bytes and len(self._undo) > 1:
            _, dropped = self._undo.popleft()
            self.nbytes -= dropped.nbytes

    def undo(self) -> bool:
        if not self._undo:
            return False
        entry = self._undo.pop()
        entry[1].undo()
        self._redo.append(entry)
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        entry = self._redo.pop()
        entry[1].redo()
        self._undo.append(entry)
        return True

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self.nbytes = 0
        self._clean_id = 0

    def mark_clean(self) -> None:
        """Remember the current state as saved."""
        self._clean_id = self._undo[-1][0] if self._undo else 0

    @property
    def is_clean(self) -> bool:
        return self._clean_id == (self._undo[-1][0] if self._undo else 0)


def scale_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float mask (pixel centres aligned, edges replicated)."""
    h, w = mask.shape

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(pos).astype(np.intp)
        return i0, np.minimum(i0 + 1, n_in - 1), (pos - i0).astype(np.float32)

    y0, y1, fy = axis(height, h)
    x0, x1, fx = axis(width, w)
    top = mask[y0][:, x0] * (1 - fx) + mask[y0][:, x1] * fx
    bottom = mask[y1][:, x0] * (1 - fx) + mask[y1][:, x1] * fx
    return np.clip(top * (1 - fy[:, None]) + bottom * fy[:, None], 0, 1).astype(np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise CanvasError(
            f"the canvas holds H x W x 3 uint8 images, not {image.dtype} {image.shape}"
        )
    return np.ascontiguousarray(image)


def _frozen(image: np.ndarray) -> np.ndarray:
    """A private read-only copy: undo shares image arrays, so nobody may write into one."""
    out = _check_image(image).copy()
    out.flags.writeable = False
    return out


def _check_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape != shape:
        raise CanvasError(f"the mask is {mask.shape[::-1]} but the image is {shape[::-1]} (w x h)")
    out = np.array(mask, dtype=np.float32)  # always a private copy
    if not np.isfinite(out).all():
        raise CanvasError("the mask holds NaN or infinite values")
    return np.clip(out, 0.0, 1.0, out=out)


class CanvasDocument:
    """An image (``H x W x 3`` uint8) and a mask (``H x W`` float32 in [0, 1]) of the same size.

    Change them only through the methods here, so every edit is undoable, heard by listeners
    and counted in :attr:`revision` (which grows on every change, undo and redo included).
    """

    def __init__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        name: str = "Untitled",
        source_path: str | os.PathLike[str] | None = None,
        metadata: dict[str, Any] | None = None,
        history_budget: int = DEFAULT_HISTORY_BUDGET,
    ) -> None:
        self._image = _frozen(image)
        shape = self._image.shape[:2]
        self._mask = np.zeros(shape, np.float32) if mask is None else _check_mask(mask, shape)
        self.name = name
        self.source_path = None if source_path is None else str(source_path)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.history = History(history_budget)
        self.revision = 0
        self.image_revision = 0  # only image changes; lets autosave reuse an encoded image
        self._listeners: list[Listener] = []
        self._stroke: brush.Stroke | None = None

    # -- reading ----------------------------------------------------------------------------
    @property
    def image(self) -> np.ndarray:
        """The image (a read-only array)."""
        return self._image

    @property
    def mask(self) -> np.ndarray:
        """The mask; treat it as read-only (edits go through the methods, for undo)."""
        return self._mask

    @property
    def shape(self) -> tuple[int, int]:
        return self._mask.shape  # type: ignore[return-value]

    @property
    def full_rect(self) -> Rect:
        return Rect(0, self.shape[0], 0, self.shape[1])

    def feathered_mask(self, radius: float) -> np.ndarray:
        return brush.feather(self._mask, radius)

    def composite(self, result: np.ndarray, feather_radius: float = 0.0) -> np.ndarray:
        """``result`` blended into the image through the feathered mask."""
        return brush.composite(self._image, result, self.feathered_mask(feather_radius))

    # -- listeners --------------------------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _changed(self, kind: str, rect: Rect) -> None:
        self.revision += 1
        if kind == "image":
            self.image_revision += 1
        for fn in list(self._listeners):
            fn(kind, rect)

    # -- undo -------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return self.history.can_undo or self._stroke is not None

    @property
    def can_redo(self) -> bool:
        return self._stroke is None and self.history.can_redo

    def undo(self) -> bool:
        self.end_stroke()  # a stroke in progress is committed first, then undone like any
        return self.history.undo()

    def redo(self) -> bool:
        self.end_stroke()
        return self.history.redo()

    # -- brush strokes ----------------------------------------------------------------------
    @property
    def stroking(self) -> bool:
        return self._stroke is not None

    def begin_stroke(
        self,
        point: Sequence[float],
        settings: BrushSettings,
        mode: BrushMode | str = BrushMode.PAINT,
    ) -> Rect | None:
        """Start a stroke at ``(x, y[, pressure])``; returns the rect it painted."""
        self.end_stroke()
        self._stroke = brush.Stroke(self._mask, settings, BrushMode(mode))
        return self._after_dab(self._stroke.begin(point))

    def extend_stroke(self, point: Sequence[float]) -> Rect | None:
        if self._stroke is None:
            raise RuntimeError("extend_stroke() without begin_stroke()")
        return self._after_dab(self._stroke.add(point))

    def end_stroke(self) -> MaskCommand | None:
        """Finish the stroke in progress (if any) and record it as one undoable command."""
        stroke, self._stroke = self._stroke, None
        if stroke is None:
            return None
        patch = stroke.end()
        if patch is None:
            return None
        text = "Erase" if stroke.mode is BrushMode.ERASE else "Brush stroke"
        command = MaskCommand(self, patch, text)
        self.history.push(command)
        return command

    def cancel_stroke(self) -> None:
        """Drop the stroke in progress, putting the mask back as it was."""
        stroke, self._stroke = self._stroke, None
        if stroke is not None and stroke.dirty is not None:
            stroke.cancel()
            self._changed("mask", stroke.dirty)

    def _after_dab(self, rect: Rect | None) -> Rect | None:
        if rect is not None:
            self._changed("mask", rect)
        return rect

    # -- whole-mask tools -------------------------------------------------------------------
    def set_mask(self, mask: np.ndarray, text: str = "Set mask") -> MaskCommand | None:
        """Replace the mask (undoable); only the rectangle that differs is stored."""
        self.end_stroke()
        new = _check_mask(mask, self.shape)
        rect = brush.changed_rect(self._mask, new)
        if rect is None:
            return None
        s = rect.slices
        command = MaskCommand(self, MaskPatch(rect, self._mask[s].copy(), new[s].copy()), text)
        command.redo()
        self.history.push(command)
        return command

    def fill_mask(self, value: float = 1.0) -> MaskCommand | None:
        return self.set_mask(brush.fill(self._mask, value), "Fill mask")

    def clear_mask(self) -> MaskCommand | None:
        return self.set_mask(brush.clear(self._mask), "Clear mask")

    def invert_mask(self) -> MaskCommand | None:
        return self.set_mask(brush.invert(self._mask), "Invert mask")

    def apply_rect(
        self, x0: float, y0: float, x1: float, y1: float, op: Op | str = Op.ADD, value: float = 1.0
    ) -> MaskCommand | None:
        new = brush.apply_rect(self._mask, x0, y0, x1, y1, op, value)
        return self.set_mask(new, f"Rectangle ({Op(op).value})")

    def apply_polygon(
        self, points: Sequence[Sequence[float]], op: Op | str = Op.ADD, *, rule: str = "nonzero"
    ) -> MaskCommand | None:
        new = brush.apply_polygon(self._mask, points, op, rule=rule)
        return self.set_mask(new, f"Lasso ({Op(op).value})")

    def flood_fill(
        self, x: int, y: int, value: float = 1.0, tolerance: float = 0.0
    ) -> MaskCommand | None:
        return self.set_mask(brush.flood_fill(self._mask, x, y, value, tolerance), "Flood fill")

    def grow_mask(self, px: int) -> MaskCommand | None:
        return self.set_mask(brush.grow(self._mask, px), "Grow mask" if px > 0 else "Shrink mask")

    # -- the image --------------------------------------------------------------------------
    def replace_image(
        self, image: np.ndarray, *, text: str = "Replace image", resize_mask: bool = False
    ) -> ImageCommand:
        """Replace the image (an accepted inpainting result, say), undoably.

        An image of another size is refused with :class:`CanvasError` unless ``resize_mask``,
        which stretches the mask to the new size (bilinear) as part of the same command.
        """
        self.end_stroke()
        new = _frozen(image)
        new_mask = None
        if new.shape[:2] != self.shape:
            if not resize_mask:
                h, w = self.shape
                raise CanvasError(
                    f"The new image is {new.shape[1]}x{new.shape[0]} but the canvas is {w}x{h}; "
                    "the mask would no longer line up. Resize the mask with it, or keep the size."
                )
            new_mask = scale_mask(self._mask, *new.shape[:2])
        before = (self._image, self._mask.copy() if new_mask is not None else None)
        command = ImageCommand(self, before, (new, new_mask), text)
        command.redo()
        self.history.push(command)
        return command

    # -- writes used by the commands -------------------------------------------------------------
    def _write_mask(self, rect: Rect, values: np.ndarray) -> None:
        self._mask[rect.slices] = values
        self._changed("mask", rect)

    def _set_image(self, image: np.ndarray, mask: np.ndarray | None) -> None:
        self._image = image
        if mask is not None:
            self._mask = mask.copy()
        self._changed("image", self.full_rect)
