"""The canvas document: strokes and tools as undoable commands, the history's budget, revisions,
image replacement and listeners."""

from __future__ import annotations

import numpy as np
import pytest

from studio.core.brush import BrushMode, BrushSettings, Rect
from studio.core.canvas import CanvasDocument, CanvasError, History, scale_mask

SOFT = BrushSettings(size=12, hardness=0.4, opacity=0.8)


def make_doc(h: int = 64, w: int = 80, **kw) -> CanvasDocument:
    rng = np.random.default_rng(0)
    return CanvasDocument(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), **kw)


def stroke(doc, points, settings=SOFT, mode=BrushMode.PAINT):
    doc.begin_stroke(points[0], settings, mode)
    for p in points[1:]:
        doc.extend_stroke(p)
    return doc.end_stroke()


def test_undo_redo_restores_the_exact_mask_after_strokes_and_tools():
    doc = make_doc()
    states = [doc.mask.copy()]
    edits = [
        lambda: stroke(doc, [(5, 5, 0.3), (40, 30, 1.0), (70, 10, 0.6)]),
        lambda: stroke(doc, [(10, 50), (60, 50)], BrushSettings(size=20, hardness=0.9)),
        lambda: stroke(doc, [(30, 10), (30, 60)], SOFT, BrushMode.ERASE),
        lambda: doc.apply_rect(50, 20, 78, 40, "add", 0.7),
        lambda: doc.apply_polygon([(0, 0), (30, 2), (12, 40)], "subtract"),
        lambda: doc.invert_mask(),
        lambda: doc.flood_fill(79, 63, 0.25, tolerance=0.05),
        lambda: doc.grow_mask(2),
        lambda: doc.clear_mask(),
        lambda: doc.fill_mask(0.5),
    ]
    for edit in edits:
        assert edit() is not None
        states.append(doc.mask.copy())
    assert len(doc.history) == len(edits)
    for expected in reversed(states[:-1]):
        assert doc.undo()
        assert np.array_equal(doc.mask, expected)
    assert not doc.can_undo and not doc.undo()
    for expected in states[1:]:
        assert doc.redo()
        assert np.array_equal(doc.mask, expected)
    assert not doc.can_redo


def test_stroke_command_stores_only_the_patch():
    doc = make_doc(512, 512)
    command = stroke(doc, [(20, 20), (40, 30)], BrushSettings(size=10))
    assert command is not None and command.text == "Brush stroke"
    r = command.patch.rect
    assert (r.y1 - r.y0) < 40 and (r.x1 - r.x0) < 40
    assert command.nbytes < 512 * 512 * 4 / 20


def test_a_new_edit_clears_redo():
    doc = make_doc()
    stroke(doc, [(10, 10), (20, 20)])
    stroke(doc, [(40, 40), (50, 20)])
    doc.undo()
    assert doc.can_redo and doc.history.redo_text == "Brush stroke"
    stroke(doc, [(60, 10), (60, 50)], mode=BrushMode.ERASE)
    assert not doc.can_redo and doc.history.undo_text == "Erase"
    assert not doc.redo()


def test_undo_during_a_stroke_commits_it_then_undoes_it():
    doc = make_doc()
    before = doc.mask.copy()
    doc.begin_stroke((10, 10), SOFT)
    doc.extend_stroke((30, 30))
    assert doc.can_undo and doc.stroking
    assert doc.undo()
    assert np.array_equal(doc.mask, before) and doc.can_redo and not doc.stroking


def test_cancel_stroke_restores_and_records_nothing():
    doc = make_doc()
    doc.begin_stroke((10, 10), SOFT)
    doc.extend_stroke((30, 30))
    doc.cancel_stroke()
    assert not doc.mask.any() and not doc.can_undo


