"""Pure brush maths: dabs, strokes, shape tools, feathering and compositing."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studio.core import brush
from studio.core.brush import BrushMode, BrushSettings, Rect, Stroke


def blank(h: int = 64, w: int = 64) -> np.ndarray:
    return np.zeros((h, w), np.float32)


def paint(mask, points, mode=BrushMode.PAINT, **kw) -> brush.MaskPatch | None:
    stroke = Stroke(mask, BrushSettings(**kw), mode)
    stroke.begin(points[0])
    for p in points[1:]:
        stroke.add(p)
    return stroke.end()


# -- the dab --------------------------------------------------------------------------------


@pytest.mark.parametrize("hardness", [0.0, 0.3, 0.7, 1.0])
def test_dab_profile_falls_monotonically_from_the_centre(hardness):
    k = brush.dab_profile(10.0, hardness)
    assert k.shape == (21, 21) and k.dtype == np.float32
    assert k[10, 10] == 1.0 and k.min() >= 0.0 and k.max() <= 1.0
    row = k[10, 10:]
    assert np.all(np.diff(row) <= 0)  # never rises going outwards
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1])  # round


def test_hard_dab_has_a_one_pixel_edge_and_soft_dab_fades():
    hard = brush.dab_profile(10.0, 1.0)
    yy, xx = np.mgrid[-10:11, -10:11]
    dist = np.hypot(yy, xx)
    assert np.all(hard[dist <= 9.5] == 1.0)
    assert np.all(hard[dist >= 10.5] == 0.0)
    partial = (hard > 0) & (hard < 1)
    assert partial.any() and np.all((dist[partial] > 9.5) & (dist[partial] < 10.5))
    soft = brush.dab_profile(10.0, 0.2)
    assert np.all(soft[dist <= 2.0] == 1.0)
    assert 0.2 < soft[10, 16] < 0.8  # halfway out is halfway faded
    assert np.all(soft[dist >= 10.0] == 0.0)


def test_settings_reject_nonsense():
    with pytest.raises(ValueError):
        BrushSettings(size=0)
    with pytest.raises(ValueError):
        BrushSettings(opacity=float("nan"))
    with pytest.raises(ValueError):
        BrushSettings(hardness=1.5)


# -- strokes ------------------------------------------------------------------------------


def test_pressure_scales_size_and_opacity():
    light, firm = blank(), blank()
    paint(light, [(32, 32, 0.25)], size=40, hardness=1.0)
    paint(firm, [(32, 32, 1.0)], size=40, hardness=1.0)
    assert (light > 0).sum() < (firm > 0).sum() / 8  # a quarter of the diameter
    faint = blank()
    paint(faint, [(32, 32, 0.5)], size=20, hardness=1.0, pressure_size=False, pressure_opacity=True)
    assert faint.max() == pytest.approx(0.5)
    ignored = blank()
    paint(ignored, [(32, 32, 0.1)], size=20, hardness=1.0, pressure_size=False)
    assert ignored.max() == 1.0 and (ignored > 0).sum() == (faint > 0).sum()


def test_a_fast_stroke_leaves_no_gaps():
    mask = blank(64, 512)
    paint(mask, [(5, 32), (505, 32)], size=8, hardness=1.0)  # one mouse event, 500 px apart
    assert np.all(mask[32, 5:505] == 1.0)
    assert np.all(mask[29:35, 6:504] > 0.99)


def test_overlapping_dabs_in_one_stroke_do_not_build_up():
    mask = blank()
    # Back and forth over the same spot: the dabs overlap many times.
    points = [(20 + (i % 2) * 20, 32) for i in range(12)]
    paint(mask, points, size=24, hardness=0.5, opacity=0.4, spacing=0.05)
    assert mask.max() == pytest.approx(0.4, abs=1e-6)
    second = mask.copy()
    paint(second, points, size=24, hardness=0.5, opacity=0.4)  # a new stroke does build up
    assert second.max() == pytest.approx(0.4 + 0.6 * 0.4, abs=1e-6)


def test_eraser_removes_and_patch_covers_the_change():
    mask = np.ones((64, 64), np.float32)
    before = mask.copy()
    patch = paint(mask, [(10, 10), (50, 10)], BrushMode.ERASE, size=10, hardness=1.0)
    assert mask[10, 10:51].max() == 0.0 and mask[40:, :].min() == 1.0
    assert patch is not None
    changed = brush.changed_rect(before, mask)
    assert changed is not None and patch.rect.contains(changed)
    assert np.array_equal(patch.before, before[patch.rect.slices])
    assert np.array_equal(patch.after, mask[patch.rect.slices])


def test_stroke_touches_only_its_dabs_and_cancel_restores():
    rng = np.random.default_rng(0)
    mask = rng.random((128, 128), dtype=np.float32)
    before = mask.copy()
    stroke = Stroke(mask, BrushSettings(size=10, hardness=0.5))
    r = stroke.begin((20, 20))
    assert r is not None and r.y1 - r.y0 <= 12
    stroke.add((100, 100))
    assert np.array_equal(mask[110:, :], before[110:, :])  # far from the stroke: untouched
    stroke.cancel()
    assert np.array_equal(mask, before)


def test_stroke_off_the_canvas_paints_nothing():
    mask = blank()
    assert paint(mask, [(-100, -100), (-50, -200)], size=10) is None
    assert not mask.any()


def test_stroke_speed_512_size_64():
    mask = blank(512, 512)
    stroke = Stroke(mask, BrushSettings(size=64, hardness=0.5))
    stroke.begin((10, 10))
    start = time.perf_counter()
    for i in range(1, 100):
        stroke.add((10 + 4.9 * i, 10 + 3 * i + 20 * np.sin(i / 5), 0.5 + 0.5 * np.cos(i)))
    per_segment = (time.perf_counter() - start) / 99
    stroke.end()
    assert per_segment < 0.020, f"{per_segment * 1000:.2f} ms per segment"


# -- tools --------------------------------------------------------------------------------


def test_fill_clear_invert():
    mask = blank(8, 8)
    assert np.all(brush.fill(mask) == 1.0) and np.all(brush.fill(mask, 0.25) == 0.25)
    assert not brush.clear(brush.fill(mask)).any()
    m = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    assert np.allclose(brush.invert(m), 1 - m) and np.allclose(brush.invert(brush.invert(m)), m)
    assert brush.fill(mask).dtype == np.float32 and not mask.any()  # input untouched


def test_rect_mask_and_ops():
    r = brush.rect_mask((10, 12), 2, 3, 7, 8)
    expect = np.zeros((10, 12), np.float32)
    expect[3:8, 2:7] = 1
    assert np.array_equal(r, expect)
    assert np.array_equal(brush.rect_mask((10, 12), 7, 8, 2, 3), expect)  # corners either way
    half = brush.rect_mask((4, 4), 1.5, 0, 3, 4)
    assert half[0, 1] == 0.5 and half[0, 2] == 1.0 and half[0, 3] == 0.0
    full = brush.fill(blank(10, 12))
    cut = brush.apply_rect(full, 2, 3, 7, 8, "subtract")
    assert np.array_equal(cut, 1 - expect)
    assert np.array_equal(brush.apply_rect(cut, 0, 0, 12, 10, "intersect", 1.0), cut)
    assert np.array_equal(brush.apply_rect(blank(10, 12), 2, 3, 7, 8, "add"), expect)


@pytest.mark.parametrize("rule", ["nonzero", "evenodd"])
@pytest.mark.parametrize("antialias", [True, False])
def test_square_lasso_equals_rect(rule, antialias):
    square = [(4, 5), (20, 5), (20, 17), (4, 17)]
    poly = brush.polygon_mask((24, 30), square, rule=rule, antialias=antialias)
    assert np.array_equal(poly, brush.rect_mask((24, 30), 4, 5, 20, 17))


def test_lasso_area_rules_and_clipping():
    tri = brush.polygon_mask((64, 64), [(10.3, 10.1), (55.2, 12.7), (30.6, 50.4)])
    area = 0.5 * abs((55.2 - 10.3) * (50.4 - 10.1) - (30.6 - 10.3) * (12.7 - 10.1))
    assert tri.sum() == pytest.approx(area, rel=0.01)
    assert ((tri > 0) & (tri < 1)).any()  # anti-aliased edges
    # A star drawn in one go: even-odd leaves the centre empty, nonzero fills it.
    star = [(32 + 28 * np.cos(a), 32 + 28 * np.sin(a)) for a in np.arange(5) * 4 * np.pi / 5]
    nz = brush.polygon_mask((64, 64), star, rule="nonzero")
    eo = brush.polygon_mask((64, 64), star, rule="evenodd")
    assert nz[32, 32] == 1.0 and eo[32, 32] == 0.0 and nz.sum() > eo.sum()
    big = brush.polygon_mask((16, 16), [(-50, -50), (80, -50), (80, 80), (-50, 80)])
    assert np.all(big == 1.0)
    assert not brush.polygon_mask((16, 16), [(1, 1), (5, 5)]).any()  # not a polygon


def test_flood_fill_stays_inside_the_region():
    mask = blank(20, 20)
    mask[:, 10] = 1.0  # a wall
    out = brush.flood_fill(mask, 3, 3, 0.5)
    assert np.all(out[:, :10] == 0.5) and np.all(out[:, 10] == 1.0) and not out[:, 11:].any()
    assert not mask[:, :10].any()


def test_grow_and_shrink():
    mask = blank(21, 21)
    mask[10, 10] = 1.0
    grown = brush.grow(mask, 4)
    assert grown[10, 14] == 1.0 and grown[10, 15] == 0.0 and grown[14, 14] == 0.0
    assert np.array_equal(brush.grow(grown, -4), mask)


# -- feather and composite -----------------------------------------------------------------


def test_feather_zero_is_identity_and_blur_keeps_mass():
    mask = blank(64, 64)
    mask[20:40, 24:44] = 1.0
    same = brush.feather(mask, 0)
    assert np.array_equal(same, mask) and same is not mask
    soft = brush.feather(mask, 6)
    assert soft.sum() == pytest.approx(mask.sum(), rel=0.01)
    assert 0 < soft[20, 30] < 1 and soft[30, 34] == pytest.approx(1.0)
    assert not soft[:14, :].any() and not soft[:, 51:].any()  # reach is exactly the radius


def test_composite_is_exact_outside_and_inside():
    rng = np.random.default_rng(1)
    original = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    result = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = blank(32, 32)
    mask[8:20, 8:20] = 1.0
    m = brush.feather(mask, 4)
    out = brush.composite(original, result, m)
    assert np.array_equal(out[m == 0], original[m == 0])
    assert np.array_equal(out[m == 1], result[m == 1])
    with pytest.raises(ValueError):
        brush.composite(original, result[:16], m)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    radius=st.floats(0, 6),
    box=st.tuples(st.integers(0, 23), st.integers(0, 23), st.integers(1, 8), st.integers(1, 8)),
    level=st.floats(0, 1),
)
def test_composite_never_changes_pixels_outside_the_mask_support(seed, radius, box, level):
    rng = np.random.default_rng(seed)
    original = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    result = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    y, x, h, w = box
    mask = blank(24, 24)
    mask[y : y + h, x : x + w] = rng.random((h, w), dtype=np.float32)[: 24 - y, : 24 - x] * level
    m = brush.feather(mask, radius)
    out = brush.composite(original, result, m)
    outside = m == 0
    assert np.array_equal(out[outside], original[outside])
    # The separable blur reaches ``ceil(radius)`` pixels along each axis: a square around each pixel.
    reach = int(np.ceil(radius))
    padded = np.pad(mask > 0, reach)
    support = np.zeros((24, 24), bool)
    for dy in range(2 * reach + 1):
        for dx in range(2 * reach + 1):
            support |= padded[dy : dy + 24, dx : dx + 24]
    assert np.all(outside[~support])


def test_rect_union_and_contains():
    a, b = Rect(0, 2, 0, 2), Rect(5, 6, 1, 9)
    assert a.union(b) == Rect(0, 6, 0, 9) and a.union(None) == a
    assert a.union(b).contains(a) and not a.contains(b)
