"""VQ-VAE (van den Oord et al. 2017): a conv autoencoder whose latent grid is snapped to the
nearest entry of a learned codebook.

* The codebook follows the encoder outputs by exponential moving averages (Razavi et al.
  2019) instead of by gradients: each code moves to the running mean of the vectors assigned
  to it. The encoder gets the reconstruction gradient straight through the snap and a
  commitment loss keeps its outputs near their codes.
* Codes nobody has picked for ``restart_after`` steps are "dead": each one is re-initialised
  from a random encoder output of the current batch (drawn with the step's generator, so a
  resumed run replays exactly).

Sampling: there is no learned prior over code grids here, so samples draw each position's
code independently from the codebook's usage histogram (the EMA cluster sizes;
``temperature`` flattens it towards uniform). Expect rough, texture-like samples;
reconstructions and the latent grid are the point of this model. A learned prior over the
grids is a family of its own built on a VQ-VAE run: ``ar.vq_prior`` (``ar/vq_prior.py``).
"""

from __future__ import annotations

from collections.abc import Generator as Gen
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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
from studio.models.capabilities import TEMPERATURE, AutoencoderSpec, CodeSpec, LatentSpec
from studio.models.configs import learning_rate
from studio.models.latent_inpaint import LatentInpainting, LatentPlan, LatentView, noise_like
from studio.models.vae.common import ResBlock, group_norm, temperature_of, vae_width

MIN_COUNT = 1e-20  # EMA cluster sizes below this are treated as empty (no division)


@dataclass
class VQVAEConfig(ModelConfig):
    codebook_size: int = setting(
        256, label="Codebook size", help="number of codes", minimum=2, maximum=8192, main=True
    )
    embedding_dim: int = setting(
        32, label="Code size", help="numbers per code", minimum=2, maximum=512
    )
    downsample: int = setting(
        4,
        label="Downsampling",
        help="image pixels per code along each side",
        choices=(2, 4, 8),
        main=True,
    )
    width: int = vae_width(64)
    lr: float = learning_rate(5e-4)
    commitment: float = setting(
        0.25,
        label="Commitment weight",
        help="pulls encoder outputs to their codes",
        minimum=0.0,
        maximum=10.0,
    )
    decay: float = setting(
        0.99,
        label="Codebook EMA decay",
        help="closer to 1: codes move more slowly",
        minimum=0.5,
        maximum=0.9999,
    )
    restart_after: int = setting(
        100,
        label="Dead-code restart",
        help="re-seed codes unused this many steps; 0 = never",
        minimum=0,
    )

    def __post_init__(self) -> None:
        if self.downsample > self.resolution:
            raise ValueError(
                f"downsample {self.downsample} leaves no code grid at {self.resolution}px"
            )


def _stages(downsample: int) -> int:
    stages = downsample.bit_length() - 1
    if stages < 1 or 2**stages != downsample:
        raise ValueError(f"downsample must be 2, 4 or 8, got {downsample}")
    return stages


