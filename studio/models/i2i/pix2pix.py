"""Pix2Pix (Isola et al. 2017): a conditional GAN that learns to turn image A into image B from
aligned pairs.

The generator is a U-Net: an encoder of strided convolutions down to a 1x1 map (fewer levels
when the resolution is not a power of two), a decoder of transposed convolutions back up, and a
skip connection from each encoder level to the decoder level of the same size, so detail in the
input reaches the output directly. It takes no noise vector: dropout in the three decoder
blocks below the bottleneck is its noise, kept on when sampling too, so one input gives slightly
different outputs for different seeds. The masks come from the step's generator (training) and
the sampling generator, so runs and samples are reproducible.

The discriminator is a PatchGAN on the (input, output) pair stacked as channels: a small
convolutional network whose every output logit judges one patch of the image, 70x70 pixels with
its default three downsampling layers (34 with two, 16 with one). Small images get fewer
layers, since the map would otherwise vanish: at 16 px it has two (34 px patches, wider than
the image), at 8 px one.

The generator's loss is the GAN loss (non-saturating logistic, or least squares) plus the L1
distance to the target weighted by 100: L1 gets the colours and layout right, the GAN loss the
sharpness.
"""

from __future__ import annotations

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
from studio.models.configs import learning_rate, network_width
from studio.models.i2i.common import (  # noqa: F401 - PatchGAN helpers re-exported
    PatchDiscriminator,
    gan_loss,
    init_weights,
    norm_layer,
    patch_layers,
    receptive_field,
    seeded_dropout,
)

MAX_LEVELS = 8  # 256 px -> 1x1, as in the paper
DROPOUT_BLOCKS = 3  # decoder blocks below the bottleneck that drop out


@dataclass
class Pix2PixConfig(ModelConfig):
    width: int = network_width(
        64, help="channels of the U-Net's first layer and of the discriminator's", main=True
    )
    lr_g: float = learning_rate(2e-4, label="Generator learning rate")
    lr_d: float = learning_rate(2e-4, label="Discriminator learning rate")
    beta1: float = setting(0.5, label="Adam beta1", minimum=0.0, maximum=0.999)
    beta2: float = setting(0.999, label="Adam beta2", minimum=0.0, maximum=0.9999)
    l1_weight: float = setting(
        100.0,
        label="L1 weight",
        help="weight of the L1 distance to the target beside the GAN loss",
        minimum=0.0,
        maximum=1000.0,
        main=True,
    )
    gan_loss: str = setting(
        "vanilla",
        label="GAN loss",
        help="vanilla: non-saturating logistic; lsgan: least squares",
        choices=("vanilla", "lsgan"),
    )
    norm: str = setting(
        "batch",
        label="Normalisation",
        help="batch norm, or instance norm (per image)",
        choices=("batch", "instance"),
    )
    dropout: float = setting(
        0.5,
        label="Dropout",
        help="in the 3 decoder blocks below the bottleneck, when training and sampling: "
        "the generator's noise",
        minimum=0.0,
        maximum=0.9,
    )
    d_layers: int = setting(
        3,
        label="Discriminator layers",
        help="downsampling layers of the PatchGAN: 3 judges 70x70 patches (1: 16, 2: 34, "
        "4: 142); fewer at small resolutions",
        minimum=1,
        maximum=4,
    )
    jitter: bool = setting(
        True,
        label="Random jitter",
        help="enlarge each pair by 30/256 and crop it back at random, the same crop for both",
    )


# -- networks -------------------------------------------------------------------------------------


def unet_levels(resolution: int) -> int:
    """Encoder levels of the U-Net: halvings down to 1x1 (at most 8); at a size that is not a
    power of two, as many halvings as divide it."""
    levels = 0
    while levels < MAX_LEVELS and resolution % 2 ** (levels + 1) == 0:
        levels += 1
    if levels < 2:
        raise ValueError(f"the U-Net needs a resolution divisible by 4, not {resolution}")
    return levels


