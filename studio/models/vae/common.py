"""Pieces shared by the VAE family: conv encoder/decoder stacks, the Gaussian KL and the
discretised pixel likelihoods used for training and for bits/dim.

Pixels are 8-bit: an image in [-1, 1] stands for levels k = 0..255 (``k = round((x+1)*127.5)``).
Both likelihoods here put a proper probability on each of the 256 levels (they sum to one), so
``-log p`` in bits is never negative and the negative ELBO is a valid bound on the code length.

* ``gaussian``: a discretised Gaussian. Level k covers ``[c_k - 1/255, c_k + 1/255]`` around its
  centre ``c_k = k/127.5 - 1``; the two end levels reach to -inf and +inf.
* ``bernoulli``: the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) on [0, 1], integrated
  exactly over 256 equal bins ``[k/256, (k+1)/256]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from studio.core.schema import setting
from studio.models.configs import network_width

LEVELS = 256
LIKELIHOODS = ("gaussian", "bernoulli")
LOG_SIGMA_MIN = math.log(1e-3)  # below this the bins are many sigmas wide: nothing to gain
LOG_SIGMA_MAX = math.log(10.0)
LABEL_DIM = 32  # size of the class embedding a conditional model feeds its networks
# The bin-integrated continuous Bernoulli is only sure of a level once |logit| reaches the
# hundreds (its density must fit inside a 1/256 bin). The decoder's output is scaled up so
# Adam gets there in hundreds of steps rather than tens of thousands (measured: 250 steps on
# binary images end at 0.30 of the first loss with this scale, 0.78 without).
CB_LOGIT_SCALE = 32.0


def vae_width(default: int) -> Any:
    """The "Network width" setting of the VAEs."""
    return network_width(default, help="channels of the first layer")


def pixel_likelihood(main: bool = False) -> Any:
    """The "Pixel likelihood" setting of the VAEs (how a decoded pixel is scored)."""
    return setting(
        "gaussian",
        label="Pixel likelihood",
        help="gaussian: discretised Gaussian (photos); bernoulli: continuous Bernoulli (mostly "
        "black-and-white images)",
        choices=LIKELIHOODS,
        main=main,
    )


def learn_pixel_noise() -> Any:
    """The "Learn pixel noise" setting of the Gaussian-likelihood VAEs."""
    return setting(
        True, label="Learn pixel noise", help="gaussian only: learn one noise level (sharper)"
    )


def pixel_noise() -> Any:
    """The "Pixel noise" setting of the Gaussian-likelihood VAEs."""
    return setting(
        0.1,
        label="Pixel noise",
        help="gaussian only: the fixed noise level, or the starting one when learned",
        minimum=1e-3,
        maximum=1.0,
    )


def levels_for(resolution: int) -> int:
    """Number of stride-2 stages between the image and a 4x4 map."""
    levels = int(math.log2(resolution)) - 2
    if levels < 1 or 2 ** (levels + 2) != resolution:
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return levels


def group_norm(ch: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: encode/decode then give the same answer in train and eval
    # mode and sampling cannot move any running statistics.
    return nn.GroupNorm(8 if ch % 8 == 0 else 1, ch)


class ConvEncoder(nn.Module):
    """image (and an optional class) -> a flat vector of ``out_dim`` numbers."""

    def __init__(
        self,
        channels: int,
        width: int,
        resolution: int,
        out_dim: int,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.SiLU()]
        ch = width
        for _ in range(levels_for(resolution)):
            nxt = min(ch * 2, width * 8)
            layers += [nn.Conv2d(ch, nxt, 4, 2, 1), group_norm(nxt), nn.SiLU()]
            ch = nxt
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.embed = nn.Embedding(num_classes, LABEL_DIM) if num_classes else None
        self.head = nn.Linear(ch * 16 + (LABEL_DIM if num_classes else 0), out_dim)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.features(x)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this encoder is class-conditional: labels are required")
            h = torch.cat([h, self.embed(labels).to(h.dtype)], dim=1)
        return self.head(h)


class ConvDecoder(nn.Module):
    """latent vector (and an optional class) -> per-pixel likelihood parameters."""

    def __init__(
        self,
        latent_dim: int,
        width: int,
        resolution: int,
        channels: int,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        levels = levels_for(resolution)
        ch = min(width * 2**levels, width * 8)
        self.top = ch
        self.embed = nn.Embedding(num_classes, LABEL_DIM) if num_classes else None
        self.project = nn.Linear(latent_dim + (LABEL_DIM if num_classes else 0), ch * 16)
        layers: list[nn.Module] = [nn.SiLU()]
        for i in range(levels):
            nxt = min(width * 2 ** (levels - 1 - i), width * 8)
            layers += [nn.ConvTranspose2d(ch, nxt, 4, 2, 1), group_norm(nxt), nn.SiLU()]
            ch = nxt
        layers.append(nn.Conv2d(ch, channels, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this decoder is class-conditional: labels are required")
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        return self.net(self.project(z).view(-1, self.top, 4, 4))


class ResBlock(nn.Module):
    """x + conv1x1(silu(conv3x3(silu(x)))): the VQ-VAE paper's residual block."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.SiLU(), nn.Conv2d(ch, ch, 3, 1, 1), nn.SiLU(), nn.Conv2d(ch, ch, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


