"""The flow family: exact invertibility, exact log-determinants, actnorm, sampling, persistence,
bits/dim constants and learning, for NICE, RealNVP and Glow."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from studio.models.base import Batch, Capability, StepContext
from studio.models.flow import FlowModel
from studio.models.flow.glow import Glow
from studio.models.flow.layers import (
    ActNorm,
    Coupling,
    DiagonalScale,
    FlowLayer,
    InvConv1x1,
    Split,
    Squeeze,
)
from studio.models.flow.nice import NICE
from studio.models.flow.realnvp import RealNVP

# Tiny, fast settings of each model, for the shared contract test (any resolution 8 or 16).
TINY = {
    "flow.nice": {"couplings": 4, "hidden": 16, "warmup_steps": 10},
    "flow.realnvp": {"scales": 2, "couplings": 2, "hidden": 16, "warmup_steps": 10},
    "flow.glow": {"levels": 2, "steps": 2, "hidden": 16, "warmup_steps": 10},
}
MODELS: dict[str, type[FlowModel]] = {"flow.nice": NICE, "flow.realnvp": RealNVP, "flow.glow": Glow}
KEYS = list(MODELS)


def make(key: str, resolution: int = 8, channels: int = 3, **overrides: object) -> FlowModel:
    cls = MODELS[key]
    config = cls.Config.from_dict(
        {**TINY[key], "resolution": resolution, "channels": channels, **overrides}
    )
    return cls(config)


def perturb(module: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> None:
    """Move every parameter off its (often identity) initial value, so the checks bite."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def images8(n: int, channels: int = 3, resolution: int = 8, seed: int = 0) -> torch.Tensor:
    """Random 8-bit images as [-1, 1] floats."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, channels, resolution, resolution), generator=gen)
    return pixels.float() / 127.5 - 1


def ctx(step: int) -> StepContext:
    return StepContext(step=step, generator=torch.Generator().manual_seed(1234 + step))


def brute_logdet(fn, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """log|det J| of a map of one (1 x ...) tensor, from the full Jacobian."""
    jac = jacobian(lambda v: fn(v.reshape(x.shape)).flatten(), x.flatten())
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0
    return logabs


# -- layers -----------------------------------------------------------------------------------

LAYERS = {
    "squeeze": lambda: Squeeze(),
    "additive-checkerboard": lambda: Coupling(2, 8, "checkerboard", 0, affine=False),
    "additive-channel": lambda: Coupling(2, 8, "channel", 1, affine=False),
    "affine-checkerboard-tanh": lambda: Coupling(2, 8, "checkerboard", 1, affine=True),
    "affine-channel-tanh": lambda: Coupling(2, 8, "channel", 0, affine=True),
    "affine-channel-sigmoid": lambda: Coupling(2, 8, "channel", 1, True, scale="sigmoid"),
    "actnorm": lambda: ActNorm(2),
    "invconv-lu": lambda: InvConv1x1(2),
    "diagonal-scale": lambda: DiagonalScale((2, 4, 4)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_inverse_and_logdet_match_brute_force(name: str) -> None:
    torch.manual_seed(0)
    layer: FlowLayer = LAYERS[name]().double().eval()
    perturb(layer)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    y, logdet = layer(x, zero)
    assert torch.allclose(layer.inverse(y), x, atol=1e-10)
    expected = brute_logdet(lambda v: layer(v, zero)[0], x)
    assert logdet.item() == pytest.approx(expected.item(), abs=1e-8)
    if name.startswith("affine") or name in ("actnorm", "invconv-lu", "diagonal-scale"):
        assert abs(expected.item()) > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("learned", [True, False])
def test_split_inverse_and_logdet(learned: bool) -> None:
    torch.manual_seed(0)
    split = Split(4, learned).double()
    perturb(split)
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    kept, eps, logdet = split(x, zero)
    assert kept.shape == eps.shape == (1, 2, 2, 2)
    assert torch.allclose(split.inverse(kept, eps), x, atol=1e-10)
    expected = brute_logdet(lambda v: torch.cat(split(v, zero)[:2], dim=1), x)
    assert logdet.item() == pytest.approx(expected.item(), abs=1e-8)


def test_actnorm_data_dependent_init() -> None:
    layer = ActNorm(3)
    x = torch.randn(8, 3, 4, 4) * torch.tensor([0.1, 2.0, 5.0])[:, None, None] + 3.0
    assert not layer.is_initialized()
    layer.eval()
    y, _ = layer(x, torch.zeros(8))
    assert not layer.is_initialized() and torch.equal(y, x)  # eval never initialises
    layer.train()
    y, _ = layer(x, torch.zeros(8))
    assert bool(layer.initialized)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    loc = layer.loc.detach().clone()
    layer(x * 7 + 1, torch.zeros(8))  # a later batch does not re-initialise
    assert torch.equal(layer.loc.detach(), loc)


def test_invconv_lu_inverse() -> None:
    torch.manual_seed(0)
    conv = InvConv1x1(6).double()
    perturb(conv, 0.3)
    w = conv.weight()
    assert torch.allclose(torch.linalg.inv(w) @ w, torch.eye(6, dtype=torch.float64), atol=1e-10)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    y, logdet = conv(x, torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(conv.inverse(y), x, atol=1e-10)
    assert torch.allclose(logdet, 9 * torch.linalg.slogdet(w)[1].expand(2))
    # P and the signs are fixed buffers (saved); L, U and log|s| are what the optimizer moves.
    assert {n for n, _ in conv.named_buffers()} == {"perm", "sign_s"}
    assert {n for n, _ in conv.named_parameters()} == {"lower", "upper", "log_s"}


# -- whole models ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_whole_model_logdet_and_inverse(key: str) -> None:
    torch.manual_seed(0)
    model = make(key, resolution=4, channels=1).double().eval()
    perturb(model, 0.1)
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    z, logdet = model.flow(x)
    assert z.shape == (1, 16)
    assert torch.allclose(model.flow.inverse(z).reshape(x.shape), x, atol=1e-10)
    expected = brute_logdet(lambda v: model.flow(v)[0], x)
    assert logdet.item() == pytest.approx(expected.item(), abs=1e-8)


@pytest.mark.parametrize("key", KEYS)
def test_encode_decode_round_trip(key: str) -> None:
    torch.manual_seed(0)
    model = make(key).double()
    perturb(model, 0.05)
    images = images8(4)
    z = model.encode(images)
    assert z.shape == (4, 3 * 8 * 8)
    assert torch.allclose(model.decode(z).float(), images, atol=1e-4)
    model32 = make(key)  # float32 too, after moving off the identity
    perturb(model32, 0.05)
    assert torch.allclose(model32.decode(model32.encode(images)), images, atol=1e-4)


@pytest.mark.parametrize("key", KEYS)
def test_uniform_noise_costs_about_8_bits_at_init(key: str) -> None:
    """At init every flow is the identity up to a rotation (zero-initialised coupling nets,
    priors and scales; random orthogonal 1x1 convs; actnorm not yet initialised), so its
    density is a unit Gaussian on x = (u - 1/2) * sqrt(12). On uniform noise that costs
    8 bits (the 256 levels) + 0.5 * log2(2 pi e / 12) = 0.2546 bits: the price of fitting a
    uniform with a Gaussian of equal variance. Per image (D = 192) the mean of x^2 has std
    sqrt(0.8 / 192) ~ 0.065 nats, i.e. ~0.047 bits, so the 64-image mean sits within ~0.006
    bits; 0.03 is 5 sigma. Wrong constants (log 256, sqrt(12), 2 pi) miss by far more.
    """
    model = make(key)
    noise = images8(64, seed=1)
    bpd = model.bits_per_dim(noise)
    expected = 8 + 0.5 * math.log2(2 * math.pi * math.e / 12)
    assert bpd.shape == (64,)
    assert bpd.mean().item() == pytest.approx(expected, abs=0.03)
    assert (bpd - expected).abs().max().item() < 0.25
    ll = model.log_likelihood(noise)
    assert torch.allclose(bpd, -ll / (192 * math.log(2)))

    # Exactly, without sampling noise: 16 x 16 grey images holding each of the 256 levels once.
    # Midpoints give mean x^2 = 1 - 1/256^2, so the cost is known to float precision; this
    # catches even log 255 for log 256 (0.0056 bits).
    model = make(key, resolution=16, channels=1)
    gen = torch.Generator().manual_seed(2)
    levels = torch.stack([torch.randperm(256, generator=gen) for _ in range(4)])
    every_level = (levels.float() / 127.5 - 1).reshape(4, 1, 16, 16)
    mean_sq = 1 - 1 / 256**2
    exact = 8 + (0.5 * mean_sq + 0.5 * math.log(2 * math.pi) - math.log(12) / 2) / math.log(2)
    assert torch.allclose(model.bits_per_dim(every_level), torch.full((4,), exact), atol=1e-4)


@pytest.mark.parametrize("key", KEYS)
def test_sampling(key: str) -> None:
    torch.manual_seed(0)
    model = make(key)
    model.configure_optimizers()
    model.train()
    model.train_step(Batch(images8(8)), ctx(0))  # leaves the identity (and inits actnorm)
    perturb(model, 0.02)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = model.sample(5, torch.Generator().manual_seed(7))
    b = model.sample(5, torch.Generator().manual_seed(7))
    c = model.sample(5, torch.Generator().manual_seed(8))
    assert a.shape == (5, 3, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    zero = model.sample(3, torch.Generator().manual_seed(7), temperature=0.0)
    assert torch.equal(zero, model.decode(torch.zeros(3, 192)))
    cool = model.sample(5, torch.Generator().manual_seed(7), temperature=0.5)
    assert (cool - zero[:1]).abs().mean() < (a - zero[:1]).abs().mean()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # sampling changes no state
    with pytest.raises(ValueError, match="temperature"):
        model.sample(1, torch.Generator(), temperature=-1.0)
    with pytest.raises(ValueError):
        model.sample(1, torch.Generator(), label=0)


@pytest.mark.parametrize("key", KEYS)
def test_save_load_round_trip(key: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = make(key)
    model.configure_optimizers()
    model.train()
    for step in range(3):
        out = model.train_step(Batch(images8(8, seed=step)), ctx(step))
    assert set(out) == set(model.info.loss_names)
    assert all(v.shape == () and not v.requires_grad for v in out.values())
    model.save(tmp_path)
    loaded = type(model).load(tmp_path)
    assert loaded.config == model.config
    assert type(model).Config.from_dict(model.config.to_dict()) == model.config
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(model.sample(4, gen.manual_seed(3)), loaded.sample(4, gen.manual_seed(3)))
    images = images8(4, seed=9)
    assert torch.equal(model.bits_per_dim(images), loaded.bits_per_dim(images))


def test_glow_actnorm_initialised_on_first_batch_and_kept_after_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = make("flow.glow")
    norms = [m for m in model.modules() if isinstance(m, ActNorm)]
    assert norms and not any(bool(m.initialized) for m in norms)
    model.bits_per_dim(images8(4))  # evaluation does not initialise
    model.sample(2, torch.Generator().manual_seed(0))
    assert not any(bool(m.initialized) for m in norms)
    seen: list[torch.Tensor] = []
    hook = norms[0].register_forward_hook(lambda m, i, o: seen.append(o[0].detach()))
    model.configure_optimizers()
    model.train()
    model.train_step(Batch(images8(16)), ctx(0))
    hook.remove()
    assert all(bool(m.initialized) for m in norms)
    out = seen[0]  # the first actnorm's output on the init batch
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(out.shape[1]), atol=1e-4)
    assert torch.allclose(
        out.var(dim=(0, 2, 3), unbiased=False), torch.ones(out.shape[1]), atol=1e-3
    )

    model.save(tmp_path)
    loaded = Glow.load(tmp_path)
    loaded_norms = [m for m in loaded.modules() if isinstance(m, ActNorm)]
    assert all(bool(m.initialized) for m in loaded_norms)
    loc = [m.loc.detach().clone() for m in loaded_norms]
    loaded.train()
    loaded.configure_optimizers()
    loaded.flow(torch.randn(4, 3, 8, 8) * 5)  # a training-mode forward on other data
    assert all(torch.equal(m.loc.detach(), c) for m, c in zip(loaded_norms, loc, strict=True))


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="resolution"):
        make("flow.glow", resolution=8, levels=4)
    with pytest.raises(ValueError, match="resolution"):
        make("flow.realnvp", resolution=8, scales=4)
    with pytest.raises(ValueError, match="unknown settings"):
        NICE.Config.from_dict({"levels": 2})
    for cls in MODELS.values():
        want = (
            Capability.TRAIN
            | Capability.SAMPLE
            | Capability.LATENT
            | Capability.LIKELIHOOD
            | Capability.INPAINT  # by latent optimisation (studio.models.latent_inpaint)
        )
        assert cls.info.capabilities == want and cls.conditions == ("temperature",)


def tiny_dataset(n: int = 32, channels: int = 3) -> torch.Tensor:
    """Smooth colour ramps, quantised to 8 bits: easy structure for a flow to find."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    colour = torch.rand(n, channels, 1, 1, generator=gen) * 2 - 1
    slope = torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1
    images = (0.6 * colour + 0.4 * slope * xx + 0.3 * yy).clamp(-1, 1)
    return ((images + 1) * 127.5).round() / 127.5 - 1


