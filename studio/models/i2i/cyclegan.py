"""CycleGAN (Zhu et al. 2017): image to image in both directions, learned from two folders of
images that are not paired (photographs and paintings, summer and winter).

Two generators translate A -> B and B -> A; two PatchGAN discriminators (70x70 patches, the
one Pix2Pix uses, shared from ``i2i/common.py``) judge whether an image looks like folder A's
or folder B's. With nothing to compare an output against, the generators are held to the
input by cycle consistency: A -> B -> A must give back the A image (and B -> A -> B the B
image), an L1 loss weighted by 10. An identity loss (weight 5: half the cycle weight, as in
the paper) asks G_AB to leave an image that already looks like B alone, which keeps colours.

The generators are ResNets: a 7x7 convolution, two stride-2 downsamplings, residual blocks at
a quarter of the size, two upsamplings and a 7x7 convolution to the image, with reflection
padding (no dark borders) and instance norm. They are fully convolutional, so a trained model
translates images of any size (padded to a multiple of 4, its stride, and cropped back).

The GAN loss is least squares. The discriminators learn from a history of 50 generated images
per direction (half of each batch they see is swapped for older fakes), which damps
oscillation. The learning rate stays constant for the first half of the run and decays
linearly to zero over the second half.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.models.base import (
    A2B,
    DIRECTIONS,
    Batch,
    Capability,
    FamilyInfo,
    GenerativeModel,
    ModelConfig,
    SampleStep,
    StepContext,
    eval_mode,
    linear_warmup,
    setting,
)
from studio.models.configs import learning_rate, network_width
from studio.models.i2i.common import (
    PatchDiscriminator,
    gan_loss,
    init_weights,
    receptive_field,
    seeded_dropout,
)

STRIDE = 4  # two stride-2 downsamplings: inputs are padded to a multiple of this
MIN_SIZE = 8  # the residual blocks' reflection padding needs 2 px at a quarter of the size


@dataclass
class CycleGANConfig(ModelConfig):
    width: int = network_width(
        64, help="channels of the generators' first layer and of the discriminators'", main=True
    )
    blocks: int = setting(
        6,
        label="Residual blocks",
        help="residual blocks in each generator (the paper: 6 at 128 px, 9 at 256 px)",
        minimum=1,
        maximum=12,
    )
    lr_g: float = learning_rate(2e-4, label="Generator learning rate")
    lr_d: float = learning_rate(2e-4, label="Discriminator learning rate")
    beta1: float = setting(0.5, label="Adam beta1", minimum=0.0, maximum=0.999)
    beta2: float = setting(0.999, label="Adam beta2", minimum=0.0, maximum=0.9999)
    cycle_weight: float = setting(
        10.0,
        label="Cycle weight",
        help="weight of the cycle-consistency L1 loss (A -> B -> A gives back A)",
        minimum=0.0,
        maximum=1000.0,
        main=True,
    )
    identity_weight: float = setting(
        5.0,
        label="Identity weight",
        help="weight of the identity L1 loss (G_AB leaves a B image alone); the paper uses "
        "half the cycle weight; 0 = off",
        minimum=0.0,
        maximum=1000.0,
    )
    pool_size: int = setting(
        50,
        label="History pool",
        help="generated images kept per direction; the discriminators see older fakes from "
        "it half of the time (0 = only the newest)",
        minimum=0,
        maximum=500,
    )
    lr_decay: bool = setting(
        True,
        label="Learning-rate decay",
        help="constant for the first half of the run, then linear decay to zero at its end",
    )
    d_layers: int = setting(
        3,
        label="Discriminator layers",
        help="downsampling layers of the PatchGANs: 3 judges 70x70 patches (1: 16, 2: 34, "
        "4: 142); fewer at small resolutions",
        minimum=1,
        maximum=4,
    )
    dropout: float = setting(
        0.0,
        label="Dropout",
        help="in each residual block, when training and translating (0 as in the paper: "
        "the translation is then the same for every seed)",
        minimum=0.0,
        maximum=0.9,
    )


def decay_factor(step: int, total: int) -> float:
    """The learning-rate factor at ``step`` (0-based) of a ``total``-step run: 1 for the first
    half, then linear down to 0 at ``total`` (the last step trains at 1/half of the rate).
    A function of the step alone, so a resumed run continues exactly; 1 when ``total`` is 0
    (unknown)."""
    if total <= 0:
        return 1.0
    span = total - total // 2  # the second half's steps
    return max(0.0, min(1.0, (total - step) / span))


# -- networks -------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """x + conv(norm(relu(conv(x)))), reflection-padded, instance-normalised."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            nn.InstanceNorm2d(channels),
            nn.ReLU(True),
        )
        self.second = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
        return x + self.second(seeded_dropout(self.first(x), p, generator))


