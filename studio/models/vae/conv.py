"""A convolutional VAE (Kingma & Welling 2013) with a Gaussian posterior and a discretised
pixel likelihood, so its negative ELBO is a true bound in bits/dim on 8-bit images.

The β-VAE and the conditional VAE reuse this class: β and KL warm-up are settings here
(1.0 and 0 by default), and a subclass turns on class conditioning via ``_label_classes``.
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
from studio.models.capabilities import (
    NEGATIVE_ELBO,
    RECONSTRUCTION,
    TEMPERATURE,
    LatentSpec,
    ScoreBatch,
)
from studio.models.configs import learning_rate
from studio.models.latent_inpaint import LatentInpainting, LatentPlan, LatentView, noise_like
from studio.models.vae.common import (
    LIKELIHOODS,
    ConvDecoder,
    ConvEncoder,
    gaussian_kl,
    learn_pixel_noise,
    nats_to_bits_per_dim,
    params_to_images,
    pixel_likelihood,
    pixel_log_prob,
    pixel_noise,
    reparameterise,
    temperature_of,
    vae_width,
)

KL_DIMS_SHOWN = 16  # kl_dim_00..kl_dim_15: enough to see which latents are in use
KL_DIM_NAMES = tuple(f"kl_dim_{i:02d}" for i in range(KL_DIMS_SHOWN))


@dataclass
class ConvVAEConfig(ModelConfig):
    latent_dim: int = setting(32, label="Latent size", minimum=2, maximum=512, main=True)
    width: int = vae_width(32)
    lr: float = learning_rate(1e-3)
    likelihood: str = pixel_likelihood(main=True)
    learn_sigma: bool = learn_pixel_noise()
    sigma: float = pixel_noise()
    beta: float = setting(
        1.0, label="KL weight (beta)", help="1 = a true ELBO", minimum=0.0, maximum=100.0
    )
    kl_warmup_steps: int = setting(
        0, label="KL warm-up steps", help="ramp the KL weight from 0; 0 = off", minimum=0
    )

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}")


class ConvVAE(LatentInpainting, GenerativeModel):
    info = FamilyInfo(
        key="vae.conv",
        kind="vae",
        display_name="Convolutional VAE",
        summary="VAE: steady training, a smooth latent space and a likelihood score, "
        "but blurrier samples than GANs or diffusion.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.LATENT
        | Capability.LIKELIHOOD
        | Capability.INPAINT,
        loss_names=("loss", "recon", "kl", *KL_DIM_NAMES),
    )
    Config = ConvVAEConfig
    config: ConvVAEConfig
    conditions: tuple[str, ...] = ("temperature",)
    sampling_options = (TEMPERATURE,)
    scores = (RECONSTRUCTION, NEGATIVE_ELBO)

    def __init__(self, config: ConvVAEConfig) -> None:
        super().__init__(config)
        c = config
        k = self._label_classes()
        self.encoder = ConvEncoder(c.channels, c.width, c.resolution, 2 * c.latent_dim, k)
        self.decoder = ConvDecoder(c.latent_dim, c.width, c.resolution, c.channels, k)
        # One pixel noise level for the discretised Gaussian: learned (a parameter) or fixed
        # (a buffer, so it still travels with the weights).
        start = torch.tensor(math.log(c.sigma))
        self.log_sigma: Tensor | None
        if c.likelihood != "gaussian":
            self.log_sigma = None
        elif c.learn_sigma:
            self.log_sigma = nn.Parameter(start)
        else:
            self.register_buffer("log_sigma", start)

    def _label_classes(self) -> int:
        return 0  # unconditional; ConditionalVAE overrides

    def _batch_labels(self, batch: Batch) -> Tensor | None:
        return None

    @property
    def dims(self) -> int:
        c = self.config
        return c.channels * c.resolution * c.resolution

    # -- the pieces of the ELBO ------------------------------------------------------------
    def posterior(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | x), in float32."""
        h = self.encoder(x, labels).float()
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # keeps exp() finite early in training

    def log_px(self, x: Tensor, params: Tensor) -> Tensor:
        """Per-image log p(x | z) in nats from the decoder output ``params``."""
        return pixel_log_prob(x, params.float(), self.config.likelihood, self.log_sigma)

    def kl_weight(self, step: int) -> float:
        """β, ramped linearly from 0 over the warm-up. A function of the step alone, so a
        resumed run continues exactly."""
        c = self.config
        if c.kl_warmup_steps <= 0:
            return c.beta
        return c.beta * min(1.0, step / c.kl_warmup_steps)

    # -- training ------------------------------------------------------------------------
    supports_accumulation = True

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.optimizers = {"vae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}
        return self.optimizers

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        x, labels = batch.images, self._batch_labels(batch)
        with ctx.autocast():
            mean, logvar = self.posterior(x, labels)
        z = reparameterise(mean, logvar, ctx.randn(*mean.shape, device=mean.device))
        with ctx.autocast():
            params = self.decoder(z, labels)
        recon = -self.log_px(x, params).mean()
        kl_dims = gaussian_kl(mean, logvar)
        kl = kl_dims.sum(1).mean()
        loss = recon + self.kl_weight(ctx.step) * kl

        self.optimizer_step("vae", loss, ctx)

        out = {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()}
        per_dim = kl_dims.detach()[:, :KL_DIMS_SHOWN].mean(0)
        out.update(zip(KL_DIM_NAMES, per_dim.unbind(0), strict=False))
        return out

    def example_losses(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """Each image's training loss (the beta-weighted negative ELBO, in nats), one draw of
        z from ``generator``: what EWC's Fisher estimate differentiates."""
        x, labels = batch.images, self._batch_labels(batch)
        mean, logvar = self.posterior(x, labels)
        eps = torch.randn(mean.shape, generator=generator).to(mean.device)
        params = self.decoder(reparameterise(mean, logvar, eps), labels)
        return -self.log_px(x, params) + self.config.beta * gaussian_kl(mean, logvar).sum(1)

    # -- latent space ----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """The mean of q(z | x): B x latent_dim."""
        with eval_mode(self):
            return self.posterior(images.to(self.device), self._checked(labels, len(images)))[0]

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Latents -> the decoder's expected images, in [-1, 1]."""
        with eval_mode(self):
            params = self.decoder(z.to(self.device).float(), self._checked(labels, len(z)))
        return params_to_images(params, self.config.likelihood)

    def latent(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
        """Draws from the prior N(0, temperature^2 I), made on the CPU for reproducibility."""
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        z = torch.randn(n, self.config.latent_dim, generator=generator) * temperature
        return z.to(self.device)

    def _checked(self, labels: Tensor | None, n: int) -> Tensor | None:
        return None  # the unconditional model ignores labels

    # -- the latent protocol (studio.models.capabilities.LatentFamily) ---------------------------
    def latent_spec(self) -> LatentSpec:
        return LatentSpec(
            (self.config.latent_dim,),
            encoder="the posterior mean",
            directions="PCA of the encoder's posterior means for {n} of {source}",
        )

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator) * temperature

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return params_to_images(self.decoder(z, labels), self.config.likelihood)

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        return self.encode(images, labels).reshape(len(images), -1)

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        # The model's own samples re-encoded (in float: nothing lost to 8-bit rounding); the
        # encoder never uses collapsed dimensions, so they drop out of the PCA.
        zb = self.encode_latents(self.decode_latents(z, labels).clamp(-1, 1), labels)
        return zb, zb

    def inpaint_view(self, labels: Tensor | None) -> LatentView:
        return _VAEInpaint(self, labels)

    # -- sampling ------------------------------------------------------------------------
    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Gen[SampleStep, None, Tensor]:
        self.check_conditions(conditions)
        labels = self._sample_labels(n, conditions)
        z = self.latent(n, generator, temperature_of(conditions))
        images = self.decode(z, labels)
        yield SampleStep(1, 1, images)
        return images

    def _sample_labels(self, n: int, conditions: dict[str, Any]) -> Tensor | None:
        return None

    # -- likelihood ------------------------------------------------------------------------
    @torch.no_grad()
    def elbo(
        self,
        images: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None = None,
        samples: int = 1,
    ) -> Tensor:
        """Per-image ELBO in nats: E_q[log p(x|z)] - KL(q || p), a lower bound on log p(x)
        (log p(x|y) when given labels). The expectation uses ``samples`` draws of z from a
        CPU generator (fixed seed when None, so repeated evaluations agree)."""
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        x = images.to(self.device).float()
        with eval_mode(self):
            mean, logvar = self.posterior(x, labels)
            rec = torch.zeros(len(x), device=x.device)
            for _ in range(max(1, samples)):
                eps = torch.randn(mean.shape, generator=gen).to(x.device)
                rec += self.log_px(x, self.decoder(reparameterise(mean, logvar, eps), labels))
        return rec / max(1, samples) - gaussian_kl(mean, logvar).sum(1)

    def log_likelihood(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        samples: int = 1,
    ) -> Tensor:
        """Per-image lower bound on log p(x) in nats (the ELBO), for images in [-1, 1]
        treated as 8-bit data."""
        return self.elbo(images, None, generator, samples)

    def bits_per_dim(  # the likelihood protocol (studio.models.capabilities)
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        samples: int = 1,
    ) -> Tensor:
        """Per-image negative ELBO in bits per dimension: an upper bound on -log2 p(x) / D."""
        ll = self.log_likelihood(images, labels, generator, samples)
        return nats_to_bits_per_dim(-ll, self.dims)

    # -- anomaly scores (studio.models.capabilities.ScoreFamily) -----------------------------
    @torch.no_grad()
    def anomaly_scores(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ScoreBatch:
        """The reconstruction error (the decoder's expected image at the posterior mean, on the
        0..1 scale) and the negative ELBO in bits/dim. A conditional model given no labels
        reconstructs each image with its likeliest class and bounds log p(x) over all."""
        x = images.to(self.device).float()
        given = labels if labels is None else self._checked(labels.to(self.device), len(x))
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        neg_elbo = self.bits_per_dim(x, given, gen).float().cpu()
        chosen = given
        if chosen is None and self._label_classes():
            per_class = []
            for y in range(self._label_classes()):
                ys = torch.full((len(x),), y, dtype=torch.long, device=x.device)
                per_class.append(self.elbo(x, ys, torch.Generator().manual_seed(0)))
            chosen = torch.stack(per_class).argmax(0)
        with eval_mode(self):
            mean = self.posterior(x, chosen)[0]
            recon = params_to_images(self.decoder(mean, chosen), self.config.likelihood)
        error = ((recon - x).square() / 4).mean(1)
        return ScoreBatch(
            {RECONSTRUCTION.name: error.flatten(1).mean(1).cpu(), NEGATIVE_ELBO.name: neg_elbo},
            error_map=error.cpu(),
            reconstruction=recon.cpu(),
        )


class _VAEInpaint(LatentView):
    """Inpainting starts from the posterior mean of the image with a grey hole, plus noise."""

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        grey = torch.where(hole, torch.zeros_like(x), x)  # 0 is mid-grey in [-1, 1]
        mean = self.model.posterior(grey, self.labels)[0].float()
        return mean + plan.start_noise * noise_like(mean, gen)
