"""NICE (Dinh et al. 2014): additive couplings and a final diagonal scaling.

The couplings are volume-preserving (log|det| = 0), so the only density change comes from
the learned per-dimension scale at the end. Here the couplings act on image tensors (squeezed
once), alternating checkerboard and channel masks, with small conv nets as conditioners.
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
)
from studio.models.flow.layers import Coupling, DiagonalScale, Level, MultiScaleFlow, Squeeze

# The mask cycle: every pixel and every channel half is transformed within four layers.
MASKS = (("checkerboard", 0), ("channel", 0), ("checkerboard", 1), ("channel", 1))


@dataclass
class NICEConfig(FlowConfig):
    couplings: int = setting(
        8,
        label="Coupling layers",
        help="more = more expressive, slower",
        minimum=2,
        maximum=32,
        main=True,
    )
    hidden: int = coupling_width(64)


class NICE(FlowModel):
    info = FamilyInfo(
        key="flow.nice",
        kind="flow",
        display_name="NICE",
        summary="Simplest flow: exact likelihood and latents, fast and stable, but blurry, noisy samples.",
        capabilities=CAPABILITIES,
        loss_names=LOSS_NAMES,
    )
    Config = NICEConfig
    config: NICEConfig

    def __init__(self, config: NICEConfig) -> None:
        super().__init__(config)
        c = config
        check_divisible(c.resolution, 2, "NICE")
        shape = (4 * c.channels, c.resolution // 2, c.resolution // 2)
        layers = [Squeeze()]
        for i in range(c.couplings):
            mask, parity = MASKS[i % len(MASKS)]
            layers.append(Coupling(shape[0], c.hidden, mask, parity, affine=False))
        layers.append(DiagonalScale(shape))
        self.flow = MultiScaleFlow([Level(layers)], (c.channels, c.resolution, c.resolution))
