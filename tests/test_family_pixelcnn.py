"""PixelCNN (ar.pixelcnn): causality of the masked stacks, the discretised logistic mixture,
row-cropped sampling, raster inpainting, and learning on a tiny fixture."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TINY_MODELS

from studio.models.ar.logistic import Mixture, log_prob, params_per_pixel, to_bins
from studio.models.ar.pixelcnn import PixelCNN
from studio.models.base import Batch, StepContext
from studio.models.capabilities import InpaintSettings


def tiny(resolution=5, channels=3, **over):
    torch.manual_seed(0)
    cfg = PixelCNN.Config.from_dict(
        {**TINY_MODELS["ar.pixelcnn"], "resolution": resolution, "channels": channels, **over}
    )
    return PixelCNN(cfg).double()


def _dependencies(model, x, labels=None):
    """For every pixel position i and channel c: the gradient of channel c's (shifted) mixture
    parameters at i with respect to the whole input image."""
    c, r = model.config.channels, model.config.resolution
    out = {}
    for pos in range(r * r):
        row, col = divmod(pos, r)
        for ch in range(c):
            inp = x.clone().requires_grad_(True)
            mix = model.mixture(inp, labels)
            means = mix.shifted_means(inp)
            total = (
                mix.logits[:, :, row, col].sum()
                + means[:, :, ch, row, col].sum()
                + mix.log_scales[:, :, ch, row, col].sum()
            )
            (grad,) = torch.autograd.grad(total, inp)
            out[pos, ch] = grad[0].abs()  # C x H x W
    return out


@pytest.mark.parametrize("kernel", [3, 5])
def test_output_at_a_pixel_depends_only_on_what_comes_before_it(kernel):
    """Every position and every channel of a 5x5 RGB input: channel c's distribution at pixel
    i depends on no pixel at i or later in raster order, except channels < c of pixel i
    itself (the PixelCNN++ channel order R -> G -> B). And it does depend on the past (no
    blind spot: the pixel just up-right of i, which a single masked stack cannot see)."""
    model = tiny(kernel=kernel, layers=3)
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64) * 2 - 1
    deps = _dependencies(model, x)
    for (pos, ch), grad in deps.items():
        flat = grad.reshape(3, -1)  # channel x raster position
        assert (flat[:, pos + 1 :] == 0).all(), f"pixel {pos} channel {ch} sees the future"
        assert (flat[ch:, pos] == 0).all(), f"pixel {pos} channel {ch} sees itself or later"
        if ch > 0:
            assert flat[:ch, pos].min() > 0, "a channel must see the earlier ones of its pixel"
        row, col = divmod(pos, 5)
        if row > 0 and col < 4:
            assert flat[:, (row - 1) * 5 + col + 1].max() > 0, "blind spot up-right"
        if col > 0:
            assert flat[:, pos - 1].max() > 0, "the pixel to the left must count"


def test_class_conditioning_keeps_causality_and_changes_the_output():
    model = tiny(num_classes=3, layers=2)
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64) * 2 - 1
    deps = _dependencies(model, x, torch.tensor([1]))
    for (pos, ch), grad in deps.items():
        flat = grad.reshape(3, -1)
        assert (flat[:, pos + 1 :] == 0).all() and (flat[ch:, pos] == 0).all()
    with torch.no_grad():
        for layer in model.net.layers:
            torch.nn.init.normal_(layer.embed.weight)
        a = model.mixture(x, torch.tensor([0])).means
        b = model.mixture(x, torch.tensor([2])).means
    assert not torch.allclose(a, b)


def _random_mixture(channels, k, seed):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(1, params_per_pixel(channels, k), 1, 1, generator=g, dtype=torch.float64)
    out[:, k:] *= 0.7
    return Mixture.from_output(out, channels, k)


@pytest.mark.parametrize("k", [1, 3])
def test_logistic_mixture_probabilities_sum_to_one_over_the_256_values(k):
    values = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    mix = _random_mixture(1, k, seed=k)
    expanded = Mixture(*(t.expand(256, *t.shape[1:]) for t in vars(mix).values()))
    logp = log_prob(expanded, values.view(256, 1, 1, 1)).view(256)
    assert torch.logsumexp(logp, 0).exp().item() == pytest.approx(1.0, abs=1e-9)
    assert torch.isfinite(logp).all()
    # Two dependent channels: the joint over all 256 x 256 value pairs sums to one too.
    mix2 = _random_mixture(2, k, seed=10 + k)
    g, r = torch.meshgrid(values, values, indexing="ij")
    pairs = torch.stack([g.reshape(-1), r.reshape(-1)], dim=1).view(-1, 2, 1, 1)
    expanded2 = Mixture(*(t.expand(len(pairs), *t.shape[1:]) for t in vars(mix2).values()))
    logp2 = log_prob(expanded2, pairs).sum(dim=1).view(-1)
    assert torch.logsumexp(logp2, 0).exp().item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("classes", [0, 2])
def test_the_cropped_per_pixel_mixture_equals_the_whole_images(classes):
    """Sampling runs the vertical stack once per row and the horizontal stack on a few pixels
    of that row per pixel: the result is the whole image's mixture at every pixel."""
    model = tiny(resolution=9, channels=3, layers=2, num_classes=classes)
    x = torch.rand(2, 3, 9, 9, dtype=torch.float64) * 2 - 1
    labels = torch.tensor([0, 1]) if classes else None
    with torch.no_grad():
        for layer in model.net.layers:
            if layer.embed is not None:
                torch.nn.init.normal_(layer.embed.weight)
        full = model.mixture(x, labels)
        for row in range(9):
            features = model.row_features(x, labels, row)
            for col in range(9):
                crop, at = model.pixel_mixture(x, labels, row, col, features)
                assert at == min(col, model.reach)
                for name in ("logits", "means", "log_scales", "coeffs"):
                    got = getattr(crop, name)[..., 0, at]
                    assert torch.allclose(got, getattr(full, name)[..., row, col]), name


