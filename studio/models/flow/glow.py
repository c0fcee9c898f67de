"""Glow (Kingma & Dhariwal 2018): actnorm, invertible 1x1 convolutions and affine couplings.

Each level squeezes, runs ``steps`` of [actnorm -> 1x1 conv (LU form) -> affine coupling],
then factors out half the channels under a learned Gaussian prior (all but the last level).
Actnorm initialises itself from the first training batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.models.base import FamilyInfo, setting
from studio.models.flow import (
    CAPABILITIES,
    LOSS_NAMES,
    FlowConfig,
    FlowModel,
    check_divisible,
    coupling_width,
    factored_prior,
    multiscale_levels,
)
from studio.models.flow.layers import (
    ActNorm,
    Coupling,
    FlowLayer,
    InvConv1x1,
    Level,
    MultiScaleFlow,
    Split,
    Squeeze,
)


@dataclass
class GlowConfig(FlowConfig):
    levels: int = multiscale_levels("Levels")
    steps: int = setting(
        8,
        label="Steps per level",
        help="actnorm + 1x1 conv + coupling blocks",
        minimum=1,
        maximum=64,
        main=True,
    )
    hidden: int = coupling_width(128)
    learned_prior: bool = factored_prior(True)


class Glow(FlowModel):
    info = FamilyInfo(
        key="flow.glow",
        kind="flow",
        display_name="Glow",
        summary="Strongest flow here: exact likelihood, smooth latents, temperature control; big and slow to train.",
        capabilities=CAPABILITIES,
        loss_names=LOSS_NAMES,
    )
    Config = GlowConfig
    config: GlowConfig

    def __init__(self, config: GlowConfig) -> None:
        super().__init__(config)
        c = config
        check_divisible(c.resolution, 2**c.levels, f"Glow with {c.levels} levels")
        channels, levels = c.channels, []
        for i in range(c.levels):
            channels *= 4
            layers: list[FlowLayer] = [Squeeze()]
            for j in range(c.steps):
                # The 1x1 convs mix channels anyway; alternating the halves costs nothing.
                layers += [
                    ActNorm(channels),
                    InvConv1x1(channels),
                    Coupling(channels, c.hidden, "channel", j % 2, affine=True, scale="sigmoid"),
                ]
            split = Split(channels, c.learned_prior) if i < c.levels - 1 else None
            levels.append(Level(layers, split))
            if split is not None:
                channels -= split.out
        self.flow = MultiScaleFlow(levels, (c.channels, c.resolution, c.resolution))
