"""The VAE family: ConvVAE, β-VAE, conditional VAE and VQ-VAE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from studio.models.base import Batch, GenerativeModel, StepContext
from studio.models.vae.beta import BetaVAE
from studio.models.vae.common import (
    cb_mean,
    discretized_cb_log_prob,
    discretized_gaussian_log_prob,
    gaussian_kl,
    reparameterise,
)
from studio.models.vae.conv import ConvVAE
from studio.models.vae.cvae import ConditionalVAE
from studio.models.vae.vqvae import VQVAE

# Config overrides for a tiny, fast model of each family (also used by the contract test).
TINY = {
    "vae.conv": {"resolution": 8, "latent_dim": 4, "width": 8},
    "vae.beta": {"resolution": 8, "latent_dim": 4, "width": 8, "kl_warmup_steps": 50},
    "vae.cvae": {"resolution": 8, "latent_dim": 4, "width": 8, "num_classes": 2},
    "vae.vqvae": {
        "resolution": 8,
        "codebook_size": 16,
        "embedding_dim": 4,
        "downsample": 2,
        "width": 8,
        "restart_after": 20,
    },
}
FAMILIES: dict[str, type[GenerativeModel]] = {
    "vae.conv": ConvVAE,
    "vae.beta": BetaVAE,
    "vae.cvae": ConditionalVAE,
    "vae.vqvae": VQVAE,
}
GAUSSIAN = ("vae.conv", "vae.beta", "vae.cvae")


def build(key: str, seed: int = 0, **overrides) -> GenerativeModel:
    cls = FAMILIES[key]
    torch.manual_seed(seed)
    model = cls(cls.Config.from_dict({**TINY[key], **overrides}))
    model.configure_optimizers()
    return model


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """16 images on the 8-bit grid: four fixed random pictures, each four times."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    images = ((base.repeat(4, 1, 1, 1) + 1) * 127.5).round() / 127.5 - 1
    return images, torch.arange(16) % 2


def step(model: GenerativeModel, s: int, images=None, labels=None) -> dict[str, torch.Tensor]:
    if images is None:
        images, labels = dataset()
    model.train()
    ctx = StepContext(step=s, generator=torch.Generator().manual_seed(1000 + s))
    return model.train_step(Batch(images, labels), ctx)


# -- the pieces ----------------------------------------------------------------------------


def test_kl_is_nonnegative_and_zero_at_the_prior():
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(64, 8, generator=g) * 3
    logvar = torch.randn(64, 8, generator=g) * 3
    assert (gaussian_kl(mean, logvar) >= 0).all()
    zeros = torch.zeros(4, 8)
    assert torch.equal(gaussian_kl(zeros, zeros), torch.zeros(4, 8))


def test_reparameterisation_gradient_reaches_the_encoder():
    mean = torch.zeros(3, 5, requires_grad=True)
    logvar = torch.zeros(3, 5, requires_grad=True)
    eps = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    reparameterise(mean, logvar, eps).square().sum().backward()
    assert mean.grad is not None and mean.grad.abs().sum() > 0
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0

    model = build("vae.conv")
    images, _ = dataset()
    m, lv = model.posterior(images)
    z = reparameterise(m, lv, torch.randn(m.shape, generator=torch.Generator().manual_seed(0)))
    (-model.log_px(images, model.decoder(z)).mean()).backward()  # reconstruction term only
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("mean,sigma", [(0.3, 0.1), (-0.99, 1e-3), (0.0, 5.0), (1.5, 0.02)])
def test_discretised_gaussian_is_a_distribution_over_256_levels(mean, sigma):
    levels = torch.arange(256) / 127.5 - 1
    lp = discretized_gaussian_log_prob(
        levels, torch.full_like(levels, mean), torch.tensor(math.log(sigma))
    )
    assert (lp <= 0).all()
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("logit", [0.0, 0.004, 3.0, -40.0, 80.0])
def test_discretised_continuous_bernoulli_is_a_distribution_over_256_levels(logit):
    levels = torch.arange(256) / 127.5 - 1
    lp = discretized_cb_log_prob(levels, torch.full_like(levels, logit))
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-4)
    assert 0 <= cb_mean(torch.tensor(logit)).item() <= 1


# -- VQ-VAE codebook -----------------------------------------------------------------------------


