"""Invertible layers shared by the flow family, and the multi-scale stack that chains them.

Every layer maps ``x -> y`` and adds its per-image ``log|det dy/dx|`` to a running ``logdet``
(shape ``B``); ``inverse`` undoes it exactly. Layers keep the activations in the input's dtype
(float32 in training, float64 in the tests) and run only their small conditioning networks
under autocast, so the log-determinants stay exact whatever precision training uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)
# Uniform noise on [0, 1) has variance 1/12: scaling by sqrt(12) gives the dequantised data
# unit variance, the same scale as the base Gaussian, so an identity flow is a sensible start.
DATA_SCALE = math.sqrt(12.0)
BINS = 256  # 8-bit data
_LOGSIGMOID_2 = -math.log1p(math.exp(-2.0))  # log sigmoid(2): h = 0 gives scale 1

Shape = tuple[int, int, int]  # C, H, W


# -- data, densities and bits ------------------------------------------------------------------


def dequantize(images: Tensor, noise: Tensor | float) -> Tensor:
    """Images in [-1, 1] (from 8-bit pixels) plus ``noise`` in [0, 1) pixel units -> flow input.

    Pixel value k becomes ``(k + noise) / 256`` in [0, 1), then is centred and scaled by
    ``DATA_SCALE``. ``noise=0.5`` is the bin midpoint (deterministic evaluation)."""
    u = ((images + 1) * 127.5 + noise) / BINS
    return (u - 0.5) * DATA_SCALE


def quantize_back(x: Tensor) -> Tensor:
    """The inverse of ``dequantize(images, 0.5)``: flow input -> images in [-1, 1]."""
    pixels = (x / DATA_SCALE + 0.5) * BINS - 0.5
    images = (pixels / 127.5 - 1).clamp(-1, 1)
    # A hot sample (a far-out latent through many scale inverses) can overflow: show it grey.
    return torch.nan_to_num(images, nan=0.0)


def dequantize_logdet(dims: int) -> float:
    """log|det| of pixel units -> flow input: a bin of width 1 becomes DATA_SCALE / 256 wide."""
    return dims * (math.log(DATA_SCALE) - math.log(BINS))


def standard_normal_logp(z: Tensor) -> Tensor:
    """Per-row log density of a standard Gaussian; ``z`` is B x D."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(dim=1)


def to_bits_per_dim(log_likelihood: Tensor, dims: int) -> Tensor:
    return -log_likelihood / (dims * LOG2)


def soft_clamp(h: Tensor, bound: float) -> Tensor:
    """``bound * tanh(h / bound)``: the identity near 0, never beyond +-bound (no blow-ups)."""
    return bound * torch.tanh(h / bound)


# -- layers ------------------------------------------------------------------------------------