def test_bits_per_dim_is_the_exact_nll_and_marginalises_classes():
    model = tiny(resolution=4, channels=1, num_classes=2).float()
    x = to_bins(torch.rand(3, 1, 4, 4) * 2 - 1)
    with torch.no_grad():
        per_class = torch.stack([model.log_likelihood(x, torch.full((3,), y)) for y in range(2)])
    bpd0 = model.bits_per_dim(x, torch.zeros(3, dtype=torch.long))
    assert torch.allclose(bpd0, -per_class[0] / (16 * math.log(2)), atol=1e-5)
    marginal = model.bits_per_dim(x)
    expected = -(torch.logsumexp(per_class, 0) - math.log(2)) / (16 * math.log(2))
    assert torch.allclose(marginal, expected, atol=1e-5)


def test_sampling_fills_in_row_by_row_and_is_seeded():
    model = tiny(resolution=6, channels=3).float()
    steps = list(_run(model.sample_iter(2, torch.Generator().manual_seed(3))))
    previews, final = steps[:-1], steps[-1]
    assert [p.step for p in previews] == list(range(1, 7)) and previews[0].total == 6
    first = previews[0].preview
    assert (first[:, :, 1:] == 0).all() and not (first[:, :, 0] == 0).all()
    again = model.sample(2, torch.Generator().manual_seed(3))
    assert torch.equal(final, again) and torch.equal(final, to_bins(final))
    cold = model.sample(2, torch.Generator().manual_seed(3), temperature=0.05)
    assert not torch.equal(cold, again)


def _run(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration as done:
            yield done.value
            return


@pytest.mark.parametrize("preset", ["fast", "quality"])
def test_inpainting_redraws_the_hole_only(preset):
    model = tiny(resolution=6, channels=3).float()
    x0 = to_bins(torch.rand(1, 3, 6, 6) * 2 - 1)
    hole = torch.zeros(1, 1, 6, 6)
    hole[..., 2:4, 1:5] = 1
    settings = InpaintSettings(preset=preset)
    out = list(
        _run(
            model.inpaint_iter(x0, hole, 2, torch.Generator().manual_seed(0), settings, None, None)
        )
    )
    images = out[-1]
    assert images.shape == (2, 3, 6, 6)
    keep = hole[0, 0] == 0
    assert torch.equal(images[:, :, keep], x0.expand(2, -1, -1, -1)[:, :, keep])
    assert not torch.equal(images[:, :, ~keep], x0.expand(2, -1, -1, -1)[:, :, ~keep])
    assert "after" in model.inpaint_describe(settings)


def test_pixelcnn_learns_a_tiny_fixture():
    """Two 8x8 grey images (a bar and its negative), 60 Adam steps: the bits/dim falls to a
    small fraction of the untrained model's."""
    torch.manual_seed(0)
    model = PixelCNN(
        PixelCNN.Config.from_dict(
            {"resolution": 8, "channels": 1, "width": 16, "layers": 3, "mixtures": 2,
             "warmup_steps": 0, "lr": 5e-3}
        )
    )  # fmt: skip
    model.configure_optimizers()
    a = -torch.ones(1, 1, 8, 8)
    a[..., 3:5, :] = 1
    data = torch.cat([a, -a]).repeat(4, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    before = model.bits_per_dim(data[:2]).mean().item()
    for step in range(60):
        model.train_step(Batch(data), StepContext(step=step, generator=gen))
    after = model.bits_per_dim(data[:2]).mean().item()
    assert before > 1.5 and after < 0.5, (before, after)
