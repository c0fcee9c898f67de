"""Pix2Pix: the U-Net keeps the input size, the patch discriminator fits small images, sampling
translates the ``image`` condition with seeded dropout noise, and a tiny model learns a tiny
mapping (A = the colour negative of B)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_pattern

from studio.models.base import Batch, StepContext
from studio.models.i2i.pix2pix import (
    PatchDiscriminator,
    Pix2Pix,
    Pix2PixConfig,
    UNet,
    patch_layers,
    receptive_field,
    unet_levels,
)


@pytest.mark.parametrize("resolution", [8, 16, 32, 48])
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_keeps_the_input_size(resolution, norm):
    net = UNet(3, 3, 8, resolution, norm)
    x = torch.rand(2, 3, resolution, resolution) * 2 - 1
    y = net(x, 0.5, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert y.abs().max() <= 1


def test_unet_depth_follows_the_resolution_and_skips_reach_the_output():
    assert [unet_levels(r) for r in (8, 16, 32, 256, 512, 48)] == [3, 4, 5, 8, 8, 4]
    with pytest.raises(ValueError, match="divisible by 4"):
        unet_levels(18)
    torch.manual_seed(0)
    net = UNet(3, 3, 8, 16, "batch").eval()
    bottleneck = net.down[-1][1]
    with torch.no_grad():  # nothing passes the bottleneck: only the skips carry the input
        bottleneck.weight.zero_()
        bottleneck.bias.zero_()
    x = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_(True)
    net(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_patch_discriminator_sees_70_px_patches_and_fewer_layers_on_small_images():
    assert [receptive_field(n) for n in (1, 2, 3, 4)] == [16, 34, 70, 142]
    assert [patch_layers(r, 3) for r in (8, 16, 32, 256)] == [1, 2, 3, 3]
    d = PatchDiscriminator(6, 8, 256, 3, "batch")
    x = torch.zeros(1, 3, 256, 256)
    assert d(x, x).shape == (1, 1, 30, 30)  # the paper's 30x30 map of 70x70 patches
    small = Pix2Pix(Pix2PixConfig(resolution=16, width=8))
    assert small.patch_size() == 34
    for r in (8, 16, 32):
        d = PatchDiscriminator(6, 8, r, 3, "instance")
        x = torch.zeros(2, 3, r, r)
        assert d(x, x).shape[-1] >= 2


def test_jitter_is_a_thirtieth_of_256_and_can_be_turned_off():
    assert Pix2Pix(Pix2PixConfig(resolution=256, width=8)).paired_jitter() == 30
    assert Pix2Pix(Pix2PixConfig(resolution=16, width=8)).paired_jitter() == 2
    assert Pix2Pix(Pix2PixConfig(resolution=16, width=8, jitter=False)).paired_jitter() == 0


def test_sampling_translates_the_image_with_seeded_noise():
    torch.manual_seed(0)
    model = Pix2Pix(Pix2PixConfig(resolution=16, width=8)).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    a = model.sample(4, torch.Generator().manual_seed(1), image=x)
    b = model.sample(4, torch.Generator().manual_seed(1), image=x)
    c = model.sample(4, torch.Generator().manual_seed(2), image=x)
    assert a.shape == (4, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)  # dropout is the noise
    assert not torch.equal(a[0], a[2])  # input 0 twice, with different noise
    quiet = Pix2Pix(Pix2PixConfig(resolution=16, width=8, dropout=0.0)).eval()
    one = quiet.sample(1, torch.Generator().manual_seed(1), image=x[0])
    two = quiet.sample(1, torch.Generator().manual_seed(2), image=x[0])
    assert torch.equal(one, two)
    with pytest.raises(ValueError, match="input image"):
        model.sample(1, torch.Generator())
    with pytest.raises(ValueError, match="3 x 16 x 16"):
        model.sample(1, torch.Generator(), image=torch.zeros(1, 3, 8, 8))


def _pairs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    rng = np.random.default_rng(seed)
    b = np.stack([tiny_pattern(i % 4, size, rng) for i in range(n)])
    b = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 127.5 - 1
    return -b, b  # A is B's colour negative


def test_a_tiny_pix2pix_learns_a_tiny_mapping():
    """A few hundred steps at 8 px: the held-out L1 to the targets falls well below the
    start, and below what copying the input would give."""
    torch.manual_seed(0)
    model = Pix2Pix(Pix2PixConfig(resolution=8, width=8, lr_g=2e-3, lr_d=2e-4))
    model.configure_optimizers()
    model.remember_base_lrs()
    a, b = _pairs(32, 8, seed=0)
    held_a, held_b = _pairs(8, 8, seed=1)

    def held_l1() -> float:
        with torch.no_grad():
            out = model.sample(len(held_a), torch.Generator().manual_seed(0), image=held_a)
        return float((out - held_b).abs().mean())

    before = held_l1()
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(80):
        idx = torch.randperm(len(a), generator=gen)[:8]
        model.train()
        out = model.train_step(Batch(images=b[idx], sources=a[idx]), StepContext(step, gen))
        losses.append(float(out["loss_l1"]))
        assert set(out) == set(Pix2Pix.info.loss_names)
    after = held_l1()
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert after < 0.5 * before and after < 0.2, (before, after)


def test_training_without_inputs_is_refused():
    model = Pix2Pix(Pix2PixConfig(resolution=8, width=8))
    model.configure_optimizers()
    with pytest.raises(ValueError, match="pairs"):
        model.train_step(Batch(images=torch.zeros(2, 3, 8, 8)), StepContext(0, torch.Generator()))