class FlowLayer(nn.Module):
    """An invertible map of B x C x H x W tensors with a tractable log-determinant."""

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def forward(self, x: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError


class Squeeze(FlowLayer):
    """Trade space for channels: C x H x W -> 4C x H/2 x W/2 (a permutation, log|det| = 0)."""

    def out_shape(self, shape: Shape) -> Shape:
        c, h, w = shape
        return 4 * c, h // 2, w // 2

    def forward(self, x: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor]:
        return F.pixel_unshuffle(x, 2), logdet

    def inverse(self, y: Tensor) -> Tensor:
        return F.pixel_shuffle(y, 2)


def checkerboard(x: Tensor, parity: int) -> Tensor:
    """A 1 x 1 x H x W mask of ones where (row + column + parity) is even."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device)[:, None]
    cols = torch.arange(w, device=x.device)[None, :]
    return ((rows + cols + parity) % 2 == 0).to(x.dtype)[None, None]


class CouplingNet(nn.Module):
    """The conditioner: a small conv net whose last layer starts at zero, so every coupling
    begins as the identity and training starts from a well-behaved flow."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Coupling(FlowLayer):
    """Additive (NICE) or affine (RealNVP, Glow) coupling.

    One part of the input passes through unchanged and conditions a shift (and scale) of the
    other part, so the Jacobian is triangular. ``mask`` "checkerboard" splits pixels in a
    checkerboard (the net also sees the mask); "channel" splits the channels in halves.
    ``parity`` picks which part is transformed. ``scale`` bounds the affine scale: "tanh" gives
    log s = 2 tanh(h / 2); "sigmoid" gives s = sigmoid(h + 2) / sigmoid(2) (Glow's, rescaled
    so h = 0 is the identity). Both keep the scale finite however large h grows.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        mask: str,
        parity: int,
        affine: bool,
        scale: str = "tanh",
    ) -> None:
        super().__init__()
        if mask not in ("checkerboard", "channel") or scale not in ("tanh", "sigmoid"):
            raise ValueError(f"unknown coupling mask {mask!r} or scale {scale!r}")
        if mask == "channel" and channels < 2:
            raise ValueError("a channel coupling needs at least 2 channels")
        self.mask, self.parity, self.affine, self.scale = mask, parity % 2, affine, scale
        self.half = channels // 2
        if mask == "checkerboard":
            cond, out = channels + 1, channels
        else:
            cond = self.half if self.parity == 0 else channels - self.half
            out = channels - cond
        self.net = CouplingNet(cond, out * (2 if affine else 1), hidden)

    def _shift_log_scale(self, cond: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        h = self.net(cond).to(dtype)  # back from the autocast dtype before anything exact
        if not self.affine:
            return h, None
        raw, shift = h.chunk(2, dim=1)
        if self.scale == "tanh":
            return shift, soft_clamp(raw, 2.0)
        return shift, F.logsigmoid(raw + 2.0) - _LOGSIGMOID_2

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(conditioning part, transformed part) of a channel split."""
        a, b = x[:, : self.half], x[:, self.half :]
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, cond: Tensor, moved: Tensor) -> Tensor:
        return torch.cat([cond, moved] if self.parity == 0 else [moved, cond], dim=1)

    def forward(self, x: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor]:
        if self.mask == "checkerboard":
            m = checkerboard(x, self.parity)
            cond = torch.cat([x * m, m.expand(x.shape[0], 1, -1, -1)], dim=1)
            shift, log_s = self._shift_log_scale(cond, x.dtype)
            shift = shift * (1 - m)
            if log_s is None:
                return x + shift, logdet
            log_s = log_s * (1 - m)  # 0 on the pixels that pass through
            return x * log_s.exp() + shift, logdet + log_s.flatten(1).sum(1)
        cond, moved = self._halves(x)
        shift, log_s = self._shift_log_scale(cond, x.dtype)
        if log_s is None:
            return self._join(cond, moved + shift), logdet
        moved = moved * log_s.exp() + shift
        return self._join(cond, moved), logdet + log_s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        if self.mask == "checkerboard":
            m = checkerboard(y, self.parity)
            cond = torch.cat([y * m, m.expand(y.shape[0], 1, -1, -1)], dim=1)
            shift, log_s = self._shift_log_scale(cond, y.dtype)
            x = y - shift * (1 - m)
            return x if log_s is None else x * (-log_s * (1 - m)).exp()
        cond, moved = self._halves(y)
        shift, log_s = self._shift_log_scale(cond, y.dtype)
        moved = moved - shift
        if log_s is not None:
            moved = moved * (-log_s).exp()
        return self._join(cond, moved)


