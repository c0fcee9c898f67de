"""A KL-regularised image autoencoder (Rombach et al. 2022, Stable Diffusion's first stage):
diffusers' ``AutoencoderKL`` trained on the user's images, so its weights are diffusers
weights and the run's ``model/`` folder loads with ``AutoencoderKL.from_pretrained``.

The encoder maps an image of side S to a Gaussian posterior over a grid of
``latent_channels`` x S/d x S/d numbers (d = 4 or 8: one halving per down block after the
first); the decoder maps a grid back to pixels. Training minimises

* the reconstruction error: L1, plus ``mse_weight`` times the squared error;
* ``kl_weight`` times the KL divergence of the posterior from N(0, I), summed over the latent
  and divided by the pixel count, so the weight means what it means in Stable Diffusion's
  autoencoder (whose losses are per-image sums): a small number (1e-6) keeps the latent's
  scale bounded without blurring the reconstructions;
* optionally, from step ``disc_start`` on, ``disc_weight`` times a hinge PatchGAN loss
  (the image-to-image families' PatchGAN judging single images), for sharper textures;
* optionally, ``perceptual_weight`` times the squared distance between the features of the
  image and of its reconstruction under the feature extractor the studio trains on the
  run's own data (the trainer hands the family that function; nothing is downloaded).

The point of the model is its latent grid (another run's diffusion model learns it) and its
reconstructions; its own samples, decoded from N(0, I) grids, are blurry blobs: the
posterior is only weakly pulled towards N(0, I), so the prior is a poor model of the latents.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from collections.abc import Generator as Gen
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import Tensor, nn

from studio.core import atomic
from studio.models.base import (
    MODEL_CONFIG,
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
from studio.models.capabilities import TEMPERATURE, AutoencoderSpec, LatentSpec
from studio.models.configs import learning_rate, network_width
from studio.models.i2i.common import PatchDiscriminator
from studio.models.latent_inpaint import LatentInpainting, LatentPlan, LatentView, noise_like
from studio.models.vae.common import temperature_of

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # diffusers' file names
DISC_WEIGHTS = "discriminator.safetensors"  # beside them, studio-only
STATS_DECAY = 0.99  # the running latent statistics: an EMA over steps
LOSS_NAMES = (
    "loss",
    "l1",
    "mse",
    "kl",
    "gan_g",
    "gan_d",
    "perceptual",
    "recon_psnr",
    "latent_mean",
    "latent_std",
)


@dataclass
class AutoencoderKLConfig(ModelConfig):
    latent_channels: int = setting(
        4, label="Latent channels", help="numbers per latent position", minimum=1, maximum=64,
        main=True,
    )  # fmt: skip
    downsample: int = setting(
        4,
        label="Downsampling",
        help="image pixels per latent position along each side",
        choices=(4, 8),
        main=True,
    )
    width: int = network_width(32, help="channels of the first block (x2, x4 further down)")
    layers_per_block: int = setting(
        1, label="Layers per block", help="residual layers in each block", minimum=1, maximum=4
    )
    lr: float = learning_rate(5e-4)
    mse_weight: float = setting(
        0.0,
        label="Squared-error weight",
        help="added to the L1 reconstruction loss; 0 = L1 only",
        minimum=0.0,
        maximum=100.0,
    )
    kl_weight: float = setting(
        1e-6,
        label="KL weight",
        help="pull of the posterior towards N(0, I), per pixel as in Stable Diffusion",
        minimum=0.0,
        maximum=1.0,
    )
    disc_weight: float = setting(
        0.0,
        label="Discriminator weight",
        help="a PatchGAN (hinge loss) for sharper detail; 0 = none",
        minimum=0.0,
        maximum=10.0,
    )
    disc_start: int = setting(
        2000, label="Discriminator start", help="step the discriminator starts at", minimum=0
    )
    perceptual_weight: float = setting(
        0.0,
        label="Perceptual weight",
        help="feature distance under the studio's extractor trained on this data; 0 = none",
        minimum=0.0,
        maximum=100.0,
    )

    def __post_init__(self) -> None:
        if self.downsample not in (4, 8):
            raise ValueError(f"downsample must be 4 or 8, got {self.downsample}")
        if self.resolution % self.downsample:
            raise ValueError(
                f"the resolution ({self.resolution} px) must be a multiple of the "
                f"downsampling ({self.downsample})"
            )


def block_channels(width: int, downsample: int) -> tuple[int, ...]:
    """Channels of the down blocks (the up blocks mirror them): one block per halving plus
    the first, each twice the one before up to four times the width (Stable Diffusion's
    128, 256, 512, 512 at width 128)."""
    halvings = downsample.bit_length() - 1
    return tuple(width * min(2**i, 4) for i in range(halvings + 1))


def build_autoencoder(c: AutoencoderKLConfig) -> AutoencoderKL:
    """The diffusers network for config ``c``."""
    channels = block_channels(c.width, c.downsample)
    return AutoencoderKL(
        in_channels=c.channels,
        out_channels=c.channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=c.layers_per_block,
        latent_channels=c.latent_channels,
        norm_num_groups=math.gcd(c.width, 32),
        sample_size=c.resolution,
        force_upcast=False,  # fp32 on the CPU; the autocast is the trainer's
    )


class AutoencoderKLFamily(LatentInpainting, GenerativeModel):
    info = FamilyInfo(
        key="ae.kl",
        kind="ae",
        kind_title="Autoencoders",
        display_name="KL autoencoder",
        summary="Autoencoder (Stable Diffusion's first stage): compresses images to a small "
        "latent grid a latent diffusion run learns, and back; judge it by its "
        "reconstructions, its own samples are blurry blobs.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.LATENT
        | Capability.INPAINT
        | Capability.AUTOENCODER,
        loss_names=LOSS_NAMES,
        about="An image autoencoder with a lightly KL-regularised Gaussian latent, built on "
        "diffusers' `AutoencoderKL` (the network of Stable Diffusion's VAE), trained on L1 "
        "reconstruction (optionally plus squared error), a small KL term, and optionally a "
        "PatchGAN and a perceptual loss through the studio's feature extractor. It is the "
        "first stage of latent diffusion: train it, then train `diffusion.latent` on its "
        "latent grid. The run's `model/` folder loads in plain diffusers with "
        "`AutoencoderKL.from_pretrained`. The plot shows the reconstruction PSNR and the "
        "latent's mean and standard deviation (what latent diffusion's scaling factor is "
        "measured from). Sampling decodes N(0, I) grids, which gives blurry blobs: the "
        "reconstructions (Compare, Explore) are what to judge it by.",
    )
    Config = AutoencoderKLConfig
    config: AutoencoderKLConfig
    conditions: tuple[str, ...] = ("temperature",)
    sampling_options = (TEMPERATURE,)
    supports_accumulation = True

    def __init__(self, config: AutoencoderKLConfig) -> None:
        super().__init__(config)
        c = config
        self.vae = build_autoencoder(c)
        self.disc: PatchDiscriminator | None = None
        if c.disc_weight > 0:
            self.disc = PatchDiscriminator(c.channels, c.width, c.resolution, 3, "instance")
        # Running mean and std of the sampled latents (what the plot shows); the std's
        # inverse is written into the saved config as diffusers' ``scaling_factor``.
        self.register_buffer("latent_stats", torch.tensor([0.0, 1.0]))
        self._features: Callable[[Tensor], Tensor] | None = None

    @property
    def side(self) -> int:
        return self.config.resolution // self.config.downsample

    # -- the perceptual hook (studio.models.capabilities.PerceptualFamily) -------------------
    def wants_perceptual_features(self) -> bool:
        return self.config.perceptual_weight > 0

    def set_perceptual_features(self, features: Callable[[Tensor], Tensor] | None) -> None:
        """The trainer's frozen, differentiable feature function (images in [-1, 1] -> N x F)."""
        self._features = features

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr = self.config.lr
        self.optimizers = {"ae": torch.optim.Adam(self.vae.parameters(), lr=lr, betas=(0.5, 0.9))}
        if self.disc is not None:
            self.optimizers["disc"] = torch.optim.Adam(
                self.disc.parameters(), lr=lr, betas=(0.5, 0.9)
            )
        return self.optimizers

    def networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"vae": self.vae}
        if self.disc is not None:
            nets["disc"] = self.disc
        return nets

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c, x = self.config, batch.images
        with ctx.autocast():
            posterior = self.vae.encode(x).latent_dist
        mean, logvar = posterior.mean.float(), posterior.logvar.float()
        z = mean + torch.exp(0.5 * logvar) * ctx.randn(*mean.shape).to(mean.device)
        with ctx.autocast():
            rec = self.vae.decode(z).sample.float()
        x = x.float()
        l1 = (rec - x).abs().mean()
        mse = (rec - x).square().mean()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
        pixels = x[0].numel()
        loss = l1 + c.mse_weight * mse + c.kl_weight * kl / pixels
        zero = torch.zeros((), device=x.device)
        perceptual = zero
        if c.perceptual_weight > 0 and self._features is not None:
            perceptual = (self._features(rec) - self._features(x).detach()).square().sum(1).mean()
            loss = loss + c.perceptual_weight * perceptual
        adversarial = self.disc is not None and ctx.step >= c.disc_start
        gan_g = gan_d = zero
        if adversarial:
            assert self.disc is not None
            self.disc.requires_grad_(False)  # the autoencoder's loss leaves it alone
            with ctx.autocast():
                gan_g = -self.disc(rec).float().mean()
            self.disc.requires_grad_(True)
            loss = loss + c.disc_weight * gan_g

        self.optimizer_step("ae", loss, ctx)

        if adversarial:
            assert self.disc is not None
            with ctx.autocast():
                real, fake = self.disc(x), self.disc(rec.detach())
            gan_d = F.relu(1.0 - real.float()).mean() + F.relu(1.0 + fake.float()).mean()
            self.optimizer_step("disc", gan_d, ctx)

        with torch.no_grad():
            z = z.detach()
            now = torch.stack([z.mean(), z.std()])
            self.latent_stats.lerp_(now, 1.0 - STATS_DECAY)
            err = (rec.detach().clamp(-1, 1) - x).square().mean()
            psnr = 10.0 * torch.log10(4.0 / err.clamp_min(1e-10))  # peak-to-peak range 2
        return {
            "loss": loss.detach(),
            "l1": l1.detach(),
            "mse": mse.detach(),
            "kl": kl.detach(),
            "gan_g": gan_g.detach(),
            "gan_d": gan_d.detach(),
            "perceptual": perceptual.detach(),
            "recon_psnr": psnr,
            "latent_mean": now[0],
            "latent_std": now[1],
        }

    # -- the autoencoder protocol (studio.models.capabilities.AutoencoderFamily) -------------
    def autoencoder_spec(self) -> AutoencoderSpec:
        return AutoencoderSpec(self.config.latent_channels, self.config.downsample)

    @torch.no_grad()
    def encode_to_grid(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        with eval_mode(self):
            posterior = self.vae.encode(images.to(self.device).float()).latent_dist
        mean = posterior.mean.float()
        if generator is None:
            return mean
        eps = torch.randn(mean.shape, generator=generator, device=generator.device)
        return mean + posterior.std.float() * eps.to(mean.device)

    @torch.no_grad()
    def encode_posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The Gaussian posterior's mean and standard deviation for each image (latent
        diffusion stores both once and draws a fresh sample each step)."""
        with eval_mode(self):
            posterior = self.vae.encode(images.to(self.device).float()).latent_dist
        return posterior.mean.float(), posterior.std.float()

    @torch.no_grad()
    def decode_from_grid(self, latents: Tensor) -> Tensor:
        """Exactly plain diffusers' ``vae.decode(latents).sample.clamp(-1, 1)`` (fp32)."""
        with eval_mode(self):
            out = self.vae.decode(latents.to(self.device).float()).sample
        return out.float().clamp(-1, 1)

    def diffusers_vae(self) -> nn.Module:
        """The network as the diffusers ``AutoencoderKL`` it is (a latent diffusion run saves
        it as its ``vae/``, with its own scaling factor)."""
        return self.vae

    # -- the latent protocol (studio.models.capabilities.LatentFamily) ---------------------------
    def latent_spec(self) -> LatentSpec:
        return LatentSpec(
            (self.config.latent_channels, self.side, self.side),
            encoder="the posterior mean",
            directions="PCA of the encoder's posterior means for {n} of {source}",
        )

    def _shape(self) -> tuple[int, int, int]:
        return (self.config.latent_channels, self.side, self.side)

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        return torch.randn(n, math.prod(self._shape()), generator=generator) * temperature

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        del labels
        grid = z.reshape(len(z), *self._shape()).to(self.device)
        return self.vae.decode(grid).sample.float().clamp(-1, 1)

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        del labels
        return self.encode_to_grid(images).reshape(len(images), -1)

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        zb = self.encode_latents(self.decode_latents(z, labels), labels)
        return zb, zb

    def inpaint_view(self, labels: Tensor | None) -> LatentView:
        return _KLInpaint(self, labels)

    # -- sampling ------------------------------------------------------------------------
    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Gen[SampleStep, None, Tensor]:
        """Decode N(0, temperature^2 I) latent grids: blurry, since nothing learned the
        distribution of the latents (that is what a latent diffusion run is for)."""
        self.check_conditions(conditions)
        z = torch.randn(n, *self._shape(), generator=generator) * temperature_of(conditions)
        images = self.decode_from_grid(z)
        yield SampleStep(1, 1, images)
        return images

    # -- persistence: diffusers' AutoencoderKL folder plus studio.json -------------------------
    def save(self, folder: str | Path) -> None:
        """``config.json`` and ``diffusion_pytorch_model.safetensors`` as diffusers'
        ``save_pretrained`` writes them (``scaling_factor`` set to 1 / the running latent
        std), the discriminator (if any) beside them, then ``studio.json``. Each file is
        written in a temp folder and renamed over the old one, weights before configs."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        std = float(self.latent_stats[1])
        scale = 1.0 / std if math.isfinite(std) and std > 1e-6 else 1.0

        def write(path: Path) -> None:
            weights = {k: v.detach().cpu().contiguous() for k, v in self.vae.state_dict().items()}
            saved = self.vae.config.scaling_factor
            self.vae.register_to_config(scaling_factor=scale)
            try:
                self.vae.save_pretrained(path, safe_serialization=True, state_dict=weights)
            finally:
                self.vae.register_to_config(scaling_factor=saved)
            if self.disc is not None:
                from safetensors.torch import save_file

                state = {
                    k: v.detach().cpu().contiguous() for k, v in self.disc.state_dict().items()
                }
                save_file(state, str(path / DISC_WEIGHTS))

        _write_files(folder, write)
        atomic.write_json(folder / MODEL_CONFIG, self.describe())

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        mean, std = (float(v) for v in self.latent_stats)
        out["latent_stats"] = {"mean": mean, "std": std}
        return out

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> AutoencoderKLFamily:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / MODEL_CONFIG).read_text(encoding="utf-8"))
        model = cls(cls.Config.from_dict(meta["config"]))
        model.vae.load_state_dict(load_file(str(folder / WEIGHTS_NAME), device="cpu"))
        if model.disc is not None and (folder / DISC_WEIGHTS).exists():
            model.disc.load_state_dict(load_file(str(folder / DISC_WEIGHTS), device="cpu"))
        stats = meta.get("latent_stats") or {}
        model.latent_stats.copy_(
            torch.tensor([float(stats.get("mean", 0.0)), float(stats.get("std", 1.0))])
        )
        return model.to(device)


class _KLInpaint(LatentView):
    """Inpainting starts from the latent grid of the image with a grey hole, plus noise at
    the grid's own scale (the KL term leaves that scale free)."""

    model: AutoencoderKLFamily

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        grey = torch.where(hole, torch.zeros_like(x), x)  # 0 is mid-grey in [-1, 1]
        z = self.model.encode_latents(grey, self.labels).float()
        return z + plan.start_noise * z.std() * noise_like(z, gen)


def _write_files(folder: Path, write: Callable[[Path], None]) -> None:
    """``write`` fills a hidden temp folder inside ``folder``; each file is then fsynced and
    renamed over its namesake in ``folder``, weights before configs (a new config never
    describes old weights)."""
    with tempfile.TemporaryDirectory(prefix=".save.", suffix=".tmp", dir=folder) as tmp:
        write(Path(tmp))
        for path in sorted(Path(tmp).iterdir(), key=lambda p: p.suffix == ".json"):
            atomic.give_ordinary_mode(path)  # safetensors writes 0600
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(path, folder / path.name)
        atomic.fsync_dir(folder)
