"""A hierarchical VAE (ladder VAE, Sønderby et al. 2016; NVAE, Vahdat & Kautz 2020, in
miniature): several levels of latent grids, each half the size of the one below.

Bottom-up, the encoder turns the image into features at every level's size. Top-down, the
decoder starts from a learned constant at the top; at each level it reads a prior
p(z_l | z_above) off its state, and in training the posterior q(z_l | x, z_above) from its
state and the encoder's features there (as a correction of the prior), so the generative path
and the inference path share the decoder. The sampled z_l joins the state through residual
cells, and the state is upsampled to the next level; after the last one a conv gives the pixel
likelihood (discretised, as ``vae.conv``'s, so the negative ELBO is a bound in bits/dim).

    ELBO = E_q[log p(x | z)] - sum_l E_q[KL(q(z_l | x, z_>l) || p(z_l | z_>l))]

Level 1 is the finest (half the image size), level L the top (the layout); the top prior is
a standard normal. KL warm-up ramps the KL weight from 0; during it, KL balancing (NVAE)
weighs each level's KL by its share of the KL per latent number, so a level with little KL is
penalised less and stays in use. After the warm-up the loss is the plain negative ELBO.
"""

from __future__ import annotations

import math
from collections.abc import Generator as Gen
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    GenerativeModel,
    ModelConfig,
    SampleStep,
    StepContext,
    eval_mode,
    setting,
)
from studio.models.capabilities import DETAILS, LatentSpec, SamplingOption
from studio.models.configs import learning_rate
from studio.models.latent_inpaint import LatentInpainting, LatentPlan, LatentView, noise_like
from studio.models.vae.common import (
    LIKELIHOODS,
    ResBlock,
    learn_pixel_noise,
    nats_to_bits_per_dim,
    params_to_images,
    pixel_likelihood,
    pixel_log_prob,
    pixel_noise,
    temperature_of,
    vae_width,
)

MAX_LEVELS = 5
KL_LEVEL_NAMES = tuple(f"kl_level_{i}" for i in range(1, MAX_LEVELS + 1))
LOGVAR_MIN, LOGVAR_MAX = -20.0, 10.0
BALANCE_FLOOR = 1e-4  # nats per latent number: keeps an idle level's weight from reaching 0

TOP_TEMPERATURE = SamplingOption(
    "temperature",
    "float",
    1.0,
    "Temperature",
    "scales the top level's noise (the layout): below 1 is tamer, above 1 wilder",
    minimum=0.01,
    maximum=5.0,
)
DETAIL_TEMPERATURE = SamplingOption(
    "detail_temperature",
    "float",
    1.0,
    "Detail temperature",
    "scales the lower levels' noise: 0 = their prior means (smooth details), 1 = full detail",
    minimum=0.0,
    maximum=5.0,
)
LAYOUT_SEED = SamplingOption(
    "layout_seed",
    "int",
    0,
    "Layout seed",
    "above 0: every image shares the top level drawn from this seed and only the lower levels "
    "vary: the same layout with new details",
    minimum=0,
    maximum=2**31 - 1,
)


@dataclass
class HierarchicalVAEConfig(ModelConfig):
    levels: int = setting(
        3,
        label="Latent levels",
        help="levels of latent grids, each half the size of the one below; the top one holds "
        "the layout, the lower ones the details",
        minimum=2,
        maximum=MAX_LEVELS,
        main=True,
    )
    latent_channels: int = setting(
        8, label="Latent channels", help="channels of each level's latent grid", minimum=1,
        maximum=64, main=True,
    )  # fmt: skip
    width: int = vae_width(32)
    cells: int = setting(
        1,
        label="Residual cells",
        help="residual cells per level, in the encoder and in the decoder",
        minimum=1,
        maximum=8,
    )
    lr: float = learning_rate(1e-3)
    likelihood: str = pixel_likelihood(main=False)
    learn_sigma: bool = learn_pixel_noise()
    sigma: float = pixel_noise()
    kl_warmup_steps: int = setting(
        2000,
        label="KL warm-up steps",
        help="ramp the KL weight from 0 to 1 over this many steps; 0 = off",
        minimum=0,
        main=True,
    )
    kl_balance: bool = setting(
        True,
        label="KL balancing",
        help="during the warm-up, weigh each level's KL by its share, so upper levels stay in use",
    )

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}")


def gaussian_kl2(mq: Tensor, lq: Tensor, mp: Tensor, lp: Tensor) -> Tensor:
    """KL(N(mq, e^lq) || N(mp, e^lp)) per element (never negative)."""
    return 0.5 * (lp - lq + (lq.exp() + (mq - mp).square()) * torch.exp(-lp) - 1.0)