def test_vqvae_straight_through_gradient_reaches_the_encoder():
    model = build("vae.vqvae")
    images, _ = dataset()
    out, _, _, _ = model(images)
    F.mse_loss(out, images).backward()  # reconstruction only: no commitment term
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_ema_update_moves_codes_toward_their_assigned_vectors():
    model = build("vae.vqvae", decay=0.9)
    before = model.codebook.clone()
    target = torch.full((5, 4), 2.0)
    idx = torch.full((5,), 3, dtype=torch.long)
    counts = model.ema_update(target, idx)
    assert counts[3] == 5 and counts.sum() == 5
    assert (model.codebook[3] - 2.0).norm() < (before[3] - 2.0).norm()
    for _ in range(100):
        model.ema_update(target, idx)
    assert torch.allclose(model.codebook[3], target[0], atol=1e-2)
    # Unused codes keep their place.
    assert torch.allclose(model.codebook[5], before[5])


def test_dead_code_is_restarted_from_encoder_outputs():
    model = build("vae.vqvae", restart_after=3)
    model.idle.zero_()  # no start-up restarts: only the code we kill
    far = torch.full((4,), 1e3)
    model.codebook[0] = far
    model.ema_sum[0] = far
    restarts = [step(model, s)["restarts"] for s in range(3)]
    assert float(restarts[-1]) >= 1
    assert model.codebook[0].norm() < 100  # now sits among the encoder outputs
    with torch.no_grad():
        z = model._flatten(model.encoder(dataset()[0]))
    assert torch.cdist(model.codebook[:1], z).min() < 1.0


def test_vqvae_samples_follow_the_usage_histogram():
    model = build("vae.vqvae")
    model.ema_count.zero_()
    model.ema_count[7] = 10.0
    idx = model.latent(3, torch.Generator().manual_seed(0))
    assert idx.shape == (3, 4, 4)
    assert (idx == 7).all()
    hot = model.latent(64, torch.Generator().manual_seed(0), temperature=1e6)
    assert len(hot.unique()) > 8  # a huge temperature flattens it towards uniform
    assert model.decode(idx).shape == (3, 3, 8, 8)


# -- β warm-up, the conditional model ----------------------------------------------------------


def test_beta_warmup_schedule():
    model = build("vae.beta", beta=4.0, kl_warmup_steps=100)
    assert [model.kl_weight(s) for s in (0, 25, 50, 100, 5000)] == [0.0, 1.0, 2.0, 4.0, 4.0]
    assert build("vae.conv", beta=1.0).kl_weight(0) == 1.0
    assert build("vae.beta", kl_warmup_steps=0, beta=3.0).kl_weight(0) == 3.0
    out = step(model, 0)  # weight 0: the loss is the reconstruction term alone
    assert torch.equal(out["loss"], out["recon"])
    out = step(model, 50)
    assert out["loss"].item() == pytest.approx(
        out["recon"].item() + 2.0 * out["kl"].item(), rel=1e-5
    )


def test_cvae_refuses_unlabelled_data():
    with pytest.raises(ValueError, match="subfolder"):
        build("vae.cvae", num_classes=0)
    model = build("vae.cvae")
    with pytest.raises(ValueError, match="label"):
        step(model, 0, dataset()[0], None)


def test_cvae_samples_the_requested_class():
    model = build("vae.cvae", num_classes=3)
    z = model.latent(4, torch.Generator().manual_seed(5))
    for label in (0, 2):
        got = model.sample(4, torch.Generator().manual_seed(5), label=label)
        want = model.decode(z, torch.full((4,), label))
        assert torch.equal(got, want)
    cycled = model.sample(4, torch.Generator().manual_seed(5))
    assert torch.equal(cycled, model.decode(z, torch.tensor([0, 1, 2, 0])))
    assert not torch.equal(
        model.decode(z, torch.zeros(4, dtype=torch.long)), model.decode(z, torch.full((4,), 2))
    )
    with pytest.raises(ValueError, match="out of range"):
        model.sample(2, torch.Generator().manual_seed(0), label=3)
    with pytest.raises(ValueError, match="guidance"):
        model.sample(2, torch.Generator().manual_seed(0), guidance=2.0)


