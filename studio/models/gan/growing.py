"""Progressive growing (Karras et al. 2018): train a GAN at 8 px first, then grow both networks
to the run's resolution one doubling at a time, fading each new layer in.

The schedule is a function of the step alone (so a resumed run continues exactly). It is cut
into phases of ``grow_steps`` steps: 8 px stable, then for each doubling a *fade* phase (alpha
rises linearly from 0 to 1) and a *stable* phase; the last stable phase, at the run's
resolution, lasts to the end of the run. During a fade

- the generator's image is ``alpha * new + (1 - alpha) * up(previous)``: the new block's
  image blended with the upsampled image of the previous stage's to-RGB;
- the discriminator's features are ``alpha * block(from_rgb(x)) + (1 - alpha) *
  from_rgb_prev(down(x))``: the new input layer and block blended with the previous stage's
  input layer on the halved image;
- the real images are shrunk to the stage's size by averaging and blended the same way
  (``alpha * x + (1 - alpha) * up(down(x))``), so reals and fakes change alike.

A network takes part by subclassing :class:`GrowingGenerator` or
:class:`GrowingDiscriminator` and saying where its stages are; the model
(:class:`studio.models.gan.common.GANModel`) sets every growing network's :attr:`stage`
before each step. With ``stage`` None (a model loaded for sampling) a network is the full one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.models.base import setting

START = 8  # the first stage's resolution (px)

DOC = (
    "**Progressive growing (DCGAN, the conditional GAN, WGAN-GP, StyleGAN2: the "
    "`progressive` setting, off by default).** A "
    "curriculum from coarse to fine (Karras et al. 2018): both networks first learn 8 px "
    "images (every real image is shrunk to the stage's size), then grow one doubling at a time "
    "to the run's resolution, so the layout is settled before the detail. Each doubling is a "
    "*fade* of *Steps per growing phase* steps, in which the new layers' image is blended in "
    "with weight alpha rising from 0 to 1 over the upsampled image of the previous stage (the "
    "discriminator and the real images blend likewise), then as many *stable* steps; the "
    "first 8 px phase is as long. A 32 px run with the default 250 steps per phase trains at "
    "8 px to step 250, fades 16 px in to 500, is stable at 16 px to 750, fades 32 px in to "
    "1,000 and trains the full networks after that: give it well over that many steps. The "
    "stage's `resolution` and `alpha` are plotted live and the status line says the stage; "
    "sample grids during growth are the stage's images enlarged to the run's size, and a "
    "trained model always samples with the full networks."
)


def progressive_setting() -> Any:
    """The ``progressive`` setting of a GAN that grows (declared by each such family)."""
    return setting(
        False,
        label="Progressive growing",
        help="coarse to fine: train at 8 px first, then grow to the full size, fading each "
        "new layer in",
    )


def grow_steps_setting() -> Any:
    """The ``grow_steps`` setting: the length of one growing phase."""
    return setting(
        250,
        label="Steps per growing phase",
        help="progressive growing: steps of each fade and each stable stage",
        minimum=1,
        maximum=1_000_000,
    )


@dataclass(frozen=True)
class Stage:
    """Where the growth stands: the networks' current size and how far its newest layers are
    faded in (1 = fully; below 1 = fading)."""

    resolution: int
    alpha: float = 1.0

    @property
    def fading(self) -> bool:
        return self.alpha < 1.0


class GrowthSchedule:
    """step -> :class:`Stage`: 8 px for ``phase_steps`` steps, then a fade and a stable phase
    of ``phase_steps`` steps each per doubling, then the full size to the end."""

    def __init__(self, resolution: int, phase_steps: int, start: int = START) -> None:
        if phase_steps < 1:
            raise ValueError(f"steps per growing phase must be at least 1, got {phase_steps}")
        doublings = math.log2(resolution / start) if resolution >= start else -1.0
        if doublings < 0 or doublings != int(doublings):
            raise ValueError(
                f"progressive growing needs a power-of-two resolution of at least {start}, "
                f"got {resolution}"
            )
        self.resolution, self.phase_steps, self.start = resolution, phase_steps, start
        self.doublings = int(doublings)

    @property
    def end_step(self) -> int:
        """The first step at the full size with every layer faded in (0: nothing to grow)."""
        return 2 * self.doublings * self.phase_steps

    def stage(self, step: int) -> Stage:
        phase, into = divmod(max(0, int(step)), self.phase_steps)
        grown = min((phase + 1) // 2, self.doublings)  # doublings begun so far
        resolution = self.start * 2**grown
        if phase % 2 == 1 and (phase + 1) // 2 <= self.doublings:
            return Stage(resolution, into / self.phase_steps)
        return Stage(resolution)

    def describe(self, stage: Stage) -> str:
        """The status line's words for ``stage``."""
        if stage.resolution == self.resolution and not stage.fading:
            return f"grown: {stage.resolution} px"
        if stage.fading:
            return f"growing: fading {stage.resolution} px in, alpha {stage.alpha:.2f}"
        return f"growing: {stage.resolution} px stable"