@dataclass
class LevelState:
    """One level of a top-down pass: the latent used, its prior and (in inference) posterior."""

    z: Tensor
    prior: tuple[Tensor, Tensor]  # mean, log-variance
    posterior: tuple[Tensor, Tensor] | None = None

    def kl(self) -> Tensor:
        """Per-image KL(q || p) in nats at the sampled upper levels."""
        assert self.posterior is not None
        return gaussian_kl2(*self.posterior, *self.prior).flatten(1).sum(1)


def _stats(h: Tensor) -> tuple[Tensor, Tensor]:
    mean, logvar = h.float().chunk(2, dim=1)
    return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class HierarchicalVAE(LatentInpainting, GenerativeModel):
    info = FamilyInfo(
        key="vae.hierarchical",
        kind="vae",
        display_name="Hierarchical VAE",
        summary="Hierarchical VAE: samples the layout at a coarse top level, then details at "
        "finer levels given it, in one top-down pass; built for a tighter bits/dim bound than "
        "one-level VAEs, and Explore's sliders move the layout alone.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.LATENT
        | Capability.LIKELIHOOD
        | Capability.INPAINT,
        loss_names=("loss", "bpd", "recon", "kl", *KL_LEVEL_NAMES),
    )
    Config = HierarchicalVAEConfig
    config: HierarchicalVAEConfig
    conditions = ("temperature", "detail_temperature", "layout_seed")
    sampling_options = (TOP_TEMPERATURE, DETAIL_TEMPERATURE, LAYOUT_SEED)
    supports_accumulation = True

    def __init__(self, config: HierarchicalVAEConfig) -> None:
        super().__init__(config)
        c = config
        top = 2**c.levels
        if c.resolution % top or c.resolution < top:
            raise ValueError(
                f"a hierarchical VAE with {c.levels} levels needs the resolution to be a "
                f"multiple of {top}; got {c.resolution}. Use fewer levels."
            )
        ch = [c.width * min(2**i, 4) for i in range(c.levels + 1)]  # level 0 = the image
        zc = c.latent_channels
        self.sizes = [c.resolution // 2**i for i in range(c.levels + 1)]

        def cells(n: int) -> nn.Sequential:
            return nn.Sequential(*[ResBlock(n) for _ in range(c.cells)])

        # Bottom-up: image -> features at levels 1..L.
        self.stem = nn.Conv2d(c.channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1), cells(ch[i + 1]))
            for i in range(c.levels)
        )
        # Top-down, index i for level i + 1.
        self.top = nn.Parameter(torch.zeros(1, ch[-1], self.sizes[-1], self.sizes[-1]))
        self.prior_nets = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Conv2d(ch[i + 1], 2 * zc, 3, padding=1))
            for i in range(c.levels - 1)  # the top prior is a standard normal
        )
        self.posterior_nets = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Conv2d(2 * ch[i + 1], 2 * zc, 3, padding=1))
            for i in range(c.levels)
        )
        self.z_in = nn.ModuleList(nn.Conv2d(zc, ch[i + 1], 1) for i in range(c.levels))
        self.dec_cells = nn.ModuleList(cells(ch[i + 1]) for i in range(c.levels))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(ch[i + 1], ch[i], 4, 2, 1) for i in range(c.levels)
        )
        self.out = nn.Sequential(
            cells(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], c.channels, 3, padding=1)
        )
        for net in [*self.prior_nets, *self.posterior_nets]:
            nn.init.zeros_(net[-1].weight)  # start with q = p = N(0, 1): the KL starts at 0
            nn.init.zeros_(net[-1].bias)
        start = torch.tensor(math.log(c.sigma))
        self.log_sigma: Tensor | None
        if c.likelihood != "gaussian":
            self.log_sigma = None
        elif c.learn_sigma:
            self.log_sigma = nn.Parameter(start)
        else:
            self.register_buffer("log_sigma", start)

    @property
    def dims(self) -> int:
        c = self.config
        return c.channels * c.resolution * c.resolution

    def level_shape(self, level: int) -> tuple[int, int, int]:
        """The latent grid of ``level`` (1 = finest, L = top)."""
        return (self.config.latent_channels, self.sizes[level], self.sizes[level])

    # -- the two passes ------------------------------------------------------------------
    def bottom_up(self, x: Tensor) -> list[Tensor]:
        """Encoder features at levels 1..L."""
        h, feats = self.stem(x), []
        for down in self.down:
            h = down(h)
            feats.append(h)
        return feats

    def top_down(
        self,
        n: int,
        noise: list[Tensor | None],
        feats: list[Tensor] | None = None,
        top: Tensor | None = None,
        scale: float = 1.0,
    ) -> tuple[Tensor, list[LevelState]]:
        """(pixel likelihood parameters, the levels from the top down).

        With encoder ``feats`` each z_l is drawn from the posterior with ``noise[l-1]``;
        without, from the prior with the noise times ``scale`` (None = the prior mean). A given
        ``top`` (N x C x h x w) replaces the top level's draw."""
        c = self.config
        d = self.top.expand(n, -1, -1, -1)
        states: list[LevelState] = []
        for i in reversed(range(c.levels)):
            if i == c.levels - 1:
                zeros = torch.zeros(n, *self.level_shape(i + 1), device=d.device)
                prior = (zeros, zeros)
            else:
                prior = _stats(self.prior_nets[i](d))
            eps = noise[i]
            if feats is not None:
                dm, dl = _stats(self.posterior_nets[i](torch.cat([d, feats[i].to(d.dtype)], 1)))
                post = (prior[0] + dm, (prior[1] + dl).clamp(LOGVAR_MIN, LOGVAR_MAX))
                z = post[0] if eps is None else post[0] + torch.exp(0.5 * post[1]) * eps
            else:
                post = None
                z = prior[0] if eps is None else prior[0] + torch.exp(0.5 * prior[1]) * eps * scale
            if top is not None and i == c.levels - 1:
                z = top
            states.append(LevelState(z, prior, post))
            d = self.dec_cells[i](d + self.z_in[i](z.to(d.dtype)))
            d = self.up[i](d)
        return self.out(d), states

    def log_px(self, x: Tensor, params: Tensor) -> Tensor:
        return pixel_log_prob(x, params.float(), self.config.likelihood, self.log_sigma)

    def kl_weights(self, kls: list[Tensor], step: int) -> list[float | Tensor]:
        """Each level's KL weight at ``step``: warm-up times (during it) the balancing share."""
        c = self.config
        ramp = 1.0 if c.kl_warmup_steps <= 0 else min(1.0, step / c.kl_warmup_steps)
        if not c.kl_balance or ramp >= 1.0:
            return [ramp] * len(kls)
        per_number = torch.stack(
            [kl.detach().mean() / math.prod(self.level_shape(i + 1)) for i, kl in enumerate(kls)]
        ).clamp_min(BALANCE_FLOOR)
        share = per_number * len(kls) / per_number.sum()
        return [ramp * (ramp + (1 - ramp) * s) for s in share.unbind(0)]

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.optimizers = {"vae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}
        return self.optimizers

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        x = batch.images
        noise: list[Tensor | None] = [
            ctx.randn(len(x), *self.level_shape(i + 1), device=x.device)
            for i in range(self.config.levels)
        ]
        with ctx.autocast():
            params, states = self.top_down(len(x), noise, self.bottom_up(x))
        recon = -self.log_px(x, params).mean()
        kls = [s.kl().mean() for s in reversed(states)]  # level 1 first
        weights = self.kl_weights(kls, ctx.step)
        loss = recon + sum(w * kl for w, kl in zip(weights, kls, strict=True))
        self.optimizer_step("vae", loss, ctx)
        kl = torch.stack(kls).sum().detach()
        out = {
            "loss": loss.detach(),
            "bpd": nats_to_bits_per_dim(recon.detach() + kl, self.dims),
            "recon": recon.detach(),
            "kl": kl,
        }
        out.update(zip(KL_LEVEL_NAMES, [k.detach() for k in kls], strict=False))
        return out

    # -- likelihood ----------------------------------------------------------------------
    @torch.no_grad()
    def elbo_parts(
        self, images: Tensor, generator: torch.Generator | None = None, samples: int = 1
    ) -> tuple[Tensor, Tensor]:
        """(E_q[log p(x|z)] per image, KL per level: N x L with level 1 first), in nats,
        averaged over ``samples`` draws from a CPU generator (fixed seed when None)."""
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        x = images.to(self.device).float()
        rec = torch.zeros(len(x), device=x.device)
        kl = torch.zeros(len(x), self.config.levels, device=x.device)
        k = max(1, samples)
        with eval_mode(self):
            feats = self.bottom_up(x)
            for _ in range(k):
                noise: list[Tensor | None] = [
                    torch.randn((len(x), *self.level_shape(i + 1)), generator=gen).to(x.device)
                    for i in range(self.config.levels)
                ]
                params, states = self.top_down(len(x), noise, feats)
                rec += self.log_px(x, params)
                kl += torch.stack([s.kl() for s in reversed(states)], dim=1)
        return rec / k, kl / k

    def log_likelihood(
        self, images: Tensor, generator: torch.Generator | None = None, samples: int = 1
    ) -> Tensor:
        """Per-image ELBO in nats: a lower bound on log p(x) of images read as 8-bit data."""
        rec, kl = self.elbo_parts(images, generator, samples)
        return rec - kl.sum(1)

    def bits_per_dim(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        samples: int = 1,
    ) -> Tensor:
        """Per-image negative ELBO in bits per dimension (``vae.conv``'s convention); labels
        are ignored."""
        return nats_to_bits_per_dim(-self.log_likelihood(images, generator, samples), self.dims)

    # -- the latent protocol: the top level ------------------------------------------------
    def latent_spec(self) -> LatentSpec:
        return LatentSpec(
            (math.prod(self.level_shape(self.config.levels)),),
            encoder="the top level's posterior mean (the lower levels are decoded at their "
            "prior means)",
            directions="PCA of the top-level posterior means of {n} of {source}; the sliders "
            "move the top level (the layout) while the lower levels follow at their prior means",
            details_option=DETAILS,  # or are drawn anew: decode_latents_resampled
        )

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        return torch.randn(n, self.latent_spec().shape[0], generator=generator) * temperature

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        top = z.reshape(len(z), *self.level_shape(self.config.levels))
        params, _ = self.top_down(len(z), [None] * self.config.levels, top=top)
        return params_to_images(params, self.config.likelihood)

    def decode_latents_resampled(
        self, z: Tensor, labels: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        """The top level ``z`` kept, the levels below drawn from their priors given it with
        noise from ``generator`` (CPU): the same layout with new details."""
        top = z.reshape(len(z), *self.level_shape(self.config.levels))
        noise: list[Tensor | None] = [
            torch.randn((len(z), *self.level_shape(i + 1)), generator=generator).to(z)
            for i in range(self.config.levels - 1)
        ]
        params, _ = self.top_down(len(z), [*noise, None], top=top)
        return params_to_images(params, self.config.likelihood)

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        return self.encode(images).reshape(len(images), -1)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """The top level's posterior mean, N x C x h x w (it sees only the encoder's top
        features: the levels below are conditioned on it, not the other way round)."""
        with eval_mode(self):
            x = images.to(self.device).float()
            feats = self.bottom_up(x)
            d = self.top.expand(len(x), -1, -1, -1)
            return _stats(self.posterior_nets[-1](torch.cat([d, feats[-1]], 1)))[0]

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        zb = self.encode_latents(self.decode_latents(z, labels).clamp(-1, 1), labels)
        return zb, zb

    def inpaint_view(self, labels: Tensor | None) -> LatentView:
        return _TopInpaint(self, labels)

    # -- sampling ------------------------------------------------------------------------
    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Gen[SampleStep, None, Tensor]:
        self.check_conditions(conditions)
        t = temperature_of(conditions)
        detail = float(conditions.get("detail_temperature", 1.0))
        if not (math.isfinite(detail) and detail >= 0):
            raise ValueError(f"detail_temperature must be 0 or more, got {detail}")
        layout_seed = int(conditions.get("layout_seed") or 0)
        c = self.config
        shape = self.level_shape(c.levels)
        if layout_seed > 0:
            one = torch.randn((1, *shape), generator=torch.Generator().manual_seed(layout_seed))
            top = one.expand(n, *shape) * t
        else:
            top = torch.randn((n, *shape), generator=generator) * t
        noise: list[Tensor | None] = [
            torch.randn((n, *self.level_shape(i + 1)), generator=generator).to(self.device)
            for i in range(c.levels - 1)
        ]
        with torch.no_grad(), eval_mode(self):
            params, _ = self.top_down(n, [*noise, None], top=top.to(self.device), scale=detail)
        images = params_to_images(params, c.likelihood)
        yield SampleStep(1, 1, images)
        return images


class _TopInpaint(LatentView):
    """Inpainting optimises the top level, starting from the posterior mean of the image with a
    grey hole, plus noise; the lower levels follow at their prior means."""

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        grey = torch.where(hole, torch.zeros_like(x), x)
        mean = self.model.encode_latents(grey, self.labels).float()
        return mean + plan.start_noise * noise_like(mean, gen)
