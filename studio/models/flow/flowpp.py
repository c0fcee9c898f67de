"""Flow++ (Ho et al. 2019): logistic-mixture CDF couplings, conditioners with gated residual
blocks and self-attention, and variational dequantisation.

The flow is RealNVP's multi-scale stack with Glow's actnorm and 1x1 convolutions before each
coupling, and the affine coupling replaced by the mixture-CDF one (``mixture.py``).

Variational dequantisation: RealNVP and Glow add uniform noise u to each 8-bit pixel k and fit
a density to k + u; the noise is blind to the image, so the flow must spread density evenly
over every bin. Flow++ draws u from a learned q(u | image) instead: a small conditional flow
(mixture couplings whose nets also see the image) maps Gaussian noise to (0, 1) through a
sigmoid. Trained jointly on

    log P(k) >= E_{u ~ q(u|k)} [ log p(k + u) - log q(u | k) ],

which with q uniform (log q = 0) is exactly the bound RealNVP and Glow train on, in the same
pixel units: the bits/dim of all three compare. ``dequant`` (plotted) is E[log q] in bits/dim,
what the bound pays for q not being uniform (never below 0 in expectation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.models.base import Batch, FamilyInfo, StepContext, eval_mode, setting
from studio.models.flow import (
    CAPABILITIES,
    FlowConfig,
    FlowModel,
    check_divisible,
    coupling_width,
    factored_prior,
    multiscale_levels,
)
from studio.models.flow.layers import (
    LOG2,
    ActNorm,
    FlowLayer,
    InvConv1x1,
    Level,
    MultiScaleFlow,
    Split,
    Squeeze,
    dequantize,
    standard_normal_logp,
    to_bits_per_dim,
)
from studio.models.flow.mixture import GatedResidual, MixtureCoupling

U_MARGIN = 1e-6  # keeps u inside (0, 1) in float32, so k + u never lands in the next bin


@dataclass
class FlowPlusPlusConfig(FlowConfig):
    scales: int = multiscale_levels("Scales")
    couplings: int = setting(
        2,
        label="Couplings per stage",
        help="mixture couplings per mask type per scale",
        minimum=1,
        maximum=16,
        main=True,
    )
    # 32, not 64: at 64 one step (32 px, batch 32) cost ~8 s on one CPU thread, two thirds of
    # it in the full-resolution couplings and the dequantiser (the conv cost goes with width^2)
    hidden: int = coupling_width(32)
    blocks: int = setting(
        2,
        label="Blocks per coupling net",
        help="gated residual blocks (each followed by self-attention) in each coupling's net",
        minimum=1,
        maximum=10,
    )
    components: int = setting(
        8,
        label="Mixture components",
        help="logistics in each coupling's CDF; more = more flexible, slower",
        minimum=1,
        maximum=64,
        main=True,
    )
    heads: int = setting(
        4,
        label="Attention heads",
        help="self-attention heads in the coupling nets (the width must divide by it); 0 = none",
        minimum=0,
        maximum=16,
    )
    attention_res: int = setting(
        16,
        label="Attention resolution",
        help="self-attention only in couplings on maps this size or smaller (its cost grows "
        "with the square of the pixel count)",
        minimum=0,
        maximum=128,
    )
    dequant_couplings: int = setting(
        2,
        label="Dequantiser couplings",
        help="couplings of the learned dequantisation flow; 0 = uniform noise as in RealNVP",
        minimum=0,
        maximum=8,
    )
    learned_prior: bool = factored_prior(False)


class Dequantizer(nn.Module):
    """q(u | image): Gaussian noise through mixture couplings conditioned on image features,
    then a sigmoid into (0, 1). Returns u and log q(u | image) per image (a density on the
    unit cube, i.e. in pixel units)."""

    def __init__(self, c: FlowPlusPlusConfig, heads: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c.channels, c.hidden, 3, padding=1),
            *[GatedResidual(c.hidden) for _ in range(c.blocks)],
        )
        self.couplings = nn.ModuleList(
            MixtureCoupling(
                c.channels, c.hidden, "checkerboard", j, c.components, c.blocks, heads, c.hidden
            )
            for j in range(c.dequant_couplings)
        )

    def forward(self, images: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        context = self.features(images.to(eps.dtype))
        y, logdet = eps, torch.zeros(eps.shape[0], device=eps.device, dtype=eps.dtype)
        for coupling in self.couplings:
            y, logdet = coupling(y, logdet, context)
        # d sigmoid(y) / dy = sigmoid(y) sigmoid(-y)
        logdet = logdet + (F.logsigmoid(y) + F.logsigmoid(-y)).flatten(1).sum(1)
        u = torch.sigmoid(y).clamp(U_MARGIN, 1 - U_MARGIN)
        return u, standard_normal_logp(eps.flatten(1)) - logdet


class FlowPlusPlus(FlowModel):
    info = FamilyInfo(
        key="flow.flowpp",
        kind="flow",
        display_name="Flow++",
        summary="Flow++: draws an image in one inverse pass through logistic-mixture couplings "
        "with self-attention (each inverted by bisection), and learns its dequantisation "
        "noise; built for lower bits/dim than RealNVP and Glow, at a higher cost per step.",
        capabilities=CAPABILITIES,
        loss_names=("bpd", "logdet", "dequant", "grad_norm"),
    )
    Config = FlowPlusPlusConfig
    config: FlowPlusPlusConfig

    def __init__(self, config: FlowPlusPlusConfig) -> None:
        super().__init__(config)
        c = config
        check_divisible(c.resolution, 2**c.scales, f"Flow++ with {c.scales} scales")
        if c.heads and c.hidden % c.heads:
            raise ValueError(
                f"Flow++: the network width ({c.hidden}) must be a multiple of the attention "
                f"heads ({c.heads})"
            )
        channels, size, levels = c.channels, c.resolution, []
        for _ in range(c.scales - 1):
            layers = self._steps(channels, size, "checkerboard")
            layers.append(Squeeze())
            channels, size = channels * 4, size // 2
            layers += self._steps(channels, size, "channel")
            split = Split(channels, c.learned_prior)
            levels.append(Level(layers, split))
            channels -= split.out
        levels.append(Level(self._steps(channels, size, "checkerboard")))
        self.flow = MultiScaleFlow(levels, (c.channels, c.resolution, c.resolution))
        self.dequantizer = (
            Dequantizer(c, self._heads(c.resolution)) if c.dequant_couplings else None
        )

    def _heads(self, size: int) -> int:
        """Attention heads of a coupling on a ``size`` x ``size`` map (0: none)."""
        return self.config.heads if size <= self.config.attention_res else 0

    def _steps(self, channels: int, size: int, mask: str) -> list[FlowLayer]:
        c = self.config
        heads = self._heads(size)
        layers: list[FlowLayer] = []
        for j in range(c.couplings):
            layers += [
                ActNorm(channels),
                InvConv1x1(channels),
                MixtureCoupling(channels, c.hidden, mask, j, c.components, c.blocks, heads),
            ]
        return layers

    # -- dequantisation ------------------------------------------------------------------
    def dequantise(self, images: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """(flow input, log q(u | images) per image) for noise ``eps``: standard normal for
        the learned dequantiser, uniform on [0, 1) without one (then log q = 0)."""
        if self.dequantizer is None:
            return dequantize(images, eps), torch.zeros(len(images), device=images.device)
        u, log_q = self.dequantizer(images, eps)
        return dequantize(images, u), log_q.float()

    def _draw(self, images: Tensor, gen: Any) -> Tensor:
        """Dequantisation noise for ``images`` from ``gen`` (a StepContext or a CPU generator)."""
        shape = images.shape
        if isinstance(gen, StepContext):
            draw = gen.randn if self.dequantizer is not None else gen.rand
            return draw(*shape, device=images.device).to(images.dtype)
        draw = torch.randn if self.dequantizer is not None else torch.rand
        return draw(shape, generator=gen).to(images.device, images.dtype)

    def _bound(self, images: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log p(k + u) - log q(u | k) in nats, flow log|det|, log q) per image."""
        x, log_q = self.dequantise(images, eps)
        ll, logdet = self._log_likelihood(x)
        return ll - log_q.to(ll.dtype), logdet, log_q

    # -- likelihood ----------------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(
        self, images: Tensor, generator: torch.Generator | None = None, samples: int = 1
    ) -> Tensor:
        """Per-image lower bound on log P(8-bit images) in nats: the dequantisation bound
        averaged over ``samples`` draws of u ~ q(u | image), from a CPU generator (a fixed
        seed when None, so repeated evaluations agree)."""
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        x = self._inputs(images)
        total = torch.zeros(len(x), device=x.device)
        with eval_mode(self):
            for _ in range(max(1, samples)):
                total += self._bound(x, self._draw(x, gen))[0].float()
        return total / max(1, samples)

    # -- latents -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """The flow's latent of each image, dequantised by the centre of q (eps = 0; the bin
        midpoint without a learned dequantiser): decoding it gives the image back."""
        x = self._inputs(images)
        eps = torch.zeros_like(x) if self.dequantizer is not None else torch.full_like(x, 0.5)
        with eval_mode(self):
            return self.flow(self.dequantise(x, eps)[0])[0]

    # -- training ------------------------------------------------------------------------
    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        images = batch.images
        eps = self._draw(images, ctx)
        with ctx.autocast():
            bound, logdet, log_q = self._bound(images, eps)
        bpd = to_bits_per_dim(bound, self.dims).mean()
        grad_norm = self.optimizer_step("flow", bpd, ctx, clip=self.config.max_grad_norm)
        out = {
            "bpd": bpd.detach(),
            "logdet": logdet.detach().float().mean() / (self.dims * LOG2),
            "dequant": log_q.detach().float().mean() / (self.dims * LOG2),
        }
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        return out
