"""β-VAE (Higgins et al. 2017): the ConvVAE with the KL term weighted by β > 1, which pushes
each latent towards independence and tends to give more interpretable ("disentangled")
dimensions at the cost of blurrier reconstructions.

The KL weight ramps linearly from 0 to β over ``kl_warmup_steps`` (a function of the step
alone, so a resumed run continues exactly); the early low weight lets the decoder learn to use
the latents before the KL squeezes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.models.base import FamilyInfo
from studio.models.configs import override
from studio.models.vae.conv import ConvVAE, ConvVAEConfig


@dataclass
class BetaVAEConfig(ConvVAEConfig):
    beta: float = override(
        ConvVAEConfig,
        "beta",
        4.0,
        help="above 1: more independent latents, blurrier images",
        main=True,
    )
    kl_warmup_steps: int = override(
        ConvVAEConfig,
        "kl_warmup_steps",
        2000,
        help="ramp the KL weight from 0 to beta over this many steps; 0 = off",
        main=True,
    )
    # A learned pixel noise would shrink to cancel out beta, so it is fixed by default here.
    learn_sigma: bool = override(
        ConvVAEConfig, "learn_sigma", False, help="gaussian only: learn one noise level"
    )


class BetaVAE(ConvVAE):
    info = FamilyInfo(
        key="vae.beta",
        kind="vae",
        display_name="β-VAE",
        summary="β-VAE: a stronger KL weight for more independent, interpretable latents, "
        "at the cost of blurrier images.",
        capabilities=ConvVAE.info.capabilities,
        loss_names=ConvVAE.info.loss_names,
    )
    Config = BetaVAEConfig
    config: BetaVAEConfig