class VQVAE(LatentInpainting, GenerativeModel):
    info = FamilyInfo(
        key="vae.vqvae",
        kind="vae",
        display_name="VQ-VAE",
        summary="VQ-VAE: sharp reconstructions through a discrete codebook; without a learned "
        "prior its random samples are rough (train a VQ-VAE prior on the run for that).",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.LATENT
        | Capability.INPAINT
        | Capability.CODES
        | Capability.AUTOENCODER,
        loss_names=("loss", "recon", "commit", "perplexity", "usage", "restarts"),
    )
    Config = VQVAEConfig
    config: VQVAEConfig
    conditions: tuple[str, ...] = ("temperature",)
    sampling_options = (TEMPERATURE,)

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__(config)
        c = config
        stages = _stages(c.downsample)
        enc: list[nn.Module] = [nn.Conv2d(c.channels, c.width, 3, 1, 1)]
        ch = c.width
        for _ in range(stages):
            enc += [nn.Conv2d(ch, ch * 2, 4, 2, 1), group_norm(ch * 2), nn.SiLU()]
            ch *= 2
        enc += [ResBlock(ch), ResBlock(ch), nn.SiLU(), nn.Conv2d(ch, c.embedding_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(c.embedding_dim, ch, 3, 1, 1), ResBlock(ch), ResBlock(ch)]
        for _ in range(stages):
            dec += [nn.SiLU(), nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), group_norm(ch // 2)]
            ch //= 2
        dec += [nn.SiLU(), nn.Conv2d(ch, c.channels, 3, 1, 1)]
        self.decoder = nn.Sequential(*dec)

        # The codebook is state, not a parameter: the EMA sets it. ema_sum / ema_count is
        # each code's running mean of assigned vectors; ``idle`` counts steps since last use
        # and starts at the restart threshold, so codes the first batch does not pick are
        # seeded from real encoder outputs at once.
        k, d = c.codebook_size, c.embedding_dim
        init = torch.randn(k, d) / d**0.5
        self.register_buffer("codebook", init.clone())
        self.register_buffer("ema_sum", init.clone())
        self.register_buffer("ema_count", torch.ones(k))
        self.register_buffer("idle", torch.full((k,), float(c.restart_after)))

    # -- quantisation ------------------------------------------------------------------------
    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the closest code for each row of ``flat`` (N x D)."""
        cb = self.codebook
        with torch.autocast(flat.device.type, enabled=False):  # distances need float32
            flat = flat.float()
            dist = flat.square().sum(1, keepdim=True) - 2 * flat @ cb.t() + cb.square().sum(1)[None]
        return dist.argmin(1)

    def _flatten(self, z: Tensor) -> Tensor:
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])

    def _grid(self, flat: Tensor, like: Tensor) -> Tensor:
        b, d, h, w = like.shape
        return flat.view(b, h, w, d).permute(0, 3, 1, 2)

    @torch.no_grad()
    def ema_update(self, flat: Tensor, idx: Tensor) -> Tensor:
        """Move each used code towards the mean of the vectors assigned to it; return the
        batch's per-code counts."""
        c = self.config
        onehot = F.one_hot(idx, c.codebook_size).to(flat.dtype)
        counts = onehot.sum(0)
        self.ema_count.mul_(c.decay).add_(counts, alpha=1 - c.decay)
        self.ema_sum.mul_(c.decay).add_(onehot.t() @ flat, alpha=1 - c.decay)
        # An unused code's sum and count decay together, so it keeps its place; once both have
        # all but vanished (thousands of idle steps) the old position is simply kept.
        alive = self.ema_count > MIN_COUNT
        means = self.ema_sum / self.ema_count.clamp_min(MIN_COUNT)[:, None]
        self.codebook.copy_(torch.where(alive[:, None], means, self.codebook))
        return counts

    @torch.no_grad()
    def restart_dead(self, flat: Tensor, counts: Tensor, generator: torch.Generator) -> Tensor:
        """Re-seed codes idle for ``restart_after`` steps from random rows of ``flat``; return
        how many were restarted. Fixed shapes throughout: no host sync."""
        c = self.config
        self.idle.add_(1).masked_fill_(counts > 0, 0)
        if c.restart_after <= 0:
            return torch.zeros((), device=flat.device)
        dead = self.idle >= c.restart_after
        pick = torch.randint(
            len(flat), (c.codebook_size,), generator=generator, device=generator.device
        )
        fresh = flat[pick.to(flat.device)]
        self.codebook.copy_(torch.where(dead[:, None], fresh, self.codebook))
        self.ema_sum.copy_(torch.where(dead[:, None], fresh, self.ema_sum))
        self.ema_count.copy_(torch.where(dead, torch.ones_like(self.ema_count), self.ema_count))
        self.idle.masked_fill_(dead, 0)
        return dead.sum().float()

    # -- training --------------------------------------------------------------------------
    # Accumulation splits the batch; the codebook's EMA then updates once per micro-batch.
    supports_accumulation = True

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.optimizers = {"vq": torch.optim.Adam(self.parameters(), lr=self.config.lr)}
        return self.optimizers

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Reconstruct ``x``: returns (decoder output, encoder output z_e, quantised z_q,
        code indices). Autocast, if any, is the caller's; z_e and z_q are float32."""
        z_e = self.encoder(x).float()
        flat = self._flatten(z_e)
        idx = self.nearest(flat.detach())
        z_q = self._grid(self.codebook[idx], z_e)
        # Straight-through: the decoder sees z_q, the encoder gets the decoder's gradient.
        out = self.decoder(z_e + (z_q - z_e).detach())
        return out.float(), z_e, z_q, idx

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c, x = self.config, batch.images
        with ctx.autocast():
            out, z_e, z_q, idx = self(x)
        recon = F.mse_loss(out.float(), x.float())
        commit = F.mse_loss(z_e, z_q)  # the codebook is a buffer: only the encoder moves
        loss = recon + c.commitment * commit

        self.optimizer_step("vq", loss, ctx)

        flat = self._flatten(z_e.detach())
        counts = self.ema_update(flat, idx)
        restarts = self.restart_dead(flat, counts, ctx.generator)
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())
        return {
            "loss": loss.detach(),
            "recon": recon.detach(),
            "commit": commit.detach(),
            "perplexity": perplexity,
            "usage": (counts > 0).float().mean(),  # fraction of codes this batch used
            "restarts": restarts,
        }

    # -- latent space ----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images -> quantised latent grid, B x embedding_dim x H/downsample x W/downsample."""
        with eval_mode(self):
            z_e = self.encoder(images.to(self.device)).float()
        return self._grid(self.codebook[self.nearest(self._flatten(z_e))], z_e)

    @torch.no_grad()
    def encode_indices(self, images: Tensor) -> Tensor:
        """Images -> code indices, B x H/downsample x W/downsample (long)."""
        with eval_mode(self):
            z_e = self.encoder(images.to(self.device)).float()
        b, _, h, w = z_e.shape
        return self.nearest(self._flatten(z_e)).view(b, h, w)

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """A latent grid (B x D x h x w floats) or code indices (B x h x w long) -> images."""
        del labels  # unconditional
        z = z.to(self.device)
        if not z.is_floating_point():
            z = self.codebook[z].permute(0, 3, 1, 2)
        with eval_mode(self):
            return self.decoder(z.float()).float().clamp(-1, 1)

    def latent(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
        """n code-index grids, each position drawn independently from the usage histogram."""
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        c = self.config
        side = c.resolution // c.downsample
        logp = torch.log(self.ema_count.detach().float().cpu().clamp_min(1e-12)) / temperature
        probs = torch.softmax(logp, 0)
        idx = torch.multinomial(probs, n * side * side, replacement=True, generator=generator)
        return idx.view(n, side, side).to(self.device)

    # -- the latent protocol (studio.models.capabilities.LatentFamily) ---------------------------
    def latent_spec(self) -> LatentSpec:
        c = self.config
        side = c.resolution // c.downsample
        return LatentSpec(
            (c.embedding_dim, side, side),
            encoder="the nearest codes of the encoder's grid",
            discrete=True,
            directions="PCA of the encoder's code grids for {n} of {source}",
        )

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        # Code grids drawn from the codebook's usage, as the model samples them.
        idx = self.latent(n, generator, temperature=max(temperature, 1e-3))
        return self.codebook[idx].permute(0, 3, 1, 2).reshape(n, -1).float().cpu()

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        shape = self.latent_spec().shape
        return self.decoder(z.reshape(len(z), *shape)).float().clamp(-1, 1)

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        return self.encode(images).reshape(len(images), -1)

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        zb = self.encode_latents(self.decode_latents(z, labels), labels)
        return zb, zb

    # -- the code protocol (studio.models.capabilities.CodeFamily): an image codec ---------------
    def code_spec(self) -> CodeSpec:
        c = self.config
        side = c.resolution // c.downsample
        return CodeSpec(c.resolution, (side, side), c.codebook_size, c.channels)

    def encode_codes(self, images: Tensor) -> Tensor:
        return self.encode_indices(images).cpu()

    def decode_codes(self, codes: Tensor) -> Tensor:
        return self.decode(codes.long()).cpu()

    # -- the first stage of latent diffusion (studio.models.capabilities.AutoencoderFamily) -----
    def autoencoder_spec(self) -> AutoencoderSpec:
        return AutoencoderSpec(self.config.embedding_dim, self.config.downsample)

    @torch.no_grad()
    def encode_to_grid(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The continuous pre-quantisation grid z_e (deterministic: no posterior to draw
        from), as LDM's VQ first stage hands its diffusion model."""
        del generator
        with eval_mode(self):
            return self.encoder(images.to(self.device)).float()

    @torch.no_grad()
    def decode_from_grid(self, latents: Tensor) -> Tensor:
        """Quantise the grid to its nearest codes, then decode (LDM's VQ first stage)."""
        z = latents.to(self.device).float()
        codes = self._grid(self.codebook[self.nearest(self._flatten(z))], z)
        with eval_mode(self):
            return self.decoder(codes).float().clamp(-1, 1)

    def inpaint_view(self, labels: Tensor | None) -> LatentView:
        return _VQInpaint(self, labels)

    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Gen[SampleStep, None, Tensor]:
        self.check_conditions(conditions)
        idx = self.latent(n, generator, temperature_of(conditions))
        images = self.decode(idx)
        yield SampleStep(1, 1, images)
        return images


class _VQInpaint(LatentView):
    """Optimises the continuous pre-quantisation grid z_e; the decoder sees its codes."""

    model: VQVAE

    def _quantised(self, z: Tensor) -> Tensor:
        b, d, h, w = z.shape
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, d)
        codes = self.model.codebook[self.model.nearest(flat)]
        return codes.view(b, h, w, d).permute(0, 3, 1, 2)

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        grey = torch.where(hole, torch.zeros_like(x), x)
        z = self.model.encoder(grey).float()
        return z + plan.start_noise * z.std() * noise_like(z, gen)

    def images(self, z: Tensor) -> Tensor:
        straight = z + (self._quantised(z) - z).detach()  # the decoder sees codes
        return self.model.decoder(straight).float()

    def energy(self, z: Tensor) -> Tensor:
        return 0.5 * (z - self._quantised(z)).flatten(1).square().sum(1)

    def final(self, z: Tensor) -> Tensor:
        return self.model.decoder(self._quantised(z)).float().clamp(-1, 1)
