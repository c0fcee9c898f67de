"""VAE-GAN (Larsen et al. 2016): a VAE whose decoder is also a GAN's generator, and whose
reconstructions are measured in the discriminator's feature space instead of pixel by pixel.

Three networks, three optimizers, the paper's loss split:

* encoder: ``kl_weight * kl + recon_feat (+ pixel_weight * recon_pixel)``;
* decoder (the generator): ``gamma * (recon_feat + pixel_weight * recon_pixel) + loss_g``;
* discriminator: ``loss_d``, real images against reconstructions and prior samples.

``recon_feat`` is the Gaussian (unit variance) negative log-likelihood, constant dropped, of
the real image's features at a middle layer of the discriminator given the reconstruction's:
``0.5 * sum (D_l(x) - D_l(x~))^2`` per image, so with ``kl_weight`` 1 the encoder's loss is
a negative ELBO in feature space (a per-element mean instead was measured to leave the
reconstruction no better than a random draw after 200 steps on 8 px shapes: the adversarial
term swamps it). ``recon_pixel`` is the same on the pixels. ``loss_g`` is the non-saturating
loss on reconstructions and prior samples; ``loss_d`` the logistic loss with the real images
on one side and the two kinds of generated images, half each, on the other.

Every gradient of one step is taken at the step's starting weights: the encoder's pass runs
with the decoder and the discriminator frozen, the decoder's with the encoder's sample
detached and the discriminator frozen, and the discriminator steps last, on the generated
images of the decoder's pass. The discriminator normalises per image (group norm, never batch
norm), so an image's features do not depend on the rest of the batch and identical images
have identical features. What the discriminator judges goes through the GANs' augmentation
(studio.models.gan.augment) when it is on; the feature reconstruction compares clean images.
"""

from __future__ import annotations

from collections.abc import Generator as Gen
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    SampleStep,
    StepContext,
    class_labels,
    eval_mode,
    setting,
)
from studio.models.capabilities import RECONSTRUCTION, TEMPERATURE, LatentSpec, ScoreBatch
from studio.models.configs import override
from studio.models.gan.common import (
    Discriminator,
    GANConfig,
    GANModel,
    OptionalClassesConfig,
    frozen,
    levels_for,
    optional_classes,
)
from studio.models.latent_inpaint import LatentPlan, LatentView, noise_like
from studio.models.vae.common import (
    ConvDecoder,
    ConvEncoder,
    gaussian_kl,
    reparameterise,
    temperature_of,
)

ABOUT = (
    "An encoder maps each image to a Gaussian over a latent vector, as in a VAE, and the "
    "decoder turns a latent into an image; that decoder is also a GAN's generator. A "
    "discriminator learns to tell the folder's images from the decoder's, and the "
    "reconstruction is judged by how alike the discriminator's middle-layer features of "
    "the image and of its reconstruction are, not pixel by pixel, so the decoder is not "
    "pushed towards the blurry average a pixel loss rewards. Sampling draws a latent from "
    "the prior and decodes it once. It draws sharper images than a VAE and, unlike a GAN, "
    "encodes any image into its latent in one pass (Explore's encode, inpainting from the "
    "encoder's guess, reconstruction-error scores); training is a GAN's, with its "
    "instabilities, and slower per step than either."
)


@dataclass
class VAEGANConfig(OptionalClassesConfig):
    latent_dim: int = override(GANConfig, "latent_dim", 64)
    width: int = override(GANConfig, "width", 32)
    lr_g: float = override(
        GANConfig, "lr_g", 2e-4, label="Encoder and decoder learning rate", help="one each"
    )
    gamma: float = setting(
        1.0,
        label="Reconstruction weight (gamma)",
        help="decoder: weight of the feature reconstruction against fooling the "
        "discriminator; higher = more faithful, lower = sharper",
        minimum=0.0,
        maximum=1000.0,
        main=True,
    )
    kl_weight: float = setting(
        1.0,
        label="KL weight",
        help="encoder: weight of the prior KL; 1 = the paper's objective",
        minimum=0.0,
        maximum=100.0,
    )
    pixel_weight: float = setting(
        0.0,
        label="Pixel reconstruction weight",
        help="adds the pixels' squared error (half its sum, as for the features) to the "
        "feature reconstruction of the encoder and decoder; 0 = off",
        minimum=0.0,
        maximum=1000.0,
    )
    conditional: bool = optional_classes()


def pixel_recon(x: Tensor, x_rec: Tensor) -> Tensor:
    """Per-image 0.5 * sum of squared pixel errors (a unit-variance Gaussian's NLL)."""
    return 0.5 * (x_rec.float() - x.float()).square().flatten(1).sum(1)


class VAEGANDecoder(nn.Module):
    """The VAEs' conv decoder with a tanh: latent (and class) -> image in [-1, 1]."""

    def __init__(
        self, latent_dim: int, width: int, resolution: int, channels: int, classes: int
    ) -> None:
        super().__init__()
        self.net = ConvDecoder(latent_dim, width, resolution, channels, classes)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return torch.tanh(self.net(z, labels))


