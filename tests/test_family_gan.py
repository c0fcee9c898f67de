"""The GAN family: DCGAN, the class-conditional GAN and WGAN-GP.

Penalties are checked on functions whose gradients are known; the models on tiny networks
and a tiny fixed dataset of flat-coloured images, where "learning" is measurable as the mean
colour of the generator's samples approaching the data's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from studio.models.base import Batch, Capability, GenerativeModel, StepContext
from studio.models.gan.cgan import ConditionalGAN
from studio.models.gan.common import gradient_penalty, r1_penalty
from studio.models.gan.dcgan import DCGAN
from studio.models.gan.wgan_gp import WGANGP

# Tiny, fast configurations (Config overrides) for the shared contract test. The trainer sets
# resolution and (for the conditional GAN) num_classes from the dataset.
TINY: dict[str, dict[str, Any]] = {
    "gan.dcgan": {"latent_dim": 8, "width": 8},
    "gan.cgan": {"latent_dim": 8, "width": 8},
    "gan.wgan_gp": {"latent_dim": 8, "width": 8, "n_critic": 2},
}
# Here: resolution 16, so the discriminators have a normalisation layer, and two classes.
BASE = {"resolution": 16, "num_classes": 2}

FAMILIES: dict[str, type[GenerativeModel]] = {
    "gan.dcgan": DCGAN,
    "gan.cgan": ConditionalGAN,
    "gan.wgan_gp": WGANGP,
}
KEYS = list(FAMILIES)

# Two flat colours (class 0 and class 1) plus a little pixel noise.
COLOURS = torch.tensor([[0.8, -0.6, -0.2], [-0.5, 0.3, 0.7]])


def make(key: str, seed: int = 0, **overrides: Any) -> GenerativeModel:
    torch.manual_seed(seed)
    cls = FAMILIES[key]
    model = cls(cls.Config.from_dict({**BASE, **TINY[key], **overrides}))
    model.configure_optimizers()
    return model


def colour_data(resolution: int, n: int = 32, classes: int = 2) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    images = COLOURS[labels][:, :, None, None] + 0.1 * torch.randn(
        n, 3, resolution, resolution, generator=g
    )
    return images.clamp(-1, 1), labels


def step(
    model: GenerativeModel, images: Tensor, labels: Tensor | None, i: int
) -> dict[str, Tensor]:
    model.train()
    return model.train_step(Batch(images, labels), StepContext(i, torch.Generator().manual_seed(i)))


def mean_colour(images: Tensor) -> Tensor:
    return images.mean(dim=(0, 2, 3))


# -- the penalties ----------------------------------------------------------------------------


def test_gradient_penalty_is_zero_for_a_1_lipschitz_critic_and_positive_for_a_steeper_one():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(8, 3, 4, 4, generator=g), torch.randn(8, 3, 4, 4, generator=g)
    eps = torch.rand(8, 1, 1, 1, generator=g)
    w = torch.randn(48, generator=g)
    w = w / w.norm()

    def linear(scale: float):
        return lambda x: x.flatten(1) @ (scale * w)

    def gp(critic) -> float:
        return float(gradient_penalty(critic, real, fake, eps).detach())

    assert gp(linear(1.0)) < 1e-10
    # The distance to a point has slope 1 everywhere (but there): also no penalty.
    centre = torch.full((1, 3, 4, 4), 5.0)
    assert gp(lambda x: (x - centre).flatten(1).norm(dim=1)) < 1e-10
    # Slope 3 everywhere: (3 - 1)^2 = 4; slope 0.5: 0.25.
    assert gp(linear(3.0)) == pytest.approx(4.0, rel=1e-5)
    assert gp(linear(0.5)) == pytest.approx(0.25, rel=1e-5)


def test_gradient_penalty_is_differentiable_in_the_critic_weights():
    critic = nn.Linear(12, 1)
    real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    gp = gradient_penalty(
        lambda x: critic(x.flatten(1)).squeeze(1), real, fake, torch.rand(4, 1, 1, 1)
    )
    gp.backward()
    assert critic.weight.grad is not None and float(critic.weight.grad.abs().sum()) > 0


def test_r1_penalty_on_known_functions():
    real = torch.randn(6, 3, 4, 4).requires_grad_(True)
    # D(x) = <w, x>: gradient w, so the penalty is |w|^2 for every image.
    w = torch.randn(48)
    penalty = r1_penalty(real.flatten(1) @ w, real).detach()
    assert float(penalty) == pytest.approx(float(w @ w), rel=1e-5)
    # D(x) = |x|^2 / 2: gradient x, so the penalty is the mean of |x|^2.
    expected = real.detach().flatten(1).pow(2).sum(1).mean()
    d = 0.5 * real.flatten(1).pow(2).sum(1)
    assert float(r1_penalty(d, real).detach()) == pytest.approx(float(expected), rel=1e-5)


def test_dcgan_with_r1_reports_it():
    model = make("gan.dcgan", r1_gamma=1.0)
    images, _ = colour_data(16, 8)
    out = step(model, images, None, 0)
    assert float(out["r1"]) > 0 and not out["r1"].requires_grad


# -- spectral norm -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_spectral_norm_keeps_discriminator_layers_near_unit_gain(key: str):
    model = make(key, spectral_norm=True, lr_g=1e-3, lr_d=1e-3)
    images, labels = colour_data(16, 16)
    for i in range(5):
        step(model, images, labels, i)
    model.eval()  # read the normalised weights without another power iteration
    wrapped = [m for m in model.discriminator.modules() if parametrize.is_parametrized(m, "weight")]
    assert len(wrapped) >= 3  # every convolution (and the class embedding)
    for m in wrapped:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.1  # measured within 0.05


# -- the conditional GAN -----------------------------------------------------------------------


def test_cgan_refuses_unlabelled_data():
    with pytest.raises(ValueError, match="subfolder"):
        ConditionalGAN(ConditionalGAN.Config.from_dict({**TINY["gan.cgan"], "num_classes": 0}))
    model = make("gan.cgan")
    images, _ = colour_data(16, 8)
    with pytest.raises(ValueError, match="subfolder"):
        step(model, images, None, 0)


def test_cgan_label_chooses_the_class():
    model = make("gan.cgan")
    assert Capability.CONDITIONAL in model.info.capabilities
    a = model.sample(4, torch.Generator().manual_seed(3), label=0)
    b = model.sample(4, torch.Generator().manual_seed(3), label=1)
    assert (a - b).abs().max() > 1e-4  # same noise, different class embedding
    # label None cycles through the classes: 0, 1, 0, 1.
    z = model.latent(4, torch.Generator().manual_seed(3))
    cycled = model.sample(4, torch.Generator().manual_seed(3))
    assert torch.equal(cycled, model.decode(z, torch.tensor([0, 1, 0, 1])))
    assert torch.equal(cycled, model.decode(z))
    for bad in (2, -1):
        with pytest.raises(ValueError, match="out of range"):
            model.sample(2, torch.Generator(), label=bad)


@pytest.mark.parametrize("key", ["gan.dcgan", "gan.wgan_gp"])
def test_unconditional_gans_refuse_a_label(key: str):
    with pytest.raises(ValueError, match="does not take label"):
        make(key).sample(2, torch.Generator(), label=0)


# -- WGAN-GP -----------------------------------------------------------------------------------


def test_wgan_critic_has_no_batch_norm_and_paper_defaults():
    model = make("gan.wgan_gp")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.discriminator.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.discriminator.modules())
    defaults = WGANGP.Config()
    assert (defaults.beta1, defaults.beta2, defaults.gp_lambda) == (0.0, 0.9, 10.0)
    assert model.optimizers["d"].param_groups[0]["betas"] == (0.0, 0.9)
    with pytest.raises(ValueError, match="layer(,| or) none"):
        make("gan.wgan_gp", critic_norm="batch")


# -- shared behaviour --------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_config_round_trips(key: str):
    config = FAMILIES[key].Config.from_dict({**BASE, **TINY[key]})
    assert FAMILIES[key].Config.from_dict(config.to_dict()) == config
    for f in dataclasses.fields(config):
        assert f.metadata.get("label"), f"{key}.{f.name} has no label"


@pytest.mark.parametrize("key", KEYS)
def test_train_step_returns_every_named_value_detached(key: str):
    model = make(key)
    images, labels = colour_data(16, 8)
    out = step(model, images, labels, 0)
    assert set(model.info.loss_names) <= set(out)
    for name, value in out.items():
        assert isinstance(value, Tensor) and value.dim() == 0, name
        assert not value.requires_grad, name
        assert torch.isfinite(value), name
    # The discriminator is trainable again after the generator's pass.
    assert all(p.requires_grad for p in model.discriminator.parameters())
    if key != "gan.wgan_gp":  # logistic GANs report probabilities
        assert 0 <= float(out["d_real"]) <= 1 and 0 <= float(out["d_fake"]) <= 1


@pytest.mark.parametrize("key", KEYS)
def test_same_seed_same_samples_and_sampling_changes_no_state(key: str):
    model = make(key)
    images, labels = colour_data(16, 8)
    step(model, images, labels, 0)  # BatchNorm running stats now differ from their init
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = model.sample(5, torch.Generator().manual_seed(7))
    b = model.sample(5, torch.Generator().manual_seed(7))
    c = model.sample(5, torch.Generator().manual_seed(8))
    assert a.shape == (5, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model.generator.training  # modes restored


@pytest.mark.parametrize("key", KEYS)
def test_save_load_round_trip(key: str, tmp_path):
    model = make(key, spectral_norm=True)
    images, labels = colour_data(16, 8)
    step(model, images, labels, 0)
    model.save(tmp_path / "m")
    loaded = type(model).load(tmp_path / "m")
    assert loaded.config == model.config
    a = model.sample(4, torch.Generator().manual_seed(1))
    assert torch.equal(a, loaded.sample(4, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("key", KEYS)
def test_train_steps_replay_exactly(key: str):
    images, labels = colour_data(16, 8)
    runs = []
    for _ in range(2):
        model = make(key, seed=5)
        runs.append([step(model, images, labels, i) for i in range(3)])
    for first, second in zip(*runs):
        assert all(torch.equal(first[k], second[k]) for k in first)


# -- learning on a tiny dataset ------------------------------------------------------------------
# GAN losses do not simply fall, so these watch the samples instead: at the start the
# generator paints grey (mean colour ~0, error ~1.02); after a few hundred steps the mean
# colour of 64 samples must sit close to the data's. Bounds are on error / starting error,
# measured with these exact settings over init seeds 0-5 (worst case in each comment).


def colour_error(model: GenerativeModel, target: Tensor, **conditions: Any) -> float:
    samples = model.sample(64, torch.Generator().manual_seed(123), **conditions)
    return float((mean_colour(samples) - target).norm())


def train_for(model: GenerativeModel, images: Tensor, labels: Tensor | None, steps: int) -> None:
    for i in range(steps):
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(i))[:16]
        step(model, images[idx], None if labels is None else labels[idx], i)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "overrides", "steps", "bound"),
    [
        ("gan.dcgan", {"lr_g": 1e-3, "lr_d": 1e-3}, 300, 0.35),  # worst 0.15
        ("gan.dcgan", {"lr_g": 1e-3, "lr_d": 1e-3, "r1_gamma": 1.0}, 300, 0.25),  # worst 0.07
        ("gan.wgan_gp", {"lr_g": 1e-3, "lr_d": 1e-3}, 200, 0.15),  # worst 0.04
    ],
)
def test_unconditional_gans_learn_the_data_colour(key, overrides, steps, bound):
    images, _ = colour_data(8, classes=1)
    model = make(key, resolution=8, **overrides)
    target = mean_colour(images)
    start = colour_error(model, target)
    train_for(model, images, None, steps)
    assert colour_error(model, target) < bound * start


@pytest.mark.slow
def test_cgan_learns_each_class_colour():
    # Width 16: at width 8 a class's units can all die (ReLU) and that class never learns.
    # The colours of the two classes differ a lot, so this also checks the label is obeyed.
    images, labels = colour_data(8)
    model = make("gan.cgan", resolution=8, width=16, lr_g=1e-3, lr_d=1e-3)
    targets = [mean_colour(images[labels == c]) for c in (0, 1)]
    start = [colour_error(model, targets[c], label=c) for c in (0, 1)]
    train_for(model, images, labels, 300)
    for c in (0, 1):
        assert colour_error(model, targets[c], label=c) < 0.35 * start[c]  # worst 0.17


def _points(loss_d: float, d_real: float, n: int) -> list[dict[str, float]]:
    return [{"loss_d": loss_d, "loss_g": 6.0, "d_real": d_real, "d_fake": 0.01}] * n


def test_a_discriminator_that_has_won_gets_advice_naming_what_to_change():
    for family in (DCGAN, ConditionalGAN):
        hints = family.diagnose(_points(0.02, 0.98, 6))
        assert len(hints) == 1
        text = hints[0]
        assert "discriminator has won" in text
        assert "learning rate" in text and "WGAN-GP" in text and "spectral norm" in text
        assert "Augmentation to adaptive" in text  # the setting, as the form names it
    # Healthy, too short, or won only lately: nothing to say.
    assert DCGAN.diagnose(_points(1.2, 0.6, 10)) == []
    assert DCGAN.diagnose(_points(0.02, 0.98, 3)) == []
    assert DCGAN.diagnose(_points(0.02, 0.98, 4) + _points(1.0, 0.6, 1)) == []
    assert DCGAN.diagnose([]) == []
    # A critic's score is no probability; the other families have no diagnosis.
    assert WGANGP.diagnose(_points(0.02, 0.98, 10)) == []
    assert GenerativeModel.diagnose(_points(0.02, 0.98, 10)) == []
