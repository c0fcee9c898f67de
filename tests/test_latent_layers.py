"""Layered latents (LatentSpec.layers: StyleGAN's w+): group sliders move only their layers,
layer mixing picks each layer's latent, projection into w or w+, the mix grid export."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from studio.core.errors import StudioError
from studio.engine.latent import open_space
from studio.engine.latent_base import mix_layers
from studio.engine.latent_directions import pca_directions, raw_directions
from studio.engine.latent_project import project_job
from studio.models.base import Batch, StepContext
from studio.models.gan.stylegan import StyleGAN
from studio.qt.latent.edit_state import EditState, layer_mask

TINY = {"latent_dim": 8, "w_dim": 16, "mapping_layers": 2, "width": 8}


def make(resolution: int = 16, **overrides: Any) -> StyleGAN:
    torch.manual_seed(0)
    model = StyleGAN(StyleGAN.Config.from_dict({"resolution": resolution, **TINY, **overrides}))
    model.configure_optimizers()
    x = torch.rand(8, 3, resolution, resolution, generator=torch.Generator().manual_seed(9))
    for i in range(2):  # noise strengths and biases move off their zero init
        model.train_step(Batch(x * 2 - 1, None), StepContext(i, torch.Generator().manual_seed(i)))
    return model


def run(job: Any) -> Any:
    while True:
        try:
            next(job)
        except StopIteration as done:
            return done.value


def test_the_style_family_declares_its_layers_and_groups():
    model = make(32)
    spec = model.latent_spec()
    assert spec.layers == model.num_ws == 8
    names = [g.name for g in spec.layer_groups]
    assert names == ["Coarse", "Middle", "Fine"]
    stops = [(g.start, g.stop) for g in spec.layer_groups]
    assert stops[0][0] == 0 and stops[-1][1] == spec.layers  # they cover every layer
    assert all(a[1] == b[0] for a, b in zip(stops, stops[1:]))  # in order, no gap


def test_a_layered_space_decodes_a_prior_draw_as_the_model_draws_it():
    model = make()
    space = open_space(model)
    assert space.layered and space.dim == space.layers * space.layer_dim
    z = space.prior_sample(2, seed=3)
    per_layer = z.reshape(2, space.layers, -1)
    assert np.array_equal(per_layer[:, 0], per_layer[:, -1])  # the same w at every layer
    u = torch.from_numpy(per_layer[:, 0])
    with torch.no_grad():
        expected = model.decode_latents(u, None)
    got = space.decode(z)
    assert np.abs(got.astype(int) - space.decode(z).astype(int)).max() == 0
    from studio.engine.latent_base import to_uint8

    assert np.abs(got.astype(int) - to_uint8(expected).astype(int)).max() <= 1


def test_mixing_at_crossover_0_is_the_second_and_at_the_last_layer_the_first():
    model = make()
    space = open_space(model)
    a, b = space.prior_sample(2, seed=5)
    img_a, img_b = space.decode(a), space.decode(b)
    assert np.array_equal(space.decode(mix_layers(a, b, 0, space.layers)), img_b)
    assert np.array_equal(space.decode(mix_layers(a, b, space.layers, space.layers)), img_a)
    middle = space.decode(mix_layers(a, b, 3, space.layers))
    assert not np.array_equal(middle, img_a) and not np.array_equal(middle, img_b)
    # the same as the model's own style mixing
    u = torch.from_numpy(np.stack([a, b]).reshape(2, space.layers, -1)[:, 0])
    with torch.no_grad():
        mixed = model.mixed(u[:1], u[1:], 3)
    from studio.engine.latent_base import to_uint8

    assert np.abs(to_uint8(mixed)[0].astype(int) - middle.astype(int)).max() <= 1
    with pytest.raises(StudioError, match="crossover"):
        mix_layers(a, b, space.layers + 1, space.layers)
    with pytest.raises(StudioError, match="same model"):
        mix_layers(a, b[:-1], 1, space.layers)


def test_group_sliders_change_only_their_layers():
    model = make(32)
    space = open_space(model)
    dirs = pca_directions(space, n_samples=64, k=3)
    assert dirs.dim == space.dim
    assert np.allclose(np.linalg.norm(dirs.vectors, axis=1), 1, atol=1e-5)
    edit = EditState()
    edit.set_origin(space.prior_sample(1, seed=1)[0], "Seed 1")
    edit.set_directions(dirs)
    base = edit.current_z().reshape(space.layers, -1)
    for index, group in enumerate(space.layer_groups):
        mask = layer_mask(space.layer_groups, space.layers, space.layer_dim, index)
        edit.set_group(mask)
        before = edit.current_z().reshape(space.layers, -1)
        edit.set_values(np.array([2.0, -1.0, 0.5]))
        after = edit.current_z().reshape(space.layers, -1)
        inside = np.zeros(space.layers, bool)
        inside[group.start : group.stop] = True
        assert not np.allclose(after[inside], before[inside])
        assert np.array_equal(after[~inside], before[~inside])  # other layers untouched
        # each moved layer moves as far as the all-layers slider moves it
        assert np.allclose(after[inside] - before[inside], (after - before)[group.start])
    # back to every layer: one slider moves all layers alike
    edit.set_group(None)
    edit.set_values(np.array([1.0, 0.0, 0.0]))
    moved = edit.current_z().reshape(space.layers, -1) - edit.base.reshape(space.layers, -1)
    assert np.allclose(moved, moved[0], atol=1e-6) and np.abs(moved).max() > 0
    assert not np.array_equal(edit.current_z().reshape(space.layers, -1), base)


def test_raw_dimensions_of_a_layered_latent_move_every_layer():
    space = open_space(make())
    raw = raw_directions(space, k=4)
    assert raw.dim == space.dim
    per_layer = raw.offset(np.array([1.0, 0, 0, 0])).reshape(space.layers, -1)
    assert np.allclose(per_layer, per_layer[0]) and per_layer[0, 0] > 0


def test_projection_into_w_plus_reconstructs_closer_than_into_w():
    """The model's own image with every layer's style jittered (an image w cannot quite
    reach): w+ has a latent per layer, so at the same step count it comes closer."""
    model = make()
    space = open_space(model)
    z = space.prior_sample(1, seed=11)[0].reshape(space.layers, -1)
    z = z + 0.5 * np.random.default_rng(0).normal(size=z.shape).astype(np.float32)
    target = space.decode(z.reshape(-1))
    w = run(project_job(space, target, steps=40, candidates=4, lr=0.05))
    w_plus = run(project_job(space, target, steps=40, candidates=4, lr=0.05, per_layer=True))
    per_layer = w.z.reshape(space.layers, -1)
    assert np.array_equal(per_layer[0], per_layer[-1])  # w: one latent at every layer
    assert w_plus.error < w.error < w.initial_error
    assert w_plus.error < 0.8 * w.error


def test_the_mix_grid_lays_out_every_pair_and_refuses_what_it_cannot_mix(tmp_path):
    from studio.engine.latent_layers import PAD, mix_grid_job, save_png, tile_scale

    model = make()
    space = open_space(model)
    zs = list(space.prior_sample(3, seed=2))
    grid = run(mix_grid_job(space, zs, 2))
    tile = space.resolution * tile_scale(space.resolution)
    assert grid.shape == (4 * (tile + PAD) + PAD,) * 2 + (3,)
    s = tile_scale(space.resolution)
    cell = lambda r, c: grid[PAD + r * (tile + PAD) : PAD + r * (tile + PAD) + tile : s,  # noqa: E731
                             PAD + c * (tile + PAD) : PAD + c * (tile + PAD) + tile : s]  # fmt: skip
    originals = space.decode(np.stack(zs))
    for i in range(3):
        assert np.array_equal(cell(0, i + 1), originals[i])  # the top row: as drawn
        assert np.array_equal(cell(i + 1, 0), originals[i])  # the left column too
        assert np.array_equal(cell(i + 1, i + 1), originals[i])  # mixed with itself
    mixed = space.decode(mix_layers(zs[0], zs[2], 2, space.layers))
    assert np.array_equal(cell(1, 3), mixed)  # row: the layout's latent; column: the colour's
    with pytest.raises(StudioError, match="between 2"):
        run(mix_grid_job(space, zs[:1], 2))
    with pytest.raises(StudioError, match="another model"):
        run(mix_grid_job(space, [zs[0], zs[1][:-1]], 2))

    out = save_png(grid, tmp_path / "grid")  # the suffix is added
    assert out == tmp_path / "grid.png" and Image.open(out).size == grid.shape[1::-1]
    before = out.read_bytes()
    with pytest.raises(StudioError, match="already exists"):
        save_png(grid[:8, :8], out)
    assert out.read_bytes() == before  # nothing written over
    save_png(grid[:8, :8], out, overwrite=True)  # the dialog asked
    assert Image.open(out).size == (8, 8)
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(StudioError, match="already exists"):
        save_png(grid, link, overwrite=True)  # never through a link
    assert not (tmp_path / "elsewhere.png").exists()
    with pytest.raises(StudioError, match="no folder"):
        save_png(grid, tmp_path / "missing" / "grid.png")
    assert not (tmp_path / "missing").exists()