class VAEGAN(GANModel):
    info = FamilyInfo(
        key="hybrid.vaegan",
        kind="hybrid",
        display_name="VAE-GAN",
        summary="VAE whose decoder is a GAN generator: encodes images like a VAE, draws "
        "sharper than one; trains like a GAN.",
        about=ABOUT,
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.LATENT
        | Capability.INPAINT
        | Capability.CONDITIONAL,
        loss_names=(
            "loss_e",
            "loss_dec",
            "kl",
            "recon_feat",
            "recon_pixel",
            "loss_d",
            "loss_g",
            "d_real",
            "d_recon",
            "d_fake",
            "grad_norm_e",
            "grad_norm_g",
            "grad_norm_d",
            "augment_p",
            "ada_rt",
        ),
    )
    Config = VAEGANConfig
    config: VAEGANConfig
    conditions: ClassVar[tuple[str, ...]] = ("label", "temperature")
    sampling_options = (TEMPERATURE,)
    scores = (RECONSTRUCTION,)

    def __init__(self, config: VAEGANConfig) -> None:
        super().__init__(config)
        c = config
        self.encoder = ConvEncoder(
            c.channels, c.width, c.resolution, 2 * c.latent_dim, self._num_classes()
        )
        # The middle layer whose features measure reconstructions: the discriminator's
        # stage before its last (its first for an 8 px model), as the paper's third of four.
        stages = max(1, levels_for(c.resolution) - 1)
        stage_ends = [
            i for i, m in enumerate(self.discriminator.features) if isinstance(m, nn.LeakyReLU)
        ]
        self._feature_end = stage_ends[stages - 1] + 1

    def _build_networks(self) -> tuple[nn.Module, nn.Module]:
        c, classes = self.config, self._num_classes()
        decoder = VAEGANDecoder(c.latent_dim, c.width, c.resolution, c.channels, classes)
        discriminator = Discriminator(
            c.width, c.resolution, c.channels, classes, norm="layer", spectral=c.spectral_norm
        )
        return decoder, discriminator

    def _init_weights(self) -> None:
        pass  # PyTorch defaults: features of unit-order scale from the first step

    def _num_classes(self) -> int:
        return self.config.num_classes

    def _d_norm(self) -> str:
        return "layer"

    @property
    def decoder(self) -> nn.Module:
        """The decoder is the generator (one network, two names)."""
        return self.generator

    # -- the pieces of the objective --------------------------------------------------------
    def posterior(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | x), in float32."""
        mean, logvar = self.encoder(x, labels).float().chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def features(self, x: Tensor) -> Tensor:
        """The discriminator's middle-layer features of ``x``, flattened per image."""
        return self.discriminator.features[: self._feature_end](x).float().flatten(1)

    def feature_recon(self, x: Tensor, x_rec: Tensor) -> Tensor:
        """Per-image Gaussian negative log-likelihood (unit variance, constant dropped) of the
        features of ``x`` given those of ``x_rec``: 0.5 * sum (D_l(x) - D_l(x_rec))^2."""
        return 0.5 * (self.features(x).detach() - self.features(x_rec)).square().sum(1)

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        self.optimizers = {
            "e": torch.optim.Adam(self.encoder.parameters(), lr=c.lr_g, betas=betas),
            "g": torch.optim.Adam(self.generator.parameters(), lr=c.lr_g, betas=betas),
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_d, betas=betas),
        }
        return self.optimizers

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        x, labels, gen = batch.images, self._labels(batch), ctx.generator
        n = x.shape[0]
        eps = ctx.randn(n, c.latent_dim)
        z_p = ctx.randn(n, c.latent_dim)

        # Encoder: KL + feature reconstruction (+ pixels); decoder and D are fixed here.
        with frozen(self.generator), frozen(self.discriminator):
            with ctx.autocast():
                mean, logvar = self.posterior(x, labels)
                z = reparameterise(mean, logvar, eps)
                x_rec = self.generator(z, labels).float()
                recon_feat_e = self.feature_recon(x, x_rec).mean()
            recon_pixel_e = pixel_recon(x, x_rec).mean()
            kl = gaussian_kl(mean, logvar).sum(1).mean()
            loss_e = c.kl_weight * kl + recon_feat_e + c.pixel_weight * recon_pixel_e
            gn_e = self.optimizer_step("e", loss_e, ctx)

        # Decoder: gamma * reconstruction - GAN (non-saturating), from the same z; D fixed.
        z = z.detach()
        with frozen(self.discriminator):
            with ctx.autocast():
                x_rec = self.generator(z, labels)
                x_fake = self.generator(z_p, labels)
                recon_feat = self.feature_recon(x, x_rec).mean()
                d_rec_g = self.discriminator(self.see(x_rec, gen), labels).float()
                d_fake_g = self.discriminator(self.see(x_fake, gen), labels).float()
            recon_pixel = pixel_recon(x, x_rec).mean()
            loss_g = 0.5 * (F.softplus(-d_rec_g).mean() + F.softplus(-d_fake_g).mean())
            loss_dec = c.gamma * (recon_feat + c.pixel_weight * recon_pixel) + loss_g
            gn_g = self.optimizer_step("g", loss_dec, ctx)

        # Discriminator: real -> 1; reconstructions and prior samples -> 0, half each.
        with ctx.autocast():
            d_real = self.discriminator(self.see(x, gen), labels).float()
            d_rec = self.discriminator(self.see(x_rec.detach(), gen), labels).float()
            d_fake = self.discriminator(self.see(x_fake.detach(), gen), labels).float()
        loss_d = F.softplus(-d_real).mean() + 0.5 * (
            F.softplus(d_rec).mean() + F.softplus(d_fake).mean()
        )
        gn_d = self.optimizer_step("d", loss_d, ctx)

        out = self.observe_real(d_real, torch.cat([d_rec, d_fake]), ctx.step)
        out.update(
            loss_e=loss_e.detach(),
            loss_dec=loss_dec.detach(),
            kl=kl.detach(),
            recon_feat=recon_feat.detach(),
            recon_pixel=recon_pixel.detach(),
            loss_d=loss_d.detach(),
            loss_g=loss_g.detach(),
            d_real=torch.sigmoid(d_real.detach()).mean(),
            d_recon=torch.sigmoid(d_rec.detach()).mean(),
            d_fake=torch.sigmoid(d_fake.detach()).mean(),
        )
        for name, norm in (("grad_norm_e", gn_e), ("grad_norm_g", gn_g), ("grad_norm_d", gn_d)):
            if norm is not None:
                out[name] = norm
        return out

    # -- latent space ----------------------------------------------------------------------
    def _labels_for(self, labels: Tensor | None, n: int) -> Tensor | None:
        if not self._num_classes():
            return None
        if labels is None:
            return class_labels(n, self._num_classes(), None, self.device)
        return labels.to(self.device)

    @torch.no_grad()
    def encode(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """The mean of q(z | x): B x latent_dim."""
        with eval_mode(self):
            x = images.to(self.device).float()
            return self.posterior(x, self._labels_for(labels, len(x)))[0]

    def latent_spec(self) -> LatentSpec:
        return LatentSpec(
            (self.config.latent_dim,),
            encoder="the posterior mean",
            directions="PCA of the encoder's posterior means for {n} of {source}",
        )

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        return self.encode(images, labels)

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return self.generator(z, self._labels_for(labels, len(z))).float()

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        zb = self.encode_latents(self.decode_latents(z, labels).clamp(-1, 1), labels)
        return zb, zb

    def inpaint_view(self, labels: Tensor | None) -> LatentView:
        return _EncoderStart(self, labels)

    # -- sampling ------------------------------------------------------------------------
    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Gen[SampleStep, None, Tensor]:
        self.check_conditions(conditions)
        labels = self._sample_labels(n, conditions)  # checked before any noise is drawn
        t = temperature_of(conditions)
        z = torch.randn(n, self.config.latent_dim, generator=generator) * t
        images = self.decode(z, labels)
        yield SampleStep(1, 1, images)
        return images

    def _sample_labels(self, n: int, conditions: dict[str, Any]) -> Tensor | None:
        if not self._num_classes():
            if conditions.get("label") is not None:
                raise ValueError(
                    f"{self.info.display_name} was trained without classes: it takes no class"
                )
            return None
        return class_labels(n, self._num_classes(), conditions.get("label"), self.device)

    # -- anomaly scores (studio.models.capabilities.ScoreFamily) -----------------------------
    @torch.no_grad()
    def anomaly_scores(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ScoreBatch:
        """The reconstruction error: the decoded posterior mean against the image, on the
        0..1 scale. A conditional model given no labels takes, per image, the class whose
        reconstruction comes closest."""
        x = images.to(self.device).float()
        choices: list[Tensor | None]
        if labels is not None and self._num_classes():
            choices = [labels.to(self.device)]
        elif self._num_classes():
            choices = [
                torch.full((len(x),), y, dtype=torch.long, device=x.device)
                for y in range(self._num_classes())
            ]
        else:
            choices = [None]
        best_err: Tensor | None = None
        best_rec = torch.zeros_like(x)
        with eval_mode(self):
            for ys in choices:
                rec = self.generator(self.posterior(x, ys)[0], ys).float()
                err = ((rec - x).square() / 4).mean(1)
                if best_err is None:
                    best_err, best_rec = err, rec
                else:
                    better = err.flatten(1).mean(1) < best_err.flatten(1).mean(1)
                    best_err = torch.where(better[:, None, None], err, best_err)
                    best_rec = torch.where(better[:, None, None, None], rec, best_rec)
        assert best_err is not None
        return ScoreBatch(
            {RECONSTRUCTION.name: best_err.flatten(1).mean(1).cpu()},
            error_map=best_err.cpu(),
            reconstruction=best_rec.cpu(),
        )


class _EncoderStart(LatentView):
    """Inpainting starts from the posterior mean of the image with a grey hole, plus noise
    (as the VAEs do)."""

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        grey = torch.where(hole, torch.zeros_like(x), x)  # 0 is mid-grey in [-1, 1]
        labels = self.model._labels_for(self.labels, len(x))
        mean = self.model.posterior(grey, labels)[0].float()
        return mean + plan.start_noise * noise_like(mean, gen)
