"""WGAN-GP (Gulrajani et al. 2017): a Wasserstein critic kept 1-Lipschitz by a gradient penalty.

The critic scores images (no sigmoid); it is trained ``n_critic`` times per generator update.
The trainer hands one batch per step, so each critic update reuses that whole real batch with
fresh fakes and fresh interpolation points, rather than splitting it into ``n_critic`` small
chunks: the penalty and the Wasserstein estimate are too noisy on a few images, and the real
images change at every trainer step anyway. A step therefore costs about ``n_critic + 1``
DCGAN-sized updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from studio.models.base import Batch, Capability, FamilyInfo, StepContext, setting
from studio.models.configs import override
from studio.models.gan.common import (
    GANConfig,
    GANModel,
    frozen,
    gradient_penalty,
    init_dcgan_weights,
)
from studio.models.gan.growing import grow_steps_setting, progressive_setting


@dataclass
class WGANGPConfig(GANConfig):
    # The paper's optimiser: Adam with lr 1e-4 and betas (0, 0.9); momentum hurts a critic
    # whose target moves with every generator update.
    lr_g: float = override(GANConfig, "lr_g", 1e-4)
    lr_d: float = override(GANConfig, "lr_d", 1e-4, label="Critic learning rate")
    beta1: float = override(GANConfig, "beta1", 0.0)
    beta2: float = override(GANConfig, "beta2", 0.9)
    spectral_norm: bool = setting(False, label="Spectral norm in the critic")
    gp_lambda: float = setting(
        10.0,
        label="Gradient penalty weight",
        help="lambda: how hard the critic is held to slope 1 (10 in the paper)",
        minimum=0.0,
        maximum=100.0,
    )
    n_critic: int = setting(
        5,
        label="Critic steps per generator step",
        help="each reuses the step's real batch with fresh fakes",
        minimum=1,
        maximum=10,
        main=True,
    )
    critic_norm: str = setting(
        "layer",
        label="Critic normalisation",
        help="never batch norm: the penalty is per image, batch norm mixes images",
        choices=("layer", "none"),
    )
    drift: float = setting(
        1e-3,
        label="Score drift penalty",
        help="keeps real scores near 0 (Karras et al. 2018); 0 = off",
        minimum=0.0,
        maximum=1.0,
    )
    progressive: bool = progressive_setting()
    grow_steps: int = grow_steps_setting()


class WGANGP(GANModel):
    d_real_is_probability = False  # a critic's score: "near 1" means nothing here
    info = FamilyInfo(
        key="gan.wgan_gp",
        kind="gan",
        display_name="WGAN-GP",
        summary="GAN with a steadier, more informative loss; slower per step, rarely collapses.",
        capabilities=Capability.TRAIN | Capability.SAMPLE | Capability.LATENT | Capability.INPAINT,
        loss_names=(
            "loss_d",
            "loss_g",
            "gp",
            "wasserstein",
            "d_real",
            "d_fake",
            "grad_norm_d",
            "grad_norm_g",
            "augment_p",
            "ada_rt",
        ),
    )
    Config = WGANGPConfig
    config: WGANGPConfig

    def __init__(self, config: WGANGPConfig) -> None:
        if config.critic_norm not in ("layer", "none"):
            raise ValueError(
                f"the critic's normalisation must be layer or none, got {config.critic_norm!r}"
            )
        if config.n_critic < 1:
            raise ValueError(f"n_critic must be at least 1, got {config.n_critic}")
        super().__init__(config)

    def _init_weights(self) -> None:
        # The critic keeps PyTorch's default (He-style) init: DCGAN's N(0, 0.02) starts it with
        # near-zero slopes, so the penalty (|grad| - 1)^2 ~ 1 dominates the first few hundred
        # steps and the Wasserstein estimate stays flat.
        init_dcgan_weights(self.generator)

    def _d_norm(self) -> str:
        return self.config.critic_norm

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        real = self.reals(batch.images, ctx.step)
        n = real.shape[0]
        critic = self.discriminator

        def score(x: Tensor) -> Tensor:
            with ctx.autocast():
                return critic(x).float()

        def see(x: Tensor) -> Tensor:  # the augmentation, when on
            return self.see(x, ctx.generator)

        # Critic: push real scores up and fake scores down, slope held near 1 between them.
        logs: list[Tensor] = []
        for _ in range(c.n_critic):
            z = ctx.randn(n, c.latent_dim)
            eps = ctx.rand(n, 1, 1, 1)
            with torch.no_grad(), ctx.autocast():
                fake = self.generator(z)
            # The critic judges (and is held to slope 1 between) augmented images.
            seen_real, seen_fake = see(real), see(fake)
            s_real, s_fake = score(seen_real), score(seen_fake)
            gp = gradient_penalty(score, seen_real, seen_fake, eps, ctx.grad_scale("d"))
            w_dist = s_real.mean() - s_fake.mean()
            loss_d = -w_dist + c.gp_lambda * gp + c.drift * s_real.pow(2).mean()
            gn_d = self.optimizer_step("d", loss_d, ctx)
            logs.append(
                torch.stack([loss_d, gp, w_dist, s_real.mean(), s_fake.mean(), gn_d]).detach()
            )

        augment = self.observe_real(s_real, s_fake, ctx.step)  # the last critic update's

        # Generator: raise the critic's score of fresh fakes.
        z = ctx.randn(n, c.latent_dim)
        with frozen(critic):
            with ctx.autocast():
                fake = self.generator(z)
            loss_g = -score(see(fake)).mean()
            gn_g = self.optimizer_step("g", loss_g, ctx)

        # Critic values are the mean over its n_critic updates (one tensor op, no host sync).
        loss_d, gp, w_dist, d_real, d_fake, gn_d = torch.stack(logs).mean(0).unbind()
        return {
            "loss_d": loss_d,
            "loss_g": loss_g.detach(),
            "gp": gp,
            "wasserstein": w_dist,
            "d_real": d_real,
            "d_fake": d_fake,
            "grad_norm_d": gn_d,
            "grad_norm_g": gn_g,
            **augment,
            **self.growth_metrics(),
        }
