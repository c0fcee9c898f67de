"""The networks of the StyleGAN2 family (studio.models.gan.stylegan): equalised-learning-
rate layers, the modulated convolution, the mapping and synthesis networks, style mixing, and
the residual discriminator with minibatch standard deviation. Pure torch."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from studio.models.gan.common import levels_for
from studio.models.gan.growing import GrowingDiscriminator, GrowingGenerator, stage_sizes

SQRT2 = math.sqrt(2.0)
W_AVG_BETA = 0.995  # the running average of w the truncation trick pulls toward


def lrelu(x: Tensor) -> Tensor:
    """Leaky ReLU with the gain that keeps unit variance."""
    return F.leaky_relu(x, 0.2) * SQRT2


# -- equalised-learning-rate layers -------------------------------------------------------------


class EqualLinear(nn.Module):
    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init) / lr_mul))
        self.scale, self.lr_mul = lr_mul / math.sqrt(in_dim), lr_mul

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)

    def forward(self, x: Tensor) -> Tensor:
        k = self.weight.shape[-1]
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=k // 2)


def spectral(module: nn.Module) -> nn.Module:
    """Spectral normalisation of an equalised layer: the normalised weight sets the gain, so
    the He scale goes."""
    module.scale = 1.0
    return _sn(module)


# -- the generator -------------------------------------------------------------------------------


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled per image by a style from w, with the
    output channels demodulated (divided by the expected norm of their modulated weights).

    Computed as scale-the-input, one shared convolution, scale-the-output: the same result as
    a per-image modulated weight, in one batched convolution."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True
    ) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)  # styles start at 1
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)  # N x in
        weight = self.weight * self.scale
        out = F.conv2d(x * styles[:, :, None, None], weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            # sum over inputs and taps of (weight * style)^2, per image and output channel
            energy = styles.square() @ weight.square().sum(dim=(2, 3)).t()
            out = out * torch.rsqrt(energy + 1e-8)[:, :, None, None]
        return out


class SynthesisLayer(nn.Module):
    """(Upsample,) modulated 3x3 conv, noise with a learned strength, bias, leaky ReLU. The
    noise is drawn from ``noise`` (a generator) in training and fixed at a stored draw
    (``noise_const``) when ``noise`` is None."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, size: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(1, 1, size, size))
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: Tensor, w: Tensor, noise: torch.Generator | None) -> Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv(x, w)
        if noise is None:
            n = self.noise_const
        else:
            shape = (x.shape[0], 1, x.shape[2], x.shape[3])
            n = torch.randn(shape, generator=noise, device=noise.device).to(x)
        return lrelu(x + n * self.noise_strength + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


def widths(width: int, resolution: int) -> dict[int, int]:
    """Channels per map size: ``width`` at full resolution, doubling per halving, at most 4x."""
    sizes = [4 * 2**i for i in range(levels_for(resolution) + 1)]
    return {s: width * min(4, resolution // s) for s in sizes}


class Synthesis(GrowingGenerator):
    """Per-layer styles (N x num_ws x w_dim) -> images (unbounded; about [-1, 1]).

    Progressive growing needs nothing more: each size's image is already the upsampled
    image of the sizes before plus its own RGB, so a stage stops at its size, and a fade
    weighs the new size's RGB by alpha."""

    upsample = "bilinear"  # as the skip outputs are enlarged

    def __init__(self, w_dim: int, width: int, resolution: int, channels: int) -> None:
        super().__init__()
        self.resolution = resolution
        ch = widths(width, resolution)
        sizes = sorted(ch)
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        layers = [SynthesisLayer(ch[4], ch[4], w_dim, 4, up=False)]
        rgbs = [ToRGB(ch[4], channels, w_dim)]
        for size in sizes[1:]:
            layers.append(SynthesisLayer(ch[size // 2], ch[size], w_dim, size, up=True))
            layers.append(SynthesisLayer(ch[size], ch[size], w_dim, size, up=False))
            rgbs.append(ToRGB(ch[size], channels, w_dim))
        self.layers, self.rgbs = nn.ModuleList(layers), nn.ModuleList(rgbs)
        # Layer i takes w[i]; a resolution's RGB takes the w after its last layer.
        self.num_ws = len(layers) + 1

    def forward(self, ws: Tensor, noise: torch.Generator | None = None) -> Tensor:
        return self.grown(lambda: self.images_at(self.resolution, False, ws, noise)[1], ws, noise)

    def images_at(
        self, resolution: int, previous: bool, ws: Tensor, noise: torch.Generator | None
    ) -> tuple[Tensor | None, Tensor]:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        x = self.layers[0](x, ws[:, 0], noise)
        rgb = before = self.rgbs[0](x, ws[:, 1])
        for b in range(1, int(math.log2(resolution)) - 1):  # sizes 8 ... resolution
            i = 2 * b - 1
            x = self.layers[i](x, ws[:, i], noise)
            x = self.layers[i + 1](x, ws[:, i + 1], noise)
            up = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
            before, rgb = rgb, up + self.rgbs[b](x, ws[:, i + 2])
        return (before if previous else None), rgb


class Mapping(nn.Module):
    """z -> u: normalise z, then ``depth`` leaky-ReLU layers at 1/100 the learning rate."""

    def __init__(self, latent_dim: int, w_dim: int, depth: int) -> None:
        super().__init__()
        dims = [latent_dim] + [w_dim] * depth
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_mul=0.01) for a, b in zip(dims[:-1], dims[1:])
        )

    def forward(self, z: Tensor) -> Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x


class StyleGenerator(nn.Module):
    """Mapping, synthesis, the class vectors (conditional) and the running mean of u."""

    def __init__(
        self,
        latent_dim: int,
        w_dim: int,
        depth: int,
        width: int,
        resolution: int,
        channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.mapping = Mapping(latent_dim, w_dim, depth)
        self.synthesis = Synthesis(w_dim, width, resolution, channels)
        self.embed = nn.Embedding(num_classes, w_dim) if num_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.num_ws = self.synthesis.num_ws

    def truncate(self, u: Tensor, psi: float) -> Tensor:
        return u if psi == 1 else self.w_avg + psi * (u - self.w_avg)

    def ws(self, u: Tensor, labels: Tensor | None) -> Tensor:
        """u (N x w_dim) -> per-layer styles (N x num_ws x w_dim), with the class added."""
        w = u
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: labels are required")
            w = u + self.embed(labels)
        return w[:, None, :].expand(-1, self.num_ws, -1)

    def layered(self, us: Tensor, labels: Tensor | None) -> Tensor:
        """Per-layer u (N x num_ws x w_dim) -> per-layer styles, with the class added."""
        if self.embed is None:
            return us
        if labels is None:
            raise ValueError("this generator is class-conditional: labels are required")
        return us + self.embed(labels)[:, None, :]

    def forward(
        self, z: Tensor, labels: Tensor | None = None, psi: float = 1.0, noise: Any = None
    ) -> Tensor:
        return self.synthesis(self.ws(self.truncate(self.mapping(z), psi), labels), noise)


def layer_groups(resolution: int) -> tuple[tuple[str, int, int, str], ...]:
    """(name, start, stop, help) of the coarse, middle and fine style layers.

    Style ``i`` feeds synthesis layer ``i`` and the RGB output before it; a size's two
    convolutions take styles ``2b - 1`` and ``2b`` (b = log2(size) - 2), so a size owns those
    two, 4x4 owns style 0 and the last RGB's style goes with the finest size. Coarse is
    4 and 8 px (layout, pose), fine the top size (128 px: the top two; colour, texture),
    middle what lies between (shapes, features)."""
    top = int(math.log2(resolution)) - 2  # the finest size's b
    fine_from = top - 1 if resolution >= 128 else top
    start_of = lambda b: 0 if b == 0 else 2 * b - 1  # noqa: E731
    stop = 2 * top + 2  # num_ws
    coarse_stop = start_of(min(2, top))
    middle_stop = max(coarse_stop, start_of(fine_from))
    px = lambda b: f"{4 * 2**b} px"  # noqa: E731
    groups = [
        ("Coarse", 0, coarse_stop, f"layers up to {px(min(2, top) - 1)}: layout, pose, shape"),
        ("Middle", coarse_stop, middle_stop, "the sizes between: features, parts"),
        ("Fine", middle_stop, stop, f"layers from {px(fine_from)}: colour, texture"),
    ]
    return tuple(g for g in groups if g[2] > g[1])


def mix_styles(first: Tensor, second: Tensor, crossover: Tensor | int) -> Tensor:
    """Per-layer styles taking layers below ``crossover`` (per image, or one int) from
    ``first`` and the rest from ``second`` (both N x num_ws x w_dim)."""
    layers = torch.arange(first.shape[1], device=first.device)
    cut = torch.as_tensor(crossover, device=first.device).reshape(-1, 1)
    return torch.where((layers[None, :] < cut)[:, :, None], first, second)


# -- the discriminator ---------------------------------------------------------------------------


def minibatch_std(x: Tensor, group: int = 4) -> Tensor:
    """Append one feature map: the standard deviation across a group of images, averaged.
    A generator that draws one image for every z shows up as a small spread."""
    n, c, h, w = x.shape
    g = min(group, n)
    while n % g:
        g -= 1
    y = x.float().reshape(g, -1, c, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=(1, 2, 3))  # per group
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class DBlock(nn.Module):
    """Two 3x3 convs and a 1x1 skip, halved in size, summed with unit-variance weights."""

    def __init__(self, in_ch: int, out_ch: int, wrap: Any) -> None:
        super().__init__()
        self.conv1 = wrap(EqualConv2d(in_ch, in_ch, 3))
        self.conv2 = wrap(EqualConv2d(in_ch, out_ch, 3))
        self.skip = wrap(EqualConv2d(in_ch, out_ch, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        h = F.avg_pool2d(lrelu(self.conv2(lrelu(self.conv1(x)))), 2)
        return (h + skip) / SQRT2


class StyleDiscriminator(GrowingDiscriminator):
    """Residual discriminator with minibatch standard deviation and a projection class term.
    ``grow`` (progressive growing) adds a 1x1 from-RGB layer per smaller size."""

    def __init__(
        self,
        width: int,
        resolution: int,
        channels: int,
        num_classes: int,
        spectral_norm: bool,
        grow: bool = False,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        wrap = spectral if spectral_norm else (lambda m: m)
        ch = widths(width, resolution)
        self.from_rgb = wrap(EqualConv2d(channels, ch[resolution], 1))
        sizes = sorted(ch, reverse=True)[:-1]  # resolution ... 8
        self.blocks = nn.ModuleList(DBlock(ch[s], ch[s // 2], wrap) for s in sizes)
        top = ch[4]
        self.conv = wrap(EqualConv2d(top + 1, top, 3))
        self.fc = wrap(EqualLinear(top * 16, top))
        self.out = wrap(EqualLinear(top, 1))
        self.embed = nn.Embedding(num_classes, top) if num_classes else None
        self.grow_from_rgb = nn.ModuleDict(
            {str(r): wrap(EqualConv2d(channels, ch[r], 1)) for r in stage_sizes(resolution)}
            if grow
            else {}
        )

    # The stages: an image of size r enters through its 1x1 from-RGB; block i halves the
    # resolution / 2**i px maps.
    def entry(self, resolution: int) -> Any:
        conv = (
            self.from_rgb if resolution == self.resolution else self.grow_from_rgb[str(resolution)]
        )
        return lambda x: lrelu(conv(x))

    def blocks_from(self, resolution: int) -> Any:
        return list(self.blocks)[int(math.log2(self.resolution // resolution)) :]

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if self._partial() is None:
            h = lrelu(self.from_rgb(x))
            for block in self.blocks:
                h = block(h)
        else:
            h = self.trunk(x)
        h = lrelu(self.conv(minibatch_std(h)))
        h = lrelu(self.fc(h.flatten(1)))
        out = self.out(h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: labels are required")
            out = out + (self.embed(labels) * h).sum(dim=1) / math.sqrt(h.shape[1])
        return out
