"""Differentiable augmentation of what a GAN's discriminator sees, and its adaptive
probability (studio.models.gan.augment), for every GAN family."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_MODELS, make_tiny_dataset, tiny_train_config
from torch import Tensor, nn

from studio.core.jobs import CancelToken, run_sync
from studio.engine.train import train_job
from studio.models.base import Batch, GenerativeModel, StepContext
from studio.models.gan.augment import AugmentPipe, augment, resolve_mode
from studio.models.registry import get_family

GANS = ["gan.dcgan", "gan.cgan", "gan.wgan_gp", "gan.stylegan", "hybrid.vaegan"]


def tiny_model(key: str) -> GenerativeModel:
    """``key``'s tiny model at 16 px with two classes, its optimizers configured."""
    family = get_family(key)
    torch.manual_seed(0)
    model = family(
        family.Config.from_dict({**TINY_MODELS[key], "resolution": 16, "num_classes": 2})
    )
    model.configure_optimizers()
    return model


def images(n: int = 8, size: int = 16, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_augmentation_changes_images_only_when_drawn():
    x = images()
    same = augment(x, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(same, x)  # p = 0: nothing applied
    changed = augment(x, 1.0, torch.Generator().manual_seed(1))
    assert changed.shape == x.shape
    assert all(not torch.equal(a, b) for a, b in zip(changed, x))
    # Cutout greys a square of half the size (a quarter of the pixels, less at the border);
    # a shift of up to 2 px greys the border it uncovers.
    grey = (changed == 0).all(dim=1).flatten(1).float().mean(1)
    assert (grey > 0.05).all() and (grey <= 0.25 + 1 - (14 / 16) ** 2).all()
    again = augment(x, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(changed, again)  # the step's generator decides everything


def test_gradients_reach_the_generator_through_the_augmentation():
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(4, 3 * 8 * 8), nn.Tanh())
    fake = generator(torch.randn(6, 4)).view(6, 3, 8, 8)
    seen = augment(fake, 1.0, torch.Generator().manual_seed(3))
    # A stand-in discriminator: any function of what it sees.
    (seen * torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8)).sum().backward()
    grads = [p.grad for p in generator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_adaptive_probability_rises_while_d_overfits_and_falls_when_it_does_not():
    pipe = AugmentPipe("adaptive", 0.0, target=0.6, kimg=1, interval=4)
    history = []
    for step in range(40):  # an overfitting D: every real called real, sign = +1
        pipe.observe(torch.ones(16), step)
        history.append(float(pipe.p))
    assert history[0] == 0.0 and history[-1] > 0.5
    assert all(b >= a for a, b in zip(history, history[1:]))
    assert float(pipe.signal) == pytest.approx(1.0)
    top = float(pipe.p)
    for step in range(40, 60):  # D unsure of the reals (r_t = 0 < 0.6): p goes down
        pipe.observe(torch.tensor([1.0, -1.0] * 8), step)
    assert float(pipe.p) < top
    # 16 reals x 4 steps per adjustment over 1,000 images: 0.064 per adjustment.
    assert top == pytest.approx(10 * 64 / 1000)


def test_fixed_and_off_modes_do_not_adapt():
    fixed = AugmentPipe("fixed", 0.3, target=0.6, kimg=1)
    off = AugmentPipe("off", 0.3, target=0.6, kimg=1)
    for step in range(16):
        fixed.observe(torch.ones(8), step)
        off.observe(torch.ones(8), step)
    assert float(fixed.p) == pytest.approx(0.3) and float(off.p) == 0.0
    x = images()
    assert off(x, torch.Generator()) is x


def test_auto_is_adaptive_below_five_thousand_images():
    assert resolve_mode("auto", 200) == "adaptive"
    assert resolve_mode("auto", 4999) == "adaptive"
    assert resolve_mode("auto", 5000) == "off"
    assert resolve_mode("auto", None) == "off"  # no folder known: as before this option
    assert resolve_mode("fixed", 200) == "fixed"


class _Overfit(nn.Module):
    """A discriminator that calls everything real with confidence: the overfitting signal
    E[sign D(real)] is 1 at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(4.0))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return x.flatten(1).mean(1) * 0 + self.bias


@pytest.mark.parametrize("key", ["gan.dcgan", "gan.stylegan"])
def test_each_gan_raises_p_on_an_always_overfitting_discriminator(key):
    model = tiny_model(key)
    model.config.ada_kimg = 1
    model.prepare_for_data(200)  # auto -> adaptive
    assert model.augment_pipe.mode == "adaptive"
    model.discriminator = _Overfit()
    model.configure_optimizers()
    x, labels = images(8), torch.arange(8) % 2
    ps = []
    for i in range(12):
        out = model.train_step(Batch(x, labels), StepContext(i, torch.Generator().manual_seed(i)))
        ps.append(float(out["augment_p"]))
    assert ps[0] == 0.0 and ps[-1] > ps[3] > 0.0
    assert float(out["ada_rt"]) == pytest.approx(1.0)


@pytest.mark.parametrize("key", GANS)
def test_every_gan_takes_the_augmentation_and_replays_exactly(key):
    x, labels = images(8), torch.arange(8) % 2
    runs = []
    for _ in range(2):
        model = tiny_model(key)
        model.config.augment = "fixed"
        model.prepare_for_data(10_000)  # "fixed" whatever the folder
        runs.append(
            [
                model.train_step(Batch(x, labels), StepContext(i, torch.Generator().manual_seed(i)))
                for i in range(2)
            ]
        )
    for first, second in zip(*runs):
        assert float(first["augment_p"]) == 1.0
        assert all(torch.equal(first[k], second[k]) for k in first)
    # Augmentation changes what D sees, so the same seed trains differently with it off.
    plain = tiny_model(key)
    out = plain.train_step(Batch(x, labels), StepContext(0, torch.Generator().manual_seed(0)))
    assert float(out["augment_p"]) == 0.0 and not torch.equal(out["loss_d"], runs[0][0]["loss_d"])


def test_adaptive_state_is_kept_in_checkpoints():
    model = tiny_model("gan.dcgan")
    model.prepare_for_data(100)
    model.augment_pipe.p = torch.tensor(0.37)
    state = model.extra_state()
    fresh = tiny_model("gan.dcgan")
    fresh.prepare_for_data(100)
    fresh.load_extra_state(state)
    assert float(fresh.augment_pipe.p) == pytest.approx(0.37)


def test_the_training_log_says_when_auto_turns_augmentation_on(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=12, size=16, classes=2)
    lines: list[str] = []
    config = tiny_train_config("gan.dcgan", data, steps=1)
    job = train_job(tmp_path / "run", CancelToken(), config)
    out = run_sync(job, on_progress=lambda p: lines.append(p.message or ""))
    assert out.ok, out.error
    note = [line for line in lines if line.startswith("Augmentation:")]
    assert note and "adaptive (auto: the folder has 12 images, fewer than 5,000)" in note[0]
    assert "augment_p" in out.result.metrics


@pytest.mark.parametrize("key", GANS)
def test_the_generator_step_sees_its_fakes_through_the_augmentation(key):
    """What issue 17's collapse hunt checked: every image D sees, real or fake, in both
    networks' updates, goes through the same augmentation, and the generator's own update
    differentiates through it (no detach on the way)."""
    model = tiny_model(key)
    model.config.augment = "fixed"
    model.prepare_for_data(100)
    x, labels = images(8), torch.arange(8) % 2
    seen: list[tuple[bool, bool]] = []  # (through the augmentation at p = 1, G gets gradients)
    see = model.see
    g_params = [p for p in model.generator.parameters() if p.requires_grad]

    def recording_see(images_in: Tensor, generator: torch.Generator) -> Tensor:
        out = see(images_in, generator)
        reaches_g = False
        if out.requires_grad:
            grads = torch.autograd.grad(
                out.square().sum(), g_params, retain_graph=True, allow_unused=True
            )
            reaches_g = any(g is not None and g.abs().sum() > 0 for g in grads)
        seen.append(
            (float(model.augment_pipe.p) == 1.0 and not torch.equal(out, images_in), reaches_g)
        )
        return out

    model.see = recording_see
    model.train_step(Batch(x, labels), StepContext(0, torch.Generator().manual_seed(0)))
    assert len(seen) >= 3 and all(augmented for augmented, _ in seen)
    assert any(reaches_g for _, reaches_g in seen)  # the generator's update
    assert not all(reaches_g for _, reaches_g in seen)  # D's update on reals and detached fakes
