"""Class-conditional GAN: DCGAN's losses and options, with the class fed to both networks.

The generator appends a learned class embedding to z; the discriminator is a projection
discriminator (Miyato & Koyama 2018), which adds <embed(y), features(x)> to its logit, so it
judges "is this a real image of class y" rather than just "is this real".
"""

from __future__ import annotations

from typing import ClassVar

from studio.models.base import Capability, FamilyInfo
from studio.models.gan.dcgan import DCGAN, DCGANConfig


class ConditionalGAN(DCGAN):
    info = FamilyInfo(
        key="gan.cgan",
        kind="gan",
        display_name="Conditional GAN",
        summary="GAN that draws the class you pick: sharp and instant, needs one subfolder per class.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.LATENT
        | Capability.INPAINT
        | Capability.CONDITIONAL,
        loss_names=DCGAN.info.loss_names,
    )
    Config = DCGANConfig
    conditions: ClassVar[tuple[str, ...]] = ("label",)

    def __init__(self, config: DCGANConfig) -> None:
        # Checked before the networks are built: an embedding of zero classes is no model.
        if config.num_classes < 1:
            raise ValueError(
                "The conditional GAN needs labelled images: put them in one subfolder per class "
                f"(this dataset has {config.num_classes} classes)."
            )
        super().__init__(config)

    def _num_classes(self) -> int:
        return self.config.num_classes
