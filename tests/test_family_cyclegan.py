"""CycleGAN's pieces: the ResNet generator keeps any size, identity generators have no cycle
loss, the history pool keeps at most its size and swaps half the time, the learning rate
decays linearly over the second half, and a tiny model learns to invert colours."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from studio.models.base import Batch, StepContext
from studio.models.i2i.cyclegan import (
    CycleGAN,
    CycleGANConfig,
    HistoryPool,
    ResnetGenerator,
    decay_factor,
    translate_padded,
)
from studio.models.i2i.pix2pix import Pix2Pix, Pix2PixConfig


def _tiny(**kw) -> CycleGAN:
    torch.manual_seed(0)
    model = CycleGAN(CycleGANConfig(**{"resolution": 16, "width": 8, "blocks": 1, **kw}))
    model.configure_optimizers()
    model.remember_base_lrs()
    return model


@pytest.mark.parametrize("size", [(8, 8), (16, 16), (24, 32)])
def test_the_resnet_generator_keeps_the_input_size(size):
    g = ResnetGenerator(3, 8, 2)
    x = torch.rand(2, 3, *size) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    # Reflection padding throughout: no zero padding anywhere in the generator.
    pads = [m for m in g.modules() if isinstance(m, nn.ReflectionPad2d)]
    assert len(pads) == 2 + 2 * 2
    assert all(
        m.padding == (0, 0)
        for m in g.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (7, 7)
    )
    assert any(isinstance(m, nn.InstanceNorm2d) for m in g.modules())


def test_any_size_is_padded_to_the_stride_and_cropped_back():
    g = ResnetGenerator(3, 8, 1)
    x = torch.rand(1, 3, 13, 21) * 2 - 1
    assert translate_padded(g, x, 0.0, None).shape == (1, 3, 13, 21)
    with pytest.raises(ValueError, match="at least 8"):
        translate_padded(g, torch.zeros(1, 3, 5, 40), 0.0, None)


class _Identity(nn.Module):
    def forward(self, x, p=0.0, generator=None):
        return x


def test_the_cycle_and_identity_losses_of_identity_generators_are_zero():
    model = _tiny()
    model.g_ab, model.g_ba = _Identity(), _Identity()
    a, b = torch.rand(3, 3, 16, 16) * 2 - 1, torch.rand(3, 3, 16, 16) * 2 - 1
    out = model.cycle_losses(a, b, StepContext(0, torch.Generator()))
    for name in ("loss_cycle_a", "loss_cycle_b", "loss_idt_a", "loss_idt_b"):
        assert out[name].item() == 0.0, name
    # A generator that changes its input has a cycle loss.
    model.g_ab = ResnetGenerator(3, 8, 1)
    out = model.cycle_losses(a, b, StepContext(0, torch.Generator()))
    assert out["loss_cycle_a"].item() > 0.01


def _marked(values) -> torch.Tensor:
    """One 1x2x2 image per value, filled with it."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)


def test_the_history_pool_fills_then_swaps_half_the_time():
    pool = HistoryPool(4, 1, 2)
    gen = torch.Generator().manual_seed(0)
    # Until it is full, images pass through and are kept.
    assert torch.equal(pool.query(_marked([1, 2, 3]), gen), _marked([1, 2, 3]))
    assert int(pool.count) == 3
    out = pool.query(_marked([4, 5]), gen)
    assert out[0, 0, 0, 0] == 4 and int(pool.count) == 4  # the 4th fills the pool
    returned_old, seen = 0, 0
    stored_before = set(pool.images[:, 0, 0, 0].tolist())
    for k in range(100):
        new = [10.0 + 2 * k, 11.0 + 2 * k]
        out = pool.query(_marked(new), gen)[:, 0, 0, 0].tolist()
        stored = set(pool.images[:, 0, 0, 0].tolist())
        assert len(pool.images) == 4  # never more than its size
        for value, fresh in zip(out, new):
            seen += 1
            if value != fresh:  # an old fake went out and the new one took its place
                returned_old += 1
                assert value in stored_before | set(new)
        stored_before = stored
    assert 0.35 < returned_old / seen < 0.65  # half the time
    # Seeded: the same generator state gives the same mix.
    assert torch.equal(_pool_run(7), _pool_run(7)) and not torch.equal(_pool_run(7), _pool_run(8))