# -- Gaussian posterior ----------------------------------------------------------------------


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent dimension (same shape as ``mean``)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)


def reparameterise(mean: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mean + sigma * eps: a sample whose gradient reaches mean and logvar."""
    return mean + torch.exp(0.5 * logvar) * eps


# -- discretised pixel likelihoods -------------------------------------------------------------


def to_levels(x: Tensor) -> Tensor:
    """Images in [-1, 1] -> integer levels 0..255 (as in ``images_to_uint8``)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round()


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, log_sigma: Tensor) -> Tensor:
    """log P(level of x) under a Gaussian N(mean, sigma^2) cut into 256 bins, per pixel (nats)."""
    k = to_levels(x)
    centre = k / 127.5 - 1.0
    log_sigma = log_sigma.float().clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
    inv = torch.exp(-log_sigma)
    d = centre - mean.float()
    upper = (d + 1.0 / 255) * inv
    lower = (d - 1.0 / 255) * inv
    # Phi(upper) - Phi(lower), computed in whichever tail keeps log_ndtr accurate: above the
    # mean use the mirror image Phi(-lower) - Phi(-upper).
    above = d > 0
    hi = torch.where(above, -lower, upper)
    lo = torch.where(above, -upper, lower)
    log_hi = torch.special.log_ndtr(hi)
    gap = -torch.expm1(torch.special.log_ndtr(lo) - log_hi)
    inner = log_hi + torch.log(gap.clamp_min(1e-30))
    first = torch.special.log_ndtr(upper)  # level 0 takes everything below
    last = torch.special.log_ndtr(-lower)  # level 255 takes everything above
    return torch.where(k <= 0, first, torch.where(k >= LEVELS - 1, last, inner))


def _log_expm1_over_t(t: Tensor) -> Tensor:
    """log((exp(t) - 1) / t), smooth through t = 0 and stable for large |t|."""
    small = t.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(t), t)
    # log|expm1(t)| = max(t, 0) + log(1 - exp(-|t|)): one branch, finite gradients for any t
    # (a where() between two branches would leak NaN gradients from the unused one).
    big = safe.clamp_min(0) + torch.log(-torch.expm1(-safe.abs()))
    return torch.where(small, t / 2 + t * t / 24, big - torch.log(safe.abs()))


def discretized_cb_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log P(level of x) under a continuous Bernoulli on [0, 1] with ``logits``, integrated
    exactly over the level's bin [k/256, (k+1)/256], per pixel (nats).

    With r = logit, the density is proportional to exp(r u), so the bin holds
    exp(r k/256) * expm1(r/256) / expm1(r) = exp(r k/256) / 256 * h(r/256) / h(r),
    where h(t) = expm1(t) / t.
    """
    k = to_levels(x)
    r = logits.float()
    # Mirror u -> 1 - u so r <= 0: level k under r is level 255 - k under -r. Large terms
    # then appear only for unlikely levels, so likely ones keep float32 accuracy.
    up = r > 0
    k = torch.where(up, LEVELS - 1 - k, k)
    r = torch.where(up, -r, r)
    return (
        r * (k / LEVELS) - math.log(LEVELS) + _log_expm1_over_t(r / LEVELS) - _log_expm1_over_t(r)
    )


def cb_mean(logits: Tensor) -> Tensor:
    """The mean of a continuous Bernoulli on [0, 1]: 1 / (1 - exp(-r)) - 1 / r."""
    r = logits.float()
    small = r.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(r), r)
    return torch.where(small, 0.5 + r / 12, 1.0 / -torch.expm1(-safe) - 1.0 / safe)


def pixel_log_prob(x: Tensor, params: Tensor, likelihood: str, log_sigma: Tensor | None) -> Tensor:
    """Per-image log P(x | decoder output) in nats, summed over pixels."""
    if likelihood == "gaussian":
        assert log_sigma is not None
        lp = discretized_gaussian_log_prob(x, params, log_sigma)
    else:
        lp = discretized_cb_log_prob(x, params * CB_LOGIT_SCALE)
    return lp.flatten(1).sum(1)


def params_to_images(params: Tensor, likelihood: str) -> Tensor:
    """The decoder's expected image, in [-1, 1]."""
    if likelihood == "gaussian":
        return params.float().clamp(-1, 1)
    return cb_mean(params * CB_LOGIT_SCALE) * 2 - 1


def nats_to_bits_per_dim(nll: Tensor, dims: int) -> Tensor:
    return nll / (dims * math.log(2.0))


def temperature_of(conditions: dict[str, Any]) -> float:
    """The ``temperature`` sampling condition (1 when absent); must be positive."""
    t = conditions.get("temperature")
    t = 1.0 if t is None else float(t)
    if not t > 0:
        raise ValueError(f"temperature must be positive, got {t}")
    return t
