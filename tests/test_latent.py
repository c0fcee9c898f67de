"""The latent explorer's engine: spaces, directions, interpolation, projection, sliders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_dataset, tiny_pattern, train_tiny_run
from PIL import Image

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.latent import (
    arithmetic,
    describe_run,
    interpolate,
    open_latent_space,
    open_space,
)
from studio.engine.latent_directions import (
    fit_attribute_direction,
    pca_directions,
    raw_directions,
)
from studio.engine.latent_io import (
    NamedSlider,
    add_slider,
    export_animation,
    export_strip_png,
    load_sliders,
    remove_slider,
    save_sliders,
)
from studio.engine.latent_project import project_job
from studio.engine.runs import RunFolder
from studio.models.registry import get_family

TINY = {
    "gan.dcgan": {"latent_dim": 8, "width": 8},
    "gan.cgan": {"latent_dim": 8, "width": 8},
    "vae.conv": {"latent_dim": 6, "width": 8},
    "vae.cvae": {"latent_dim": 6, "width": 8},
    "vae.vqvae": {"codebook_size": 16, "embedding_dim": 4, "downsample": 4, "width": 8},
    "flow.realnvp": {"scales": 2, "couplings": 2, "hidden": 16},
    "flow.glow": {"levels": 2, "steps": 2, "hidden": 16},
}


def build(key: str, classes: int = 0, seed: int = 0):
    torch.manual_seed(seed)
    family = get_family(key)
    classes = classes or (2 if key in ("gan.cgan", "vae.cvae") else 0)
    model = family(family.Config.from_dict(dict(TINY[key], resolution=16, num_classes=classes)))
    if key.startswith("gan."):
        # DCGAN's N(0, 0.02) init draws flat grey until trained; PyTorch's default init gives
        # images that vary with z, which projection and PCA need to be tested on.
        # Batch-norm statistics from a few batches, as training would have set them.
        g = model.generator
        for m in g.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.reset_parameters()
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # a plain average over the batches below
        with torch.no_grad():
            g.train()
            for _ in range(4):
                g(torch.randn(32, g.latent_dim), torch.arange(32) % 2 if g.embed else None)
            g.eval()
    return model


def save_run(tmp_path: Path, key: str, model=None) -> Path:
    """A run folder holding ``model`` (untrained weights are enough to explore)."""
    run = tmp_path / key.replace(".", "-")
    (model or build(key)).save(run / "model")
    RunFolder(run).write_config({"family": key, "train": {"family": key}})
    return run


def picture(seed: int = 0, size: int = 16) -> np.ndarray:
    return tiny_pattern(seed, size, np.random.default_rng(seed))


# -- spaces --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(TINY))
def test_every_latent_family_samples_decodes_and_says_how_it_encodes(key):
    space = open_space(build(key))
    z = space.prior_sample(3, seed=5)
    assert z.shape == (3, space.dim) and z.dtype == np.float32
    assert np.array_equal(z, space.prior_sample(3, seed=5))  # same seed, same latents
    images = space.decode(z)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    one = space.decode(z[1])
    assert one.shape == (16, 16, 3)
    assert np.array_equal(one, images[1])  # batch of one == row of a batch
    assert space.encoder  # said in words
    if space.can_encode:
        assert space.encode(picture()).shape == (space.dim,)
    else:
        with pytest.raises(StudioError, match="projection"):
            space.encode(picture())


def test_vae_encodes_to_the_posterior_mean():
    model = build("vae.conv")
    space = open_space(model)
    img = picture(1)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    mean = model.posterior(x)[0][0].detach().numpy()
    assert np.allclose(space.encode(img), mean, atol=1e-5)


@pytest.mark.parametrize("key", ["flow.realnvp", "flow.glow"])
def test_flow_encode_then_decode_reproduces_the_image(key):
    space = open_space(build(key))
    img = picture(2)
    back = space.decode(space.encode(img))
    assert np.abs(back.astype(int) - img.astype(int)).max() <= 1
    assert np.mean(back == img) > 0.99


def test_conditional_models_take_a_class():
    space = open_space(build("gan.cgan"))
    assert space.num_classes == 2 and space.label == 0
    z = space.prior_sample(1, 0)[0]
    a = space.decode(z)
    space.label = 1
    assert not np.array_equal(a, space.decode(z))
    with pytest.raises(StudioError, match="class"):
        space.label = 5
    cvae = open_space(build("vae.cvae"), label=1)
    assert cvae.encode(picture()).shape == (cvae.dim,)
    with pytest.raises(StudioError):
        open_space(build("vae.conv"), label=1)


def test_non_latent_runs_are_refused_clearly(tmp_path):
    # Text-conditioned diffusion has no explorer (DDPM runs do: tests/test_latent_diffusion.py).
    run = tmp_path / "text"
    RunFolder(run).write_config({"family": "diffusion.text", "train": {}})
    info = describe_run(run)
    assert not info.explorable and "cannot be explored" in info.reason
    assert "Traceback" not in info.reason
    with pytest.raises(StudioError, match="cannot be explored"):
        open_latent_space(run)  # refused before any weights are looked for
    with pytest.raises(StudioError, match="not a Studio run"):
        describe_run(tmp_path / "nowhere")


def test_a_trained_run_opens_as_a_latent_space(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=16, size=16, classes=2)
    train_tiny_run(tmp_path / "run", "vae.conv", data, TINY["vae.conv"])
    info = describe_run(tmp_path / "run")
    assert info.explorable and info.family == "vae.conv" and info.kind == "vae"
    space = open_latent_space(tmp_path / "run")
    assert space.dim == 6 and space.decode(space.prior_sample(1, 0)[0]).shape == (16, 16, 3)


# -- directions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["gan.dcgan", "vae.conv", "vae.vqvae", "flow.realnvp"])
def test_pca_directions_are_orthonormal_with_a_spread_each(key):
    space = open_space(build(key))
    d = pca_directions(space, n_samples=120, k=4, seed=3)
    assert d.vectors.shape == (4, space.dim) and d.names == ("PC1", "PC2", "PC3", "PC4")
    assert np.allclose(d.vectors @ d.vectors.T, np.eye(4), atol=1e-4)
    assert (d.std > 0).all() and np.isfinite(d.std).all()
    assert d.method and d.explained is not None and (np.diff(d.explained) <= 1e-9).all()
    offset = d.offset(np.array([1.0, 0, 0, 0]))
    assert np.allclose(offset, d.std[0] * d.vectors[0], atol=1e-5)


def test_vae_directions_skip_dimensions_the_encoder_ignores():
    space = open_space(build("vae.conv"))
    # Make the encoder ignore latent 0: its posterior mean is then constant.
    with torch.no_grad():
        space.model.encoder.head.weight[0].zero_()
        space.model.encoder.head.bias[0] = 0.0
    d = pca_directions(space, n_samples=100, k=3)
    assert np.abs(d.vectors[:, 0]).max() < 1e-3


def test_raw_dimensions_on_request():
    space = open_space(build("gan.dcgan"))
    d = raw_directions(space, k=3, start=2)
    assert d.names == ("z2", "z3", "z4")
    assert np.array_equal(d.vectors, np.eye(8, dtype=np.float32)[2:5])
    assert np.allclose(d.std, 1.0, atol=0.2)


def test_fitted_attribute_direction_separates_the_marked_latents():
    rng = np.random.default_rng(0)
    true = rng.normal(size=32)
    true /= np.linalg.norm(true)
    z = rng.normal(size=(60, 32))
    score = z @ true
    pos, neg = z[score > 0.3], z[score < -0.3]
    fit = fit_attribute_direction(pos, neg)
    assert fit.accuracy >= 0.95 and fit.n_pos == len(pos) and fit.n_neg == len(neg)
    assert abs(np.linalg.norm(fit.direction) - 1) < 1e-5
    assert float(fit.direction @ true) > 0.7
    assert (pos @ fit.direction).mean() > (neg @ fit.direction).mean()
    with pytest.raises(StudioError, match="at least one"):
        fit_attribute_direction(pos, neg[:0])


# -- moving between latents -------------------------------------------------------------------------


def test_interpolation_returns_its_endpoints_exactly():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 50)).astype(np.float32)
    for mode in ("linear", "spherical"):
        path = interpolate(a, b, 7, mode)
        assert path.shape == (7, 50)
        assert np.array_equal(path[0], a) and np.array_equal(path[-1], b)
    slerp = interpolate(a, b, 9, "spherical")
    lerp = interpolate(a, b, 9, "linear")
    # Slerp keeps the norm up between two typical latents; a straight line sags.
    assert np.linalg.norm(slerp[4]) > np.linalg.norm(lerp[4])
    assert np.allclose(interpolate(a, a, 3, "spherical"), a)  # parallel ends: no NaN
    with pytest.raises(StudioError):
        interpolate(a, b, 1)


def test_latent_arithmetic():
    a, b, c = (np.full(4, v, np.float32) for v in (3.0, 1.0, 0.5))
    assert np.allclose(arithmetic(a, b, c), 2.5)
    with pytest.raises(StudioError):
        arithmetic(a, b, np.zeros(3))


# -- projection ------------------------------------------------------------------------------------


def test_gan_projection_reduces_the_error_and_honours_cancel():
    space = open_space(build("gan.dcgan", seed=4))
    target = space.decode(space.prior_sample(1, seed=99)[0])  # reachable: made by the model
    reports: list[Progress] = []
    out = run_sync(project_job(space, target, steps=60, seed=0, lr=0.1), None, reports.append)
    assert out.ok, out.error or out.details
    proj = out.result
    assert proj.error < proj.initial_error * 0.5
    assert proj.z.shape == (8,) and proj.reconstruction.shape == (16, 16, 3)
    assert np.array_equal(space.decode(proj.z), proj.reconstruction)
    assert reports[-1].step == 60 and "mse" in reports[-1].metrics
    assert any(r.image is not None for r in reports)
    for p in space.model.parameters():
        assert p.grad is None  # only z was optimised

    token = CancelToken()

    def cancel_early(p: Progress) -> None:
        if p.step >= 3:
            token.cancel()

    seen: list[int] = []
    out = run_sync(
        project_job(space, target, steps=500),
        token,
        lambda p: (seen.append(p.step), cancel_early(p)),
    )
    assert out.status is Status.CANCELLED and out.result is None and max(seen) == 3


# -- files -------------------------------------------------------------------------------------------


def test_named_sliders_round_trip_in_the_run_folder(tmp_path):
    run = tmp_path / "run"
    rng = np.random.default_rng(2)
    smile = NamedSlider("smile", rng.normal(size=8).astype(np.float32), std=1.5, accuracy=0.9)
    dark = NamedSlider("dark", rng.normal(size=8).astype(np.float32), label=1)
    save_sliders(run, [smile, dark], family="gan.dcgan")
    assert (run / "latent" / "sliders.json").is_file()
    assert (run / "latent" / "sliders.safetensors").is_file()
    back = load_sliders(run)
    assert [s.name for s in back] == ["smile", "dark"]
    assert np.array_equal(back[0].direction, smile.direction)
    assert back[0].std == 1.5 and back[0].accuracy == 0.9 and back[1].label == 1
    assert back[0].id == smile.id
    meta = json.loads((run / "latent" / "sliders.json").read_text())
    assert meta["family"] == "gan.dcgan"

    # Replace by name, remove, and leave out sliders of another size.
    again = add_slider(run, NamedSlider("smile", np.ones(8, np.float32)))
    assert [s.name for s in again] == ["dark", "smile"]
    assert np.array_equal(load_sliders(run)[1].direction, np.ones(8, np.float32))
    assert [s.name for s in remove_slider(run, "dark")] == ["smile"]
    assert load_sliders(run, dim=9) == []
    assert load_sliders(tmp_path / "empty") == []
    with pytest.raises(StudioError, match="same name"):
        save_sliders(run, [smile, smile])


def test_interpolation_strip_exports_png_gif_and_webp(tmp_path):
    frames = np.stack([np.full((8, 8, 3), v, np.uint8) for v in range(0, 250, 50)])
    png = export_strip_png(frames, tmp_path / "strip.png", scale=2)
    with Image.open(png) as img:
        assert img.size[1] == 8 * 2 + 2 * 2 * 2 and img.size[0] > 5 * 16
    for suffix in (".gif", ".webp"):
        path = export_animation(frames, tmp_path / f"anim{suffix}", fps=10, scale=2)
        with Image.open(path) as img:
            assert img.n_frames == 2 * 5 - 2 and img.size == (16, 16)  # forth and back
    with pytest.raises(StudioError):
        export_animation(frames, tmp_path / "anim.mp4")