def _pool_run(seed: int) -> torch.Tensor:
    pool = HistoryPool(4, 1, 2)
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([pool.query(_marked([k, k + 0.5]), gen) for k in range(20)])[:, 0, 0, 0]


def test_a_pool_of_zero_passes_fakes_through():
    pool = HistoryPool(0, 1, 2)
    x = _marked([1, 2])
    assert torch.equal(pool.query(x, torch.Generator()), x)


def test_the_learning_rate_decays_linearly_to_zero_over_the_second_half():
    assert decay_factor(0, 100) == 1.0  # start
    assert decay_factor(49, 100) == 1.0 and decay_factor(50, 100) == 1.0  # middle
    assert decay_factor(75, 100) == pytest.approx(0.5)
    assert decay_factor(99, 100) == pytest.approx(0.02)  # the last step still learns a little
    assert decay_factor(100, 100) == 0.0 and decay_factor(150, 100) == 0.0  # end
    assert decay_factor(5, 0) == 1.0  # total unknown: no decay

    # The family applies it on top of the trainer's schedule, to both optimizers.
    model = _tiny()
    a = torch.rand(2, 3, 16, 16) * 2 - 1
    for step, want in ((0, 1.0), (3, 0.5)):
        ctx = StepContext(step, torch.Generator().manual_seed(step), lr_scale=1.0, total_steps=4)
        model.train_step(Batch(images=-a, sources=a), ctx)
        for opt in model.optimizers.values():
            assert opt.param_groups[0]["lr"] == pytest.approx(2e-4 * want)
        assert set(ctx.grad_norms) == {"g", "d"}  # the trainer still sees the norms
    off = _tiny(lr_decay=False)
    off.train_step(
        Batch(images=-a, sources=a), StepContext(3, torch.Generator(), lr_scale=1.0, total_steps=4)
    )
    assert off.optimizers["g"].param_groups[0]["lr"] == pytest.approx(2e-4)


def test_translation_has_no_noise_by_default_and_takes_a_direction():
    model = _tiny()
    x = torch.rand(1, 3, 12, 20) * 2 - 1
    a2b = model.sample(2, torch.Generator().manual_seed(1), image=x)
    assert a2b.shape == (2, 3, 12, 20)
    assert torch.equal(a2b, model.sample(2, torch.Generator().manual_seed(2), image=x))
    b2a = model.sample(1, torch.Generator(), image=x, direction="b2a")
    assert not torch.equal(a2b[:1], b2a)
    with pytest.raises(ValueError, match="a2b"):
        model.sample(1, torch.Generator(), image=x, direction="sideways")
    with pytest.raises(ValueError, match="input image"):
        model.sample(1, torch.Generator())
    with pytest.raises(ValueError, match="batch has no A images"):
        model.train_step(Batch(images=x), StepContext(0, torch.Generator()))


def test_cyclegan_shares_the_pix2pix_patchgan():
    model = _tiny()
    p2p = Pix2Pix(Pix2PixConfig(resolution=16, width=8))
    assert type(model.d_a) is type(p2p.discriminator)
    assert model.patch_size() == p2p.patch_size() == 34  # two layers at 16 px


def test_a_tiny_cyclegan_learns_to_invert_colours():
    """A = tiny patterns, B = their colour negatives, drawn apart: the cycle loss falls."""
    import numpy as np
    from helpers import tiny_pattern

    rng = np.random.default_rng(0)
    imgs = np.stack([tiny_pattern(i % 4, 16, rng) for i in range(16)])
    a_all = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    b_all = (
        -torch.from_numpy(np.stack([tiny_pattern(i % 4, 16, rng) for i in range(16)]))
        .permute(0, 3, 1, 2)
        .float()
        / 127.5
        + 1
    )
    model = _tiny(lr_g=2e-3, lr_d=2e-3)
    gen = torch.Generator().manual_seed(0)
    cycles = []
    for step in range(30):
        ia = torch.randint(0, 16, (4,), generator=gen)
        ib = torch.randint(0, 16, (4,), generator=gen)
        losses = model.train_step(
            Batch(images=b_all[ib], sources=a_all[ia]), StepContext(step, gen, total_steps=30)
        )
        cycles.append(float(losses["loss_cycle_a"] + losses["loss_cycle_b"]))
    first, last = sum(cycles[:5]) / 5, sum(cycles[-5:]) / 5
    assert last < 0.7 * first, (first, last)
