"""The discretised logistic mixture over 8-bit pixels (the PixelCNN++ output, Salimans et al.
2017), written for images in [-1, 1].

Pixel value k (0..255) is the bin ``[x - 1/255, x + 1/255]`` around ``x = k / 127.5 - 1``; the
first and last bins reach out to -inf and +inf, so the 256 probabilities sum to exactly one.
Within a pixel the channels depend on each other linearly, as in PixelCNN++: the mean of
channel c is shifted by ``sum_{c' < c} coeff[c, c'] * x[c']``, so one network pass gives every
channel's distribution once the earlier channels' values are known (the data's in training,
the drawn ones in sampling).

Per pixel the network emits ``params_per_pixel(C, K)`` numbers: K mixture logits, then for
each mixture component C means, C log-scales and C (C - 1) / 2 coefficients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

HALF_BIN = 1.0 / 255.0  # half a bin's width in [-1, 1] units
MIN_LOG_SCALE = -7.0


def params_per_pixel(channels: int, mixtures: int) -> int:
    pairs = channels * (channels - 1) // 2
    return mixtures * (1 + 2 * channels + pairs)


@dataclass(frozen=True)
class Mixture:
    """The mixture's parameters for B images: ``logits`` B x K x H x W, ``means`` and
    ``log_scales`` B x K x C x H x W (means not yet shifted by the earlier channels),
    ``coeffs`` B x K x P x H x W, P = C (C - 1) / 2, in (-1, 1)."""

    logits: Tensor
    means: Tensor
    log_scales: Tensor
    coeffs: Tensor

    @staticmethod
    def from_output(out: Tensor, channels: int, mixtures: int) -> Mixture:
        b, _, h, w = out.shape
        k, c = mixtures, channels
        logits = out[:, :k]
        rest = out[:, k:].reshape(b, k, -1, h, w)
        means = rest[:, :, :c]
        log_scales = rest[:, :, c : 2 * c].clamp(min=MIN_LOG_SCALE)
        coeffs = torch.tanh(rest[:, :, 2 * c :])
        return Mixture(logits, means, log_scales, coeffs)

    def shifted_means(self, x: Tensor) -> Tensor:
        """Each channel's means given the earlier channels' values ``x`` (B x C x H x W):
        channel c depends on x[:, :c] only."""
        c = self.means.shape[2]
        out, p = [self.means[:, :, 0]], 0
        for ch in range(1, c):
            m = self.means[:, :, ch]
            for prev in range(ch):
                m = m + self.coeffs[:, :, p] * x[:, prev : prev + 1]
                p += 1
            out.append(m)
        return torch.stack(out, dim=2)


def log_prob_bins(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(bin of x) under one logistic per entry (broadcast); x holds exact bin centres.

    P = sigmoid(a) - sigmoid(b) with a, b the bin's edges in standard units; its log is
    logsigmoid(a) + logsigmoid(-b) + log(1 - exp(b - a)), exact and stable in both tails.
    The edge bins: P(0) = sigmoid(a), P(255) = 1 - sigmoid(b)."""
    inv = torch.exp(-log_scales)
    centred = x - means
    a = inv * (centred + HALF_BIN)
    b = inv * (centred - HALF_BIN)
    middle = F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(b - a))
    low = F.logsigmoid(a)
    high = F.logsigmoid(-b)
    return torch.where(x < -1 + HALF_BIN, low, torch.where(x > 1 - HALF_BIN, high, middle))


def log_prob(mix: Mixture, x: Tensor) -> Tensor:
    """log P(x) per image and channel position: B x C x H x W (nats), ``x`` 8-bit data in
    [-1, 1]. Sum it for an image's log-likelihood."""
    means = mix.shifted_means(x)
    per_component = log_prob_bins(x.unsqueeze(1), means, mix.log_scales)  # B K C H W
    # The component is shared by a pixel's channels: p(pixel) = sum_k pi_k prod_c p_k(x_c).
    joint = per_component.sum(dim=2) + F.log_softmax(mix.logits, dim=1)  # B K H W
    pixel = torch.logsumexp(joint, dim=1)  # B H W
    # Spread the pixel's log-probability evenly over its channels (the sum is what counts).
    return pixel.unsqueeze(1).expand_as(x) / x.shape[1]


def to_bins(x: Tensor) -> Tensor:
    """Values in [-1, 1] to the nearest 8-bit bin centre."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def sample_pixel(mix: Mixture, uniforms: Tensor, temperature: float, row: int, col: int) -> Tensor:
    """Draw pixel (row, col) of every image: B x C, on 8-bit bin centres.

    ``uniforms`` is B x (1 + C) numbers in (0, 1) from the caller's seeded generator: the
    first picks the component, the rest the logistic draws. Temperature T divides the
    mixture's logits and multiplies each logistic's scale, so T -> 0 tends to the most likely
    component's mean and T = 1 is the model itself."""
    logits = mix.logits[:, :, row, col]
    k = logits.shape[1]
    t = max(float(temperature), 1e-4)
    probs = torch.softmax(logits.float() / t, dim=1)
    cdf = probs.cumsum(dim=1)
    pick = (uniforms[:, :1] > cdf[:, :-1]).sum(dim=1).clamp(max=k - 1)  # inverse CDF
    take = pick.view(-1, 1, 1).expand(-1, 1, mix.means.shape[2])
    means = mix.means[:, :, :, row, col].gather(1, take).squeeze(1)  # B x C
    log_s = mix.log_scales[:, :, :, row, col].gather(1, take).squeeze(1)
    pairs = mix.coeffs.shape[2]
    coeffs = (
        mix.coeffs[:, :, :, row, col].gather(1, pick.view(-1, 1, 1).expand(-1, 1, pairs))
    ).squeeze(1)
    u = uniforms[:, 1:].clamp(1e-5, 1 - 1e-5)
    noise = torch.log(u) - torch.log1p(-u)  # standard logistic
    scale = torch.exp(log_s) * t
    values, p = [], 0
    for ch in range(means.shape[1]):
        m = means[:, ch]
        for prev in range(ch):
            m = m + coeffs[:, p] * values[prev]
            p += 1
        values.append(to_bins(m + scale[:, ch] * noise[:, ch]))
    return torch.stack(values, dim=1)


def bits_per_dim(log_likelihood: Tensor, dims: int) -> Tensor:
    """Nats per image -> bits per dimension (the flows' convention: 8-bit data, C H W dims)."""
    return -log_likelihood / (dims * math.log(2.0))