# -- every model ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(FAMILIES))
def test_config_round_trip_and_step_outputs(key):
    model = build(key)
    cls = FAMILIES[key]
    assert cls.Config.from_dict(model.config.to_dict()) == model.config
    out = step(model, 0)
    for name, value in out.items():
        assert name in cls.info.loss_names
        assert value.ndim == 0 and not value.requires_grad and torch.isfinite(value)
    if key in GAUSSIAN:
        assert {"loss", "recon", "kl", "kl_dim_00", "kl_dim_03"} <= set(out)
        assert "kl_dim_04" not in out  # latent_dim 4
    else:
        assert set(out) == {"loss", "recon", "commit", "perplexity", "usage", "restarts"}


@pytest.mark.parametrize("key", list(FAMILIES))
def test_same_seed_same_samples_and_sampling_changes_nothing(key):
    model = build(key)
    step(model, 0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = model.sample(4, torch.Generator().manual_seed(3))
    b = model.sample(4, torch.Generator().manual_seed(3))
    c = model.sample(4, torch.Generator().manual_seed(4))
    assert a.shape == (4, 3, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.training


@pytest.mark.parametrize("key", list(FAMILIES))
def test_save_load_round_trip(key, tmp_path):
    model = build(key)
    for s in range(3):
        step(model, s)
    model.save(tmp_path / "m")
    loaded = FAMILIES[key].load(tmp_path / "m")
    assert loaded.config == model.config
    gen = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    assert torch.equal(model.sample(4, gen()), loaded.sample(4, gen()))


@pytest.mark.parametrize("key", list(FAMILIES))
def test_encode_decode_shapes(key):
    model = build(key)
    images, labels = dataset()
    extra = {"labels": labels[:5]} if key == "vae.cvae" else {}
    z = model.encode(images[:5], **extra)
    if key in GAUSSIAN:
        assert z.shape == (5, 4)
    else:
        assert z.shape == (5, 4, 4, 4)
    out = model.decode(z, **extra)
    assert out.shape == (5, 3, 8, 8) and out.min() >= -1 and out.max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "key,bound",
    # Measured last/first loss ratios at 250 steps over seeds 0-2: conv, beta and cvae
    # 0.16-0.18, vqvae 0.04-0.10.
    [("vae.conv", 0.35), ("vae.beta", 0.35), ("vae.cvae", 0.35), ("vae.vqvae", 0.25)],
)
def test_each_model_learns(key, bound):
    model = build(key)
    losses = [float(step(model, s)["loss"]) for s in range(250)]
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last < bound * first, (first, last)


@pytest.mark.slow
def test_continuous_bernoulli_learns_binary_images():
    # Measured ratio 0.30 over seeds 0-2 (the continuous Bernoulli suits near-binary images).
    images = torch.where(dataset()[0] > 0, 1.0, -1.0)
    model = build("vae.conv", likelihood="bernoulli")
    losses = [float(step(model, s, images, None)["loss"]) for s in range(250)]
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    assert float(model.bits_per_dim(images).mean()) < 4.0  # measured about 3


@pytest.mark.parametrize(
    "key,likelihood", [(k, "gaussian") for k in GAUSSIAN] + [("vae.conv", "bernoulli")]
)
def test_bits_per_dim_is_a_finite_positive_bound(key, likelihood):
    model = build(key, likelihood=likelihood)
    images, labels = dataset()
    for s in range(5):
        step(model, s)
    bpd = model.bits_per_dim(images)
    assert bpd.shape == (16,)
    assert torch.isfinite(bpd).all() and (bpd > 0).all()
    assert torch.equal(bpd, model.bits_per_dim(images))  # fixed evaluation noise
    ll = model.log_likelihood(images)
    assert torch.allclose(bpd, -ll / (3 * 8 * 8 * math.log(2)))
    if key == "vae.cvae":
        # A marginal over classes is at most log K above the best single class's bound.
        per_class = torch.stack(
            [model.log_likelihood(images, torch.full((16,), y)) for y in range(2)]
        )
        assert (ll <= per_class.max(0).values + 1e-4).all()
        assert (ll >= per_class.max(0).values - math.log(2) - 1e-4).all()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="likelihood"):
        build("vae.conv", likelihood="poisson")
    with pytest.raises(ValueError, match="unknown settings"):
        build("vae.conv", codebook_size=3)
    with pytest.raises(ValueError, match="temperature"):
        build("vae.conv").sample(2, torch.Generator().manual_seed(0), temperature=0)