def growth_schedule(config: Any) -> GrowthSchedule | None:
    """The schedule of a config with ``progressive`` on, else None (also for families that
    do not declare the setting)."""
    if not getattr(config, "progressive", False):
        return None
    return GrowthSchedule(config.resolution, config.grow_steps)


# -- resizing and blending -------------------------------------------------------------------


def downscale(x: Tensor, size: int) -> Tensor:
    """``x`` shrunk to ``size`` px by averaging (each output pixel is a block's mean)."""
    factor = x.shape[-1] // size
    return x if factor == 1 else F.avg_pool2d(x, factor)


def upscale(x: Tensor, size: int, mode: str = "nearest") -> Tensor:
    """``x`` enlarged to ``size`` px (nearest: each pixel becomes a block)."""
    if x.shape[-1] == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False)


def fade(previous: Tensor, new: Tensor, alpha: float) -> Tensor:
    """``alpha * new + (1 - alpha) * previous``; exactly ``new`` at 1 and ``previous`` at 0."""
    return new * alpha + previous * (1.0 - alpha)


def reals_at(x: Tensor, stage: Stage | None, mode: str = "nearest") -> Tensor:
    """Real images as the networks see them at ``stage``: shrunk to its size and, while
    fading, blended with their own halved-and-enlarged copy the way the generator's images
    are (``mode``: the generator's upsampling)."""
    if stage is None:
        return x
    x = downscale(x, stage.resolution)
    if stage.fading:
        half = upscale(downscale(x, stage.resolution // 2), stage.resolution, mode)
        x = fade(half, x, stage.alpha)
    return x


# -- growing networks -----------------------------------------------------------------------


class Growing(nn.Module):
    """A network that runs at a :class:`Stage` (``stage`` None: the full network)."""

    resolution: int  # the full size
    upsample: ClassVar[str] = "nearest"  # how the previous stage's image is enlarged
    stage: Stage | None = None

    def _partial(self) -> Stage | None:
        """The stage when it is not the full network with every layer faded in."""
        s = self.stage
        if s is None or (s.resolution == self.resolution and not s.fading):
            return None
        return s


class GrowingGenerator(Growing):
    """A generator whose subclasses implement :meth:`images_at`; :meth:`grown` turns it into
    the stage's (possibly fading) image."""

    def images_at(
        self, resolution: int, previous: bool, *inputs: Any
    ) -> tuple[Tensor | None, Tensor]:
        """(the image of the stage before, when ``previous``; the image at ``resolution``)
        for the network's inputs, with every layer up to ``resolution`` at full weight."""
        raise NotImplementedError

    def grown(self, full: Callable[[], Tensor], *inputs: Any) -> Tensor:
        """The image at the current stage; ``full()`` when there is nothing to grow."""
        stage = self._partial()
        if stage is None:
            return full()
        previous, new = self.images_at(stage.resolution, stage.fading, *inputs)
        if previous is None:
            return new
        return fade(upscale(previous, stage.resolution, self.upsample), new, stage.alpha)


class GrowingDiscriminator(Growing):
    """A discriminator cut into an input layer per size (:meth:`entry`, from an image of that
    size) and a list of blocks (:meth:`blocks_from`: those after the input layer of that
    size, where ``blocks_from(r)[1:] == blocks_from(r // 2)``)."""

    def entry(self, resolution: int) -> Callable[[Tensor], Tensor]:
        raise NotImplementedError

    def blocks_from(self, resolution: int) -> Sequence[Callable[[Tensor], Tensor]]:
        raise NotImplementedError

    def trunk(self, x: Tensor) -> Tensor:
        """The features the head takes, for images at the current stage's size."""
        stage = self.stage or Stage(self.resolution)
        size = stage.resolution
        if x.shape[-1] != size or x.shape[-2] != size:
            raise ValueError(
                f"the discriminator is at the {size} px stage but was given "
                f"{x.shape[-2]}x{x.shape[-1]} images"
            )
        h = self.entry(size)(x)
        blocks = list(self.blocks_from(size))
        if stage.fading:
            previous = self.entry(size // 2)(downscale(x, size // 2))
            h = fade(previous, blocks[0](h), stage.alpha)
            blocks = blocks[1:]
        for block in blocks:
            h = block(h)
        return h


def set_stage(module: nn.Module, stage: Stage | None) -> None:
    """Put every growing network inside ``module`` at ``stage``."""
    for m in module.modules():
        if isinstance(m, Growing):
            m.stage = stage


def stage_sizes(resolution: int, start: int = START) -> list[int]:
    """The sizes that get their own to-RGB and from-RGB layers below the full one."""
    sizes, r = [], start
    while r < resolution:
        sizes.append(r)
        r *= 2
    return sizes


def as_tensor_metrics(stage: Stage, device: torch.device) -> dict[str, Tensor]:
    """The stage as plotted values (``resolution``, ``alpha``)."""
    values = torch.tensor([float(stage.resolution), float(stage.alpha)], device=device)
    return {"resolution": values[0], "alpha": values[1]}
