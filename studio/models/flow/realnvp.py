"""RealNVP (Dinh et al. 2017): affine couplings in a multi-scale architecture.

At each scale: checkerboard couplings, a squeeze, channel couplings, then half the channels
are factored out as latents; the last scale has checkerboard couplings only. The affine scale
is soft-clamped (log s = 2 tanh(h / 2)) so a coupling can never blow up.
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
from studio.models.flow.layers import Coupling, FlowLayer, Level, MultiScaleFlow, Split, Squeeze


@dataclass
class RealNVPConfig(FlowConfig):
    scales: int = multiscale_levels("Scales")
    couplings: int = setting(
        3,
        label="Couplings per stage",
        help="affine couplings per mask type per scale",
        minimum=1,
        maximum=16,
        main=True,
    )
    hidden: int = coupling_width(64)
    learned_prior: bool = factored_prior(False)


class RealNVP(FlowModel):
    info = FamilyInfo(
        key="flow.realnvp",
        kind="flow",
        display_name="RealNVP",
        summary="Flow with exact likelihood and latents; sharper than NICE, still softer than GANs or diffusion.",
        capabilities=CAPABILITIES,
        loss_names=LOSS_NAMES,
    )
    Config = RealNVPConfig
    config: RealNVPConfig

    def __init__(self, config: RealNVPConfig) -> None:
        super().__init__(config)
        c = config
        # Each split halves the size, and the last scale's checkerboard needs at least 2x2.
        check_divisible(c.resolution, 2**c.scales, f"RealNVP with {c.scales} scales")
        channels, levels = c.channels, []
        for _ in range(c.scales - 1):
            layers: list[FlowLayer] = [
                self._coupling(channels, "checkerboard", j) for j in range(c.couplings)
            ]
            layers.append(Squeeze())
            channels *= 4
            layers += [self._coupling(channels, "channel", j) for j in range(c.couplings)]
            split = Split(channels, c.learned_prior)
            levels.append(Level(layers, split))
            channels -= split.out
        last = [self._coupling(channels, "checkerboard", j) for j in range(c.couplings + 1)]
        levels.append(Level(last))
        self.flow = MultiScaleFlow(levels, (c.channels, c.resolution, c.resolution))

    def _coupling(self, channels: int, mask: str, j: int) -> Coupling:
        return Coupling(channels, self.config.hidden, mask, j % 2, affine=True, scale="tanh")
