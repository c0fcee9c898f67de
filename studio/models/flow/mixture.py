"""Flow++'s coupling (Ho et al. 2019): a logistic-mixture CDF, then the inverse sigmoid, a
scale and a shift, conditioned by a net of gated residual blocks and self-attention.

For the transformed part ``x`` of a coupling, with the conditioning part fixing per element a
log-scale ``a``, a shift ``b`` and a K-component logistic mixture (weights ``pi``, means
``mu``, scales ``s``):

    F(x) = sum_i pi_i sigmoid((x - mu_i) / s_i),    y = exp(a) * logit(F(x)) + b

F is strictly increasing, so y is invertible. Everything is computed in log space
(log F, log(1 - F) and log F' by log-sum-exp), so far tails neither round F to 0 or 1 nor
lose the log-determinant. The inverse has no closed form: ``mixture_logit_inverse`` bisects,
starting from a bracket that provably holds the answer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.models.flow.layers import FlowLayer, checkerboard, soft_clamp

MIN_LOG_SCALE = -7.0  # a component narrower than e^-7 adds nothing but numerical trouble
SCALE_BOUND = 3.0  # |a| stays below this: exp(a) in (0.05, 20)
BISECT_TOL = {torch.float64: 1e-12}  # relative to 1 + |x|; 1e-6 for other dtypes
BISECT_MAX_STEPS = 100


# -- the mixture CDF ---------------------------------------------------------------------------


def mixture_logit(
    x: Tensor, logits: Tensor, means: Tensor, log_scales: Tensor
) -> tuple[Tensor, Tensor]:
    """(logit F(x), log dlogit F / dx) per element. ``x`` has shape S; the mixture parameters
    S x K (``logits`` unnormalised weights, ``log_scales`` already clamped)."""
    z = (x.unsqueeze(-1) - means) * torch.exp(-log_scales)
    log_pi = F.log_softmax(logits, dim=-1)
    up, down = F.logsigmoid(z), F.logsigmoid(-z)
    log_f = torch.logsumexp(log_pi + up, dim=-1)
    log_1mf = torch.logsumexp(log_pi + down, dim=-1)
    log_pdf = torch.logsumexp(log_pi + up + down - log_scales, dim=-1)
    # d logit(F) / dx = F' / (F (1 - F))
    return log_f - log_1mf, log_pdf - log_f - log_1mf


@torch.no_grad()
def mixture_logit_inverse(
    t: Tensor,
    logits: Tensor,
    means: Tensor,
    log_scales: Tensor,
    tol: float | None = None,
    max_steps: int = BISECT_MAX_STEPS,
) -> Tensor:
    """The x with logit F(x) = t, per element, by bisection.

    F is a weighted mean of the component CDFs, so logit F(x) lies between the smallest and the
    largest component logit (x - mu_i) / s_i. At x = min_i(mu_i + s_i t) every component logit
    is <= t, at x = max_i(mu_i + s_i t) every one is >= t: the answer lies in between. Each
    step halves the bracket; it stops when every bracket is narrower than
    ``tol * (1 + |x|)`` (``tol`` None: 1e-12 in float64, else 1e-6), or stops shrinking
    (the float's resolution), or after ``max_steps``.
    """
    if tol is None:
        tol = BISECT_TOL.get(t.dtype, 1e-6)
    ends = means + torch.exp(log_scales) * t.unsqueeze(-1)
    lo, hi = ends.min(dim=-1).values, ends.max(dim=-1).values
    width = (hi - lo).max()
    for _ in range(max_steps):
        mid = 0.5 * (lo + hi)
        below = mixture_logit(mid, logits, means, log_scales)[0] < t
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
        gap = hi - lo
        if bool((gap <= tol * (1 + mid.abs())).all()) or not bool(gap.max() < width):
            break
        width = gap.max()
    return 0.5 * (lo + hi)


def split_params(h: Tensor, channels: int, components: int) -> tuple[Tensor, ...]:
    """A conditioner's output (B x channels*(2+3K) x H x W) -> log-scale a, shift b (each
    B x channels x H x W) and the mixture's logits, means, log-scales (each ... x K)."""
    b, _, height, width = h.shape
    h = h.reshape(b, 2 + 3 * components, channels, height, width)
    a, shift = soft_clamp(h[:, 0], SCALE_BOUND), h[:, 1]
    logits, means, log_scales = h[:, 2:].permute(0, 2, 3, 4, 1).chunk(3, dim=-1)
    return a, shift, logits, means, log_scales.clamp_min(MIN_LOG_SCALE)


# -- the conditioner ---------------------------------------------------------------------------


def layer_norm(channels: int) -> nn.GroupNorm:
    """Normalise each image over channels and positions (one group): no batch statistics."""
    return nn.GroupNorm(1, channels)