class ResnetGenerator(nn.Module):
    """Image -> image in [-1, 1] of the same size (a multiple of 4, at least 8 px)."""

    def __init__(self, channels: int, width: int, blocks: int) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, width, 7),
            nn.InstanceNorm2d(width),
            nn.ReLU(True),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.InstanceNorm2d(2 * width),
            nn.ReLU(True),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1),
            nn.InstanceNorm2d(4 * width),
            nn.ReLU(True),
        )
        self.blocks = nn.ModuleList(ResnetBlock(4 * width) for _ in range(blocks))
        self.tail = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 3, 2, 1, output_padding=1),
            nn.InstanceNorm2d(2 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 3, 2, 1, output_padding=1),
            nn.InstanceNorm2d(width),
            nn.ReLU(True),
            nn.ReflectionPad2d(3),
            nn.Conv2d(width, channels, 7),
            nn.Tanh(),
        )

    def forward(
        self, x: Tensor, p: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``p``: dropout in the residual blocks, masks from ``generator`` (None: none)."""
        h = self.head(x)
        for block in self.blocks:
            h = block(h, p, generator)
        return self.tail(h)


def translate_padded(
    net: ResnetGenerator, x: Tensor, p: float, generator: torch.Generator | None
) -> Tensor:
    """``net`` on images of any size of at least :data:`MIN_SIZE`: reflection-padded on the
    right and bottom to a multiple of :data:`STRIDE`, cropped back after."""
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"images must be at least {MIN_SIZE} x {MIN_SIZE} px, not {w} x {h}")
    ph, pw = -h % STRIDE, -w % STRIDE
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    return net(x, p, generator)[..., :h, :w]


class HistoryPool(nn.Module):
    """The last generated images the discriminator learns from (Shrivastava et al. 2017).

    Until it is full, every image goes in and comes back out. Once full, each image is, with
    probability 1/2, swapped for a stored one at random (the stored one goes out, the new one
    takes its place), else passed through. The store is a buffer, so checkpoints keep it and
    a resumed run continues exactly; randomness comes from the step's generator."""

    def __init__(self, size: int, channels: int, resolution: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, channels, resolution, resolution))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def query(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if self.size == 0:
            return images
        images = images.detach()
        n = len(images)
        dev = generator.device
        swap = (torch.rand(n, generator=generator, device=dev) < 0.5).tolist()
        slots = torch.randint(0, self.size, (n,), generator=generator, device=dev).tolist()
        count = int(self.count)
        out = []
        for i in range(n):
            image = images[i].to(self.images.dtype)
            if count < self.size:
                self.images[count] = image
                count += 1
                out.append(image)
            elif swap[i]:
                out.append(self.images[slots[i]].clone())
                self.images[slots[i]] = image
            else:
                out.append(image)
        self.count.fill_(count)
        return torch.stack(out).to(images.dtype)


# -- the family -----------------------------------------------------------------------------------


class CycleGAN(GenerativeModel):
    info = FamilyInfo(
        key="i2i.cyclegan",
        kind="i2i",
        display_name="CycleGAN",
        summary="Image to image both ways from two unpaired folders (photos and paintings): "
        "ResNet generators held to their input by cycle consistency.",
        capabilities=Capability.TRAIN | Capability.SAMPLE | Capability.PAIRED | Capability.UNPAIRED,
        loss_names=(
            "loss_d_a",
            "loss_d_b",
            "loss_g",
            "loss_gan_ab",
            "loss_gan_ba",
            "loss_cycle_a",
            "loss_cycle_b",
            "loss_idt_a",
            "loss_idt_b",
            "grad_norm_d",
            "grad_norm_g",
        ),
        about=(
            "Learns to turn images of one collection into the style of another, and back, from "
            "two folders that need not match: photographs and paintings, summer and winter, "
            "horses and zebras. Two ResNet generators (reflection padding, instance norm, "
            "residual blocks at a quarter of the size) translate A to B and B to A; two "
            "PatchGAN discriminators (70x70 patches, fewer layers at small sizes) judge each "
            "folder's look with a least-squares loss. With no target to compare to, each "
            "translation must survive the round trip: A to B to A gives back the A image (the "
            "cycle loss, weight 10), and a generator leaves an image already in its output "
            "style alone (the identity loss, weight 5). The discriminators also see older fakes "
            "from a history of 50 per direction, and the learning rate decays linearly to zero "
            "over the second half of the run. It changes textures and colours well and shapes "
            "little; it needs a few hundred images per folder. Sample grids show fixed held-out "
            "images of each folder as input | translation | round trip rows, with the held-out "
            "cycle error (`heldout_cycle_a`, `heldout_cycle_b`); apply a run in either "
            "direction, to images of any size, with `studio translate --direction a2b|b2a`."
        ),
    )
    Config = CycleGANConfig
    config: CycleGANConfig
    conditions = ("image", "direction")
    latent_note = "CycleGAN has no latent space: it translates an input image."
    translates_any_size = True

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__(config)
        c = config
        self.g_ab = ResnetGenerator(c.channels, c.width, c.blocks)
        self.g_ba = ResnetGenerator(c.channels, c.width, c.blocks)
        self.d_a = PatchDiscriminator(c.channels, c.width, c.resolution, c.d_layers, "instance")
        self.d_b = PatchDiscriminator(c.channels, c.width, c.resolution, c.d_layers, "instance")
        init_weights(self)
        self.pool_a = HistoryPool(c.pool_size, c.channels, c.resolution)  # fakes of A (G_BA's)
        self.pool_b = HistoryPool(c.pool_size, c.channels, c.resolution)  # fakes of B (G_AB's)

    def networks(self) -> dict[str, nn.Module]:
        return {"g_ab": self.g_ab, "g_ba": self.g_ba, "d_a": self.d_a, "d_b": self.d_b}

    def patch_size(self) -> int:
        """Pixels each of the discriminators' logits judges at this resolution."""
        return receptive_field(self.d_a.layers)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        gens = [*self.g_ab.parameters(), *self.g_ba.parameters()]
        discs = [*self.d_a.parameters(), *self.d_b.parameters()]
        self.optimizers = {
            "g": torch.optim.Adam(gens, lr=c.lr_g, betas=betas),
            "d": torch.optim.Adam(discs, lr=c.lr_d, betas=betas),
        }
        return self.optimizers

    def training_notes(self) -> list[str]:
        if not self.config.lr_decay:
            return []
        return ["CycleGAN: learning rate constant for the first half, then decaying to zero."]

    def _schedule(self, ctx: StepContext) -> StepContext:
        """``ctx`` with the linear decay over the run's second half on top of the trainer's
        schedule (``ctx`` shares its gradient norms, so the trainer still logs them)."""
        if not self.config.lr_decay:
            return ctx
        base = ctx.lr_scale if ctx.lr_scale is not None else linear_warmup(ctx.step, 0)
        return dataclasses.replace(ctx, lr_scale=base * decay_factor(ctx.step, ctx.total_steps))

    def cycle_losses(self, a: Tensor, b: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        """The generators' forward passes and their L1 losses: translations ``fake_b`` and
        ``fake_a``, cycle ``loss_cycle_a`` (|G_BA(G_AB(a)) - a|) and ``loss_cycle_b``,
        identity ``loss_idt_a`` (|G_BA(a) - a|) and ``loss_idt_b`` (both 0 when the identity
        weight is 0)."""
        c, gen = self.config, ctx.generator
        with ctx.autocast():
            fake_b = self.g_ab(a, c.dropout, gen)
            fake_a = self.g_ba(b, c.dropout, gen)
            rec_a = self.g_ba(fake_b, c.dropout, gen)
            rec_b = self.g_ab(fake_a, c.dropout, gen)
        out = {
            "fake_a": fake_a,
            "fake_b": fake_b,
            "loss_cycle_a": (rec_a.float() - a.float()).abs().mean(),
            "loss_cycle_b": (rec_b.float() - b.float()).abs().mean(),
        }
        if c.identity_weight > 0:
            with ctx.autocast():
                idt_a = self.g_ba(a, c.dropout, gen)
                idt_b = self.g_ab(b, c.dropout, gen)
            out["loss_idt_a"] = (idt_a.float() - a.float()).abs().mean()
            out["loss_idt_b"] = (idt_b.float() - b.float()).abs().mean()
        else:
            out["loss_idt_a"] = out["loss_idt_b"] = torch.zeros((), device=a.device)
        return out

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        if batch.sources is None:
            raise ValueError(
                f"{self.info.display_name} trains on two folders: the batch has no A images"
            )
        a, b = batch.sources, batch.images
        ctx = self._schedule(ctx)

        # Generators: fool both discriminators, survive the round trip, leave their own
        # style alone. Gradients flow through the discriminators, not into them.
        discs = [*self.d_a.parameters(), *self.d_b.parameters()]
        flags = [p.requires_grad for p in discs]
        for p in discs:
            p.requires_grad_(False)
        try:
            out = self.cycle_losses(a, b, ctx)
            fake_a, fake_b = out["fake_a"], out["fake_b"]
            with ctx.autocast():
                gan_ab = gan_loss(self.d_b(fake_b).float(), True)
                gan_ba = gan_loss(self.d_a(fake_a).float(), True)
            loss_g = (
                gan_ab
                + gan_ba
                + c.cycle_weight * (out["loss_cycle_a"] + out["loss_cycle_b"])
                + c.identity_weight * (out["loss_idt_a"] + out["loss_idt_b"])
            )
            gn_g = self.optimizer_step("g", loss_g, ctx)
        finally:
            for p, flag in zip(discs, flags):
                p.requires_grad_(flag)

        # Discriminators: real images against fakes from the history pools.
        old_a = self.pool_a.query(fake_a, ctx.generator)
        old_b = self.pool_b.query(fake_b, ctx.generator)
        with ctx.autocast():
            real_a, seen_a = self.d_a(a).float(), self.d_a(old_a).float()
            real_b, seen_b = self.d_b(b).float(), self.d_b(old_b).float()
        loss_d_a = 0.5 * (gan_loss(real_a, True) + gan_loss(seen_a, False))
        loss_d_b = 0.5 * (gan_loss(real_b, True) + gan_loss(seen_b, False))
        gn_d = self.optimizer_step("d", loss_d_a + loss_d_b, ctx)
        return {
            "loss_d_a": loss_d_a.detach(),
            "loss_d_b": loss_d_b.detach(),
            "loss_g": loss_g.detach(),
            "loss_gan_ab": gan_ab.detach(),
            "loss_gan_ba": gan_ba.detach(),
            "loss_cycle_a": out["loss_cycle_a"].detach(),
            "loss_cycle_b": out["loss_cycle_b"].detach(),
            "loss_idt_a": out["loss_idt_a"].detach(),
            "loss_idt_b": out["loss_idt_b"].detach(),
            "grad_norm_d": gn_d,
            "grad_norm_g": gn_g,
        }

    # -- sampling: translating input images -------------------------------------------------
    def sample_iter(self, n: int, generator: torch.Generator, **conditions: Any):
        """Translate the ``image`` condition (``m x C x H x W`` in [-1, 1], or one image
        ``C x H x W``, any size of at least 8 px) in ``direction`` (``"a2b"``, the default, or
        ``"b2a"``) into ``n`` outputs of its size: input ``i % m`` for output ``i``."""
        self.check_conditions(conditions)
        image = conditions.get("image")
        if image is None:
            raise ValueError(
                f"{self.info.display_name} translates images: give it an input image "
                "(studio translate --run RUN --image IMG)"
            )
        direction = conditions.get("direction") or A2B
        if direction not in DIRECTIONS:
            raise ValueError(f"the direction is a2b (A to B) or b2a (B to A), not {direction!r}")
        x = torch.as_tensor(image)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        c = self.config
        if x.dim() != 4 or x.shape[1] != c.channels or len(x) == 0:
            raise ValueError(f"the input image must be {c.channels} x H x W, not {tuple(x.shape)}")
        x = x[torch.arange(n) % len(x)].to(self.device).float()
        net = self.g_ab if direction == A2B else self.g_ba
        gen = generator if c.dropout > 0 else None
        with torch.no_grad(), eval_mode(net):
            out = translate_padded(net, x, c.dropout, gen).float().clamp(-1, 1)
        yield SampleStep(1, 1, out)
        return out