class ActNorm(FlowLayer):
    """Per-channel affine map y = (x + loc) * exp(log_scale), initialised from data.

    The first training batch sets loc and scale so that batch comes out zero-mean and unit
    variance per channel. The ``initialized`` flag is a buffer, so it is saved with the weights
    and a loaded model is never re-initialised.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._ready: bool | None = None  # Python mirror of the buffer: no device sync per step

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = None  # the buffer may have changed: read it again on the next forward

    def is_initialized(self) -> bool:
        if self._ready is None:
            self._ready = bool(self.initialized)
        return self._ready

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        data = x.detach().to(self.loc.dtype)
        mean = data.mean(dim=(0, 2, 3), keepdim=True)
        # Dequantisation noise keeps every channel's std above ~0.004; the floor is a guard.
        std = data.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-3)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-std.log())
        self.initialized.fill_(True)
        self._ready = True

    def forward(self, x: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self.is_initialized():
            self.initialize(x)
        y = (x + self.loc) * self.log_scale.exp()
        return y, logdet + x.shape[2] * x.shape[3] * self.log_scale.sum()

    def inverse(self, y: Tensor) -> Tensor:
        return y * (-self.log_scale).exp() - self.loc


class InvConv1x1(FlowLayer):
    """Invertible 1x1 convolution in LU form: W = P L (U + diag(sign * exp(log_s))).

    P (a permutation) and the signs are fixed buffers; the strictly lower L, strictly upper U
    and log|s| are learned, so log|det W| = sum(log_s) costs nothing to compute. Starts from a
    random rotation (log|det| = 0).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.lower = nn.Parameter(torch.tril(lower, -1).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(s.abs().log().float())

    def weight(self) -> Tensor:
        eye = torch.eye(self.lower.shape[0], device=self.lower.device, dtype=self.lower.dtype)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * self.log_s.exp())
        return self.perm @ lower @ upper

    def forward(self, x: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(x.device.type, enabled=False):  # exact, whatever the autocast
            y = F.conv2d(x, self.weight().to(x.dtype)[:, :, None, None])
        return y, logdet + x.shape[2] * x.shape[3] * self.log_s.sum()

    def inverse(self, y: Tensor) -> Tensor:
        # Invert in float64 on the CPU (MPS has no float64): C x C is tiny, and exact matters.
        w_inv = torch.linalg.inv(self.weight().detach().cpu().double()).to(y.device, y.dtype)
        with torch.autocast(y.device.type, enabled=False):
            return F.conv2d(y, w_inv[:, :, None, None])


class DiagonalScale(FlowLayer):
    """NICE's last layer: a learned scale per dimension (the only volume change in NICE)."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1, *shape))

    def forward(self, x: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor]:
        return x * self.log_scale.exp(), logdet + self.log_scale.sum()

    def inverse(self, y: Tensor) -> Tensor:
        return y * (-self.log_scale).exp()


class Split(nn.Module):
    """Factor out the first half of the channels as latent ``z`` (the multi-scale trick).

    With a learned prior, z ~ N(mean, std) predicted from the kept half; the layer returns the
    standardised ``eps = (z - mean) / std`` (log|det| = -sum log std), so every latent of the
    model is standard normal and temperature scales them all alike. Without one, eps = z.
    """

    def __init__(self, channels: int, learned: bool) -> None:
        super().__init__()
        self.out = channels // 2
        self.prior: nn.Conv2d | None = None
        if learned:
            self.prior = nn.Conv2d(channels - self.out, 2 * self.out, 3, padding=1)
            nn.init.zeros_(self.prior.weight)  # starts as a standard normal prior
            nn.init.zeros_(self.prior.bias)

    def shapes(self, shape: Shape) -> tuple[Shape, Shape]:
        """(kept shape, factored-out shape)."""
        c, h, w = shape
        return (c - self.out, h, w), (self.out, h, w)

    def _mean_log_std(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        assert self.prior is not None
        mean, raw = self.prior(kept).to(kept.dtype).chunk(2, dim=1)
        return mean, soft_clamp(raw, 4.0)

    def forward(self, x: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z, kept = x[:, : self.out], x[:, self.out :]
        if self.prior is None:
            return kept, z, logdet
        mean, log_std = self._mean_log_std(kept)
        eps = (z - mean) * (-log_std).exp()
        return kept, eps, logdet - log_std.flatten(1).sum(1)

    def inverse(self, kept: Tensor, eps: Tensor) -> Tensor:
        if self.prior is None:
            return torch.cat([eps, kept], dim=1)
        mean, log_std = self._mean_log_std(kept)
        return torch.cat([eps * log_std.exp() + mean, kept], dim=1)


class Level(nn.Module):
    """Flow layers at one scale, then an optional split."""

    def __init__(self, layers: list[FlowLayer], split: Split | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.split = split


class MultiScaleFlow(nn.Module):
    """Chains levels; maps an image-shaped tensor to one flat latent of the same size.

    The latent is every factored-out part, in order, then the last level's output, each
    flattened and concatenated: shape B x (C * H * W).
    """

    def __init__(self, levels: list[Level], in_shape: Shape) -> None:
        super().__init__()
        if levels[-1].split is not None:
            raise ValueError("the last level keeps everything: it must not split")
        self.levels = nn.ModuleList(levels)
        self.in_shape = in_shape
        self.latent_shapes: list[Shape] = []
        shape = in_shape
        for level in levels:
            for layer in level.layers:
                shape = layer.out_shape(shape)
            if level.split is not None:
                shape, out = level.split.shapes(shape)
                self.latent_shapes.append(out)
        self.latent_shapes.append(shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        latents = []
        for level in self.levels:
            for layer in level.layers:
                x, logdet = layer(x, logdet)
            if level.split is not None:
                x, eps, logdet = level.split(x, logdet)
                latents.append(eps.flatten(1))
        latents.append(x.flatten(1))
        return torch.cat(latents, dim=1), logdet

    def inverse(self, z: Tensor) -> Tensor:
        sizes = [math.prod(s) for s in self.latent_shapes]
        parts = [
            p.reshape(-1, *s)
            for p, s in zip(z.split(sizes, dim=1), self.latent_shapes, strict=True)
        ]
        x = parts.pop()
        for level in reversed(self.levels):
            if level.split is not None:
                x = level.split.inverse(x, parts.pop())
            for layer in reversed(level.layers):
                x = layer.inverse(x)
        return x