# Bits/dim after 150 steps on one-channel ramps, measured on CPU with model seeds 0 and 1:
# NICE 7.90 -> 7.32 / 7.32, RealNVP 7.90 -> 3.90 / 3.75, Glow 7.90 -> 4.07 / 4.85. NICE is
# volume-preserving but for its diagonal scale, which Adam moves ~1e-3 nats per step, so it
# learns slowly. The bounds keep a margin of over half a bit (0.18 bits for NICE) below what
# was measured. (Three channels and 300 steps taught the same in twice the time.)
MIN_DROP = {"flow.nice": 0.4, "flow.realnvp": 2.5, "flow.glow": 2.5}


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_learns_tiny_dataset(key: str) -> None:
    torch.manual_seed(0)
    model = make(key, channels=1, warmup_steps=20)
    model.configure_optimizers()
    model.train()
    data = tiny_dataset(channels=1)
    before = model.bits_per_dim(data).mean().item()
    for step in range(150):
        pick = torch.randint(0, len(data), (16,), generator=torch.Generator().manual_seed(step))
        out = model.train_step(Batch(data[pick]), ctx(step))
        assert all(torch.isfinite(v) for v in out.values())
    after = model.bits_per_dim(data).mean().item()
    assert after < before - MIN_DROP[key], (before, after)