class UNet(nn.Module):
    """Image (C_in channels) -> image (C_out channels) in [-1, 1], of the same size."""

    def __init__(
        self, in_channels: int, out_channels: int, width: int, resolution: int, norm: str
    ) -> None:
        super().__init__()
        levels = unet_levels(resolution)
        widths = [width * min(2**i, 8) for i in range(levels)]
        bias = norm == "instance"  # batch norm has its own shift
        down: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=bias)]
        for i in range(1, levels):
            inner = i == levels - 1  # the bottleneck: a 1x1 map, nothing to normalise
            layers = [
                nn.LeakyReLU(0.2),
                nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=bias or inner),
            ]
            if not inner:
                layers.append(norm_layer(norm, widths[i]))
            down.append(nn.Sequential(*layers))
        self.down = nn.ModuleList(down)
        up: list[nn.Module] = []  # from the bottleneck outwards
        for i in range(levels - 1, 0, -1):
            fan_in = widths[i] if i == levels - 1 else 2 * widths[i]
            up.append(
                nn.Sequential(
                    nn.ReLU(),
                    nn.ConvTranspose2d(fan_in, widths[i - 1], 4, 2, 1, bias=bias),
                    norm_layer(norm, widths[i - 1]),
                )
            )
        up.append(
            nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], out_channels, 4, 2, 1))
        )
        self.up = nn.ModuleList(up)
        self.dropout_blocks = range(1, min(DROPOUT_BLOCKS, levels - 2) + 1)

    def forward(
        self, x: Tensor, p: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``p``: dropout in the decoder blocks below the bottleneck, masks from
        ``generator`` (None: none)."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        h = skips.pop()
        for j, block in enumerate(self.up):
            if j:
                h = torch.cat([h, skips.pop()], 1)
            h = block(h)
            if j in self.dropout_blocks:
                h = seeded_dropout(h, p, generator)
        return torch.tanh(h)


# -- the family -----------------------------------------------------------------------------------


class Pix2Pix(GenerativeModel):
    info = FamilyInfo(
        key="i2i.pix2pix",
        kind="i2i",
        display_name="Pix2Pix",
        summary="Image to image from aligned pairs (sketch to painting): a U-Net with a "
        "patch discriminator; needs folders A and B.",
        capabilities=Capability.TRAIN | Capability.SAMPLE | Capability.PAIRED,
        loss_names=(
            "loss_d",
            "loss_g",
            "loss_g_gan",
            "loss_l1",
            "d_real",
            "d_fake",
            "grad_norm_d",
            "grad_norm_g",
        ),
        about=(
            "Learns to turn image A into image B from aligned pairs: a sketch into a painting, "
            "a label map into a photograph, a day scene into night. The generator is a U-Net: it "
            "encodes the input down to a 1x1 map and decodes it back up, with a skip connection "
            "from each encoder level to the decoder level of the same size, so the input's "
            "layout and detail reach the output directly; it takes no noise vector, but its "
            "dropout stays on when translating, so seeds vary the details. A PatchGAN "
            "discriminator judges the (input, output) pair patch by patch (70x70 px with 3 "
            "layers; small images get fewer layers and a smaller patch, 34 px at 16 px), and the "
            "L1 distance to the target, weighted by 100, keeps colours and layout right while the "
            "GAN loss sharpens. Good when every input has one right answer in the same framing; "
            "it needs pairs aligned pixel for pixel (folders A and B matched by name, or "
            "side-by-side files), and learns from a few hundred of them. Both images of a pair get "
            "the same random jitter (enlarged by 30/256, cropped back) and flip. Sample grids show "
            "held-out pairs as input | output | target rows, with their L1 error (`heldout_l1`); "
            "apply a run with `studio translate`."
        ),
    )
    Config = Pix2PixConfig
    config: Pix2PixConfig
    conditions = ("image",)
    latent_note = "Pix2Pix has no latent space: it translates an input image."

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__(config)
        c = config
        self.generator = UNet(c.channels, c.channels, c.width, c.resolution, c.norm)
        self.discriminator = PatchDiscriminator(
            2 * c.channels, c.width, c.resolution, c.d_layers, c.norm
        )
        init_weights(self)

    def patch_size(self) -> int:
        """Pixels each of the discriminator's logits judges at this resolution."""
        return receptive_field(self.discriminator.layers)

    def paired_jitter(self) -> int:
        if not self.config.jitter:
            return 0
        return max(1, round(self.config.resolution * 30 / 256))  # 286 -> 256 in the paper

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        self.optimizers = {
            "g": torch.optim.Adam(self.generator.parameters(), lr=c.lr_g, betas=betas),
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_d, betas=betas),
        }
        return self.optimizers

    def _gan_loss(self, logits: Tensor, real: bool) -> Tensor:
        return gan_loss(logits, real, self.config.gan_loss)

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        if batch.sources is None:
            raise ValueError(f"{self.info.display_name} trains on pairs: the batch has no inputs")
        source, target = batch.sources, batch.images
        with ctx.autocast():
            fake = self.generator(source, c.dropout, ctx.generator)
            d_real = self.discriminator(source, target).float()
            d_fake = self.discriminator(source, fake.detach()).float()
        loss_d = 0.5 * (self._gan_loss(d_real, True) + self._gan_loss(d_fake, False))
        gn_d = self.optimizer_step("d", loss_d, ctx)

        flags = [p.requires_grad for p in self.discriminator.parameters()]
        for p in self.discriminator.parameters():
            p.requires_grad_(False)  # gradients flow through D, not into it
        try:
            with ctx.autocast():
                d_gen = self.discriminator(source, fake).float()
            loss_gan = self._gan_loss(d_gen, True)
            loss_l1 = (fake.float() - target.float()).abs().mean()
            loss_g = loss_gan + c.l1_weight * loss_l1
            gn_g = self.optimizer_step("g", loss_g, ctx)
        finally:
            for p, flag in zip(self.discriminator.parameters(), flags):
                p.requires_grad_(flag)
        if c.gan_loss == "lsgan":
            real_score, fake_score = d_real.detach().mean(), d_fake.detach().mean()
        else:
            real_score = torch.sigmoid(d_real.detach()).mean()
            fake_score = torch.sigmoid(d_fake.detach()).mean()
        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "loss_g_gan": loss_gan.detach(),
            "loss_l1": loss_l1.detach(),
            "d_real": real_score,
            "d_fake": fake_score,
            "grad_norm_d": gn_d,
            "grad_norm_g": gn_g,
        }

    # -- sampling: translating input images -------------------------------------------------
    def sample_iter(self, n: int, generator: torch.Generator, **conditions: Any):
        """Translate the ``image`` condition (``m x C x R x R`` in [-1, 1], or one image
        ``C x R x R``) into ``n`` outputs: input ``i % m`` for output ``i``, each with its own
        dropout noise from ``generator``."""
        self.check_conditions(conditions)
        image = conditions.get("image")
        if image is None:
            raise ValueError(
                f"{self.info.display_name} translates images: give it an input image "
                "(studio translate --run RUN --image IMG)"
            )
        x = torch.as_tensor(image)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        c = self.config
        want = (c.channels, c.resolution, c.resolution)
        if x.dim() != 4 or tuple(x.shape[1:]) != want or len(x) == 0:
            raise ValueError(
                f"the input image must be {c.channels} x {c.resolution} x {c.resolution} "
                f"(this model's size), not {tuple(x.shape)}"
            )
        x = x[torch.arange(n) % len(x)].to(self.device).float()
        with torch.no_grad(), eval_mode(self.generator):
            out = self.generator(x, c.dropout, generator).float().clamp(-1, 1)
        yield SampleStep(1, 1, out)
        return out