def test_memory_budget_drops_the_oldest_commands():
    h, w = 100, 100
    full = h * w * 4 * 2  # one whole-mask command keeps before and after
    doc = make_doc(h, w, history_budget=3 * full)
    doc.fill_mask(0.1)
    doc.fill_mask(0.2)
    oldest_kept = doc.mask.copy()
    for value in (0.3, 0.4, 0.5):
        doc.fill_mask(value)
    assert len(doc.history) == 3 and doc.history.nbytes <= 3 * full
    while doc.undo():
        pass
    assert np.array_equal(doc.mask, oldest_kept)  # the two oldest edits were dropped
    # The newest edit is kept even when it alone is over the budget.
    history = History(budget_bytes=10)
    tiny = make_doc(h, w)
    tiny.history = history
    tiny.fill_mask(1.0)
    assert history.can_undo


def test_revision_increments_on_every_change_and_listeners_hear_rects():
    doc = make_doc()
    heard: list[tuple[str, Rect]] = []
    doc.add_listener(lambda kind, rect: heard.append((kind, rect)))
    assert doc.revision == 0
    doc.begin_stroke((10, 10), SOFT)
    r1 = doc.revision
    assert r1 == 1 and heard[-1][0] == "mask" and heard[-1][1].contains(Rect(8, 12, 8, 12))
    doc.extend_stroke((40, 10))
    doc.end_stroke()
    r2 = doc.revision
    assert r2 > r1
    doc.invert_mask()
    assert doc.revision == r2 + 1
    doc.undo()
    doc.redo()
    assert doc.revision == r2 + 3
    doc.fill_mask(1.0)
    doc.fill_mask(1.0)  # no change: no command, no revision
    assert doc.revision == r2 + 4 and len(heard) == doc.revision


def test_image_replacement_is_undoable_and_size_checked():
    doc = make_doc()
    stroke(doc, [(10, 10), (50, 40)])
    original, mask = doc.image.copy(), doc.mask.copy()
    rev = doc.image_revision
    new = np.full_like(original, 7)
    doc.replace_image(new, text="Accept inpainting")
    assert np.array_equal(doc.image, new) and np.array_equal(doc.mask, mask)
    assert doc.image_revision == rev + 1 and doc.history.undo_text == "Accept inpainting"
    doc.undo()
    assert np.array_equal(doc.image, original)
    doc.redo()
    assert np.array_equal(doc.image, new)
    with pytest.raises(CanvasError, match="line up"):
        doc.replace_image(np.zeros((32, 40, 3), np.uint8))
    assert doc.image.shape == (64, 80, 3)
    doc.replace_image(np.zeros((32, 40, 3), np.uint8), resize_mask=True)
    assert doc.mask.shape == (32, 40) and doc.shape == (32, 40)
    doc.undo()
    assert np.array_equal(doc.mask, mask) and np.array_equal(doc.image, new)
    with pytest.raises(ValueError):
        doc.image[0, 0, 0] = 1  # shared with undo, so read-only


def test_masks_of_the_wrong_size_or_kind_are_refused():
    with pytest.raises(CanvasError):
        make_doc(mask=np.zeros((10, 10), np.float32))
    with pytest.raises(CanvasError):
        CanvasDocument(np.zeros((8, 8), np.uint8))
    doc = make_doc()
    with pytest.raises(CanvasError):
        doc.set_mask(np.zeros((63, 80), np.float32))
    with pytest.raises(CanvasError):
        doc.set_mask(np.full((64, 80), np.nan, np.float32))


def test_clean_state_follows_undo():
    doc = make_doc()
    assert doc.history.is_clean
    doc.fill_mask()
    assert not doc.history.is_clean
    doc.history.mark_clean()
    doc.invert_mask()
    doc.undo()
    assert doc.history.is_clean


def test_scale_mask_keeps_constant_regions():
    mask = np.zeros((10, 20), np.float32)
    mask[:, 10:] = 1.0
    big = scale_mask(mask, 20, 40)
    assert big.shape == (20, 40) and big[:, :19].max() == 0.0 and big[:, 21:].min() == 1.0
