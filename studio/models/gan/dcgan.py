"""DCGAN (Radford et al. 2015) with the non-saturating loss, and optional spectral norm and R1."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from studio.models.base import Batch, Capability, FamilyInfo, StepContext, setting
from studio.models.gan.common import GANConfig, GANModel, frozen, r1_penalty
from studio.models.gan.growing import grow_steps_setting, progressive_setting


@dataclass
class DCGANConfig(GANConfig):
    r1_gamma: float = setting(
        0.0, label="R1 penalty", help="0 = off; 1-10 steadies D", minimum=0.0, maximum=100.0
    )
    progressive: bool = progressive_setting()
    grow_steps: int = grow_steps_setting()


class DCGAN(GANModel):
    info = FamilyInfo(
        key="gan.dcgan",
        kind="gan",
        display_name="DCGAN",
        summary="GAN: sharp samples and instant sampling, but training can be unstable or collapse.",
        capabilities=Capability.TRAIN | Capability.SAMPLE | Capability.LATENT | Capability.INPAINT,
        loss_names=(
            "loss_d",
            "loss_g",
            "d_real",
            "d_fake",
            "grad_norm_d",
            "grad_norm_g",
            "augment_p",
            "ada_rt",
        ),
    )
    Config = DCGANConfig
    config: DCGANConfig

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        real, labels = self.reals(batch.images, ctx.step), self._labels(batch)
        z = ctx.randn(real.shape[0], c.latent_dim)

        # Discriminator: real -> 1, fake -> 0 (softplus form of the logistic loss). Both are
        # seen through the augmentation (when on); R1 is the gradient w.r.t. the clean reals.
        use_r1 = c.r1_gamma > 0
        if use_r1:
            real = real.detach().requires_grad_(True)
        gen = ctx.generator
        with ctx.autocast():
            fake = self.generator(z, labels)
            d_real = self.discriminator(self.see(real, gen), labels).float()
            d_fake = self.discriminator(self.see(fake.detach(), gen), labels).float()
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        out: dict[str, Tensor] = {}
        if use_r1:
            penalty = r1_penalty(d_real, real, ctx.grad_scale("d"))
            loss_d = loss_d + 0.5 * c.r1_gamma * penalty
            out["r1"] = penalty.detach()
        gn_d = self.optimizer_step("d", loss_d, ctx)
        out.update(self.observe_real(d_real, d_fake, ctx.step))

        # Generator: make D call the fakes real (non-saturating loss). D's weights are frozen
        # for this pass so no gradient is spent on them.
        with frozen(self.discriminator):
            with ctx.autocast():
                d_gen = self.discriminator(self.see(fake, gen), labels).float()
            loss_g = F.softplus(-d_gen).mean()
            gn_g = self.optimizer_step("g", loss_g, ctx)

        out.update(
            loss_d=loss_d.detach(),
            loss_g=loss_g.detach(),
            d_real=torch.sigmoid(d_real.detach()).mean(),
            d_fake=torch.sigmoid(d_fake.detach()).mean(),
            grad_norm_d=gn_d,
            grad_norm_g=gn_g,
            **self.growth_metrics(),
        )
        return out

    def example_losses(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """Each example's share of both training losses: D's on the real image and on one
        fake from ``generator``, and G's on that fake (through a frozen D, so each network's
        weights get the gradient of its own loss). What EWC's Fisher estimate differentiates."""
        real, labels = batch.images, self._labels(batch)
        fake = self.generator(self.latent(len(real), generator), labels)
        loss_d = F.softplus(-self.discriminator(real, labels).float())
        loss_d = loss_d + F.softplus(self.discriminator(fake.detach(), labels).float())
        with frozen(self.discriminator):
            loss_g = F.softplus(-self.discriminator(fake, labels).float())
        return loss_d + loss_g