class GatedResidual(nn.Module):
    """x + a * sigmoid(g), with (a, g) a 3x3 conv of the normalised x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = layer_norm(channels)
        self.conv = nn.Conv2d(channels, 2 * channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        a, g = self.conv(F.silu(self.norm(x))).chunk(2, dim=1)
        return x + a * torch.sigmoid(g)


class GatedAttention(nn.Module):
    """Multi-head self-attention over every position of the map, gated and added back: lets
    a coupling see the whole image, not just its convs' neighbourhood."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"the network width ({channels}) must be a multiple of the heads")
        self.heads = heads
        self.norm = layer_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, 2 * channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        # positions x head channels, contiguous: the fused CPU kernel needs a unit last
        # stride, and the math fallback (a transposed view) is 2-3x slower
        q, k, v = qkv.transpose(-1, -2).contiguous().unbind(1)
        att = F.scaled_dot_product_attention(q, k, v)
        a, g = self.out(att.transpose(-1, -2).reshape(b, c, h, w)).chunk(2, dim=1)
        return x + a * torch.sigmoid(g)


class GatedNet(nn.Module):
    """The conditioner: conv in, ``blocks`` x [gated residual, gated self-attention], conv
    out. The last conv starts at zero, so a coupling starts as the identity."""

    def __init__(self, in_ch: int, out_ch: int, hidden: int, blocks: int, heads: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, hidden, 3, padding=1)]
        for _ in range(blocks):
            layers.append(GatedResidual(hidden))
            if heads:
                layers.append(GatedAttention(hidden, heads))
        layers += [layer_norm(hidden), nn.SiLU(), nn.Conv2d(hidden, out_ch, 3, padding=1)]
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# -- the coupling ------------------------------------------------------------------------------


class MixtureCoupling(FlowLayer):
    """A logistic-mixture CDF coupling. ``mask`` "checkerboard" transforms the pixels of one
    colour of a checkerboard given the others (the net also sees the mask), "channel" one
    half of the channels given the other; ``parity`` picks which part moves. ``context``
    channels of extra conditioning (the image, for the dequantiser) go to the net as well."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        mask: str,
        parity: int,
        components: int,
        blocks: int,
        heads: int,
        context: int = 0,
    ) -> None:
        super().__init__()
        if mask not in ("checkerboard", "channel"):
            raise ValueError(f"unknown coupling mask {mask!r}")
        if mask == "channel" and channels < 2:
            raise ValueError("a channel coupling needs at least 2 channels")
        self.mask, self.parity, self.components = mask, parity % 2, components
        self.half = channels // 2
        if mask == "checkerboard":
            cond, self.moved = channels + 1, channels
        else:
            cond = self.half if self.parity == 0 else channels - self.half
            self.moved = channels - cond
        width = self.moved * (2 + 3 * components)
        self.net = GatedNet(cond + context, width, hidden, blocks, heads)

    def _params(self, cond: Tensor, context: Tensor | None, dtype: torch.dtype) -> tuple:
        if context is not None:
            cond = torch.cat([cond, context.to(cond.dtype)], dim=1)
        h = self.net(cond).to(dtype)  # back from the autocast dtype before anything exact
        return split_params(h, self.moved, self.components)

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(conditioning input, the part that moves, the checkerboard mask or None)."""
        if self.mask == "checkerboard":
            m = checkerboard(x, self.parity)
            return torch.cat([x * m, m.expand(x.shape[0], 1, -1, -1)], dim=1), x, m
        a, b = x[:, : self.half], x[:, self.half :]
        return (a, b, None) if self.parity == 0 else (b, a, None)

    def _join(self, x: Tensor, moved: Tensor, m: Tensor | None) -> Tensor:
        if m is not None:
            return torch.where(m.bool(), x, moved)
        keep = x[:, : self.half] if self.parity == 0 else x[:, self.half :]
        return torch.cat([keep, moved] if self.parity == 0 else [moved, keep], dim=1)

    def forward(
        self, x: Tensor, logdet: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        cond, moved, m = self._parts(x)
        a, b, logits, means, log_scales = self._params(cond, context, x.dtype)
        t, log_dt = mixture_logit(moved, logits, means, log_scales)
        out = t * torch.exp(a) + b
        per_element = log_dt + a
        if m is not None:
            per_element = per_element * (1 - m)  # the pixels that pass through add nothing
        return self._join(x, out, m), logdet + per_element.flatten(1).sum(1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        cond, moved, m = self._parts(y)  # the conditioning part is the same in x and y
        a, b, logits, means, log_scales = self._params(cond, context, y.dtype)
        t = (moved - b) * torch.exp(-a)
        x = mixture_logit_inverse(t, logits, means, log_scales)
        if torch.is_grad_enabled():
            # The bisection has no gradient. One Newton step from its answer, with the slope
            # held constant, moves x by (almost) nothing and carries the implicit function's
            # gradient, dx = (dt - dlogitF/dparams) / dlogitF/dx: latent inpainting and
            # Explore's projection optimise through this inverse.
            g, log_dg = mixture_logit(x, logits, means, log_scales)
            x = x - (g - t) * torch.exp(-log_dg).detach()
        return self._join(y, x, m)
