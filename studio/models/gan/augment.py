"""Differentiable augmentation of everything a GAN's discriminator sees, and its adaptive
probability. Pure torch.

A discriminator trained on a few hundred images learns them by heart: it calls every training
image real and everything else fake, and the generator gets no useful signal (samples copy or
collapse). Showing the discriminator real *and* generated images through the same random
changes stops it memorising the exact pixels; because the changes are differentiable, the
generator still learns through them, and because fakes are changed exactly like reals, the
changes do not leak into the samples (DiffAugment, Zhao et al. 2020).

:func:`augment` applies three groups of changes, each to each image with probability ``p``:

* colour: brightness (add -0.5..0.5), saturation (x0..2 around the pixel's grey), contrast
  (x0.5..1.5 around the image mean);
* translation: a shift of up to 1/8 of the size, the uncovered border grey (0);
* cutout: a grey square of half the size at a random place.

:class:`AugmentPipe` holds ``p``: fixed, or adapted as in ADA (Karras et al. 2020): the
overfitting signal r_t = E[sign(D(real))] is averaged over ``interval`` steps, and p moves up
when r_t is above the target (about 0.6: the discriminator calls 80% of the reals real) and
down when below, by a step that lets it go from 0 to 1 in ``kimg`` thousand images. Its state
is tensors on the model's device, so training needs no host sync for it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("auto", "adaptive", "fixed", "off")
AUTO_LIMIT = 5000  # "auto" turns adaptive augmentation on for folders with fewer images

# For docs/models.md (studio.models.catalog), under the GANs' heading.
DOC = (
    "**Augmentation (every GAN: the `augment` setting).** On a small folder the "
    "discriminator learns the training images by heart, calls everything else fake, and the "
    "generator stops learning: samples collapse or copy. With augmentation on, every image "
    "the discriminator sees, real or generated, in both networks' updates, first goes "
    "through random colour (brightness, saturation, contrast), shift (up to 1/8 of the "
    "size) and cutout (a grey square of half the size) changes: the DiffAugment recipe "
    "(Zhao et al. 2020). The changes are differentiable, so the generator learns through "
    "them, and as fakes are changed exactly like reals, samples do not show them. "
    "*adaptive* (ADA, Karras et al. 2020) starts at probability p = 0 and every 4 steps "
    "raises p while the discriminator is too sure of the reals (E[sign D(real)] above "
    "*Adaptive target*, 0.6) and lowers it otherwise, by at most 1 per *Adaptive speed* "
    "thousand images (do not make it so fast that p reaches 1 within the first few hundred "
    "steps: a DCGAN under full augmentation that early needs longer to start drawing varied "
    "images; docs/quality.md); p is plotted live as `augment_p` and the signal as `ada_rt` (for "
    "WGAN-GP's critic: the share of reals scored above the fakes' mean). *fixed* applies "
    "each change with *Augmentation probability*; *off* trains as before. *auto*, the "
    f"default, is adaptive when the training folder has fewer than {AUTO_LIMIT:,} images "
    "and off otherwise; the training log says which and why. Runs saved before this "
    "setting existed take the default when resumed."
)


def augment(
    x: Tensor,
    p: Tensor | float,
    generator: torch.Generator,
    translation: float = 0.125,
    cutout: float = 0.5,
) -> Tensor:
    """``x`` (N x C x H x W, in [-1, 1]) with colour, translation and cutout each applied to
    each image with probability ``p`` (a float or a 0-d tensor). Differentiable in ``x``; every
    random number comes from ``generator`` (the same draws whatever ``p`` is)."""
    n, _, h, w = x.shape
    dev = x.device
    u = torch.rand(n, 10, generator=generator, device=generator.device).to(dev, torch.float32)
    on = u[:, :3] < p  # colour, translation, cutout

    # Colour: brightness, saturation, contrast.
    y = x + (u[:, 3] - 0.5).view(n, 1, 1, 1).to(x.dtype)
    grey = y.mean(dim=1, keepdim=True)
    y = (y - grey) * (2 * u[:, 4]).view(n, 1, 1, 1).to(x.dtype) + grey
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * (u[:, 5] + 0.5).view(n, 1, 1, 1).to(x.dtype) + mean
    x = torch.where(on[:, 0].view(n, 1, 1, 1), y, x)

    # Translation: gather from a zero-padded copy (the gradient flows through the gather).
    sh, sw = max(1, round(h * translation)), max(1, round(w * translation))
    dy = ((u[:, 6] * (2 * sh + 1)).floor().clamp(max=2 * sh) - sh).long() * on[:, 1]
    dx = ((u[:, 7] * (2 * sw + 1)).floor().clamp(max=2 * sw) - sw).long() * on[:, 1]
    padded = F.pad(x, (sw, sw, sh, sh))
    rows = torch.arange(h, device=dev)[None, :] + sh - dy[:, None]  # N x H
    cols = torch.arange(w, device=dev)[None, :] + sw - dx[:, None]  # N x W
    idx = torch.arange(n, device=dev)[:, None, None]
    x = padded[idx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    # Cutout: a square of ``cutout`` times the size, grey, centred anywhere in the image.
    ch, cw = max(1, round(h * cutout)), max(1, round(w * cutout))
    top = (u[:, 8] * h).floor().long() - ch // 2
    left = (u[:, 9] * w).floor().long() - cw // 2
    yy = torch.arange(h, device=dev)[None, :] - top[:, None]  # N x H
    xx = torch.arange(w, device=dev)[None, :] - left[:, None]
    inside = ((yy >= 0) & (yy < ch))[:, :, None] & ((xx >= 0) & (xx < cw))[:, None, :]
    keep = ~(inside & on[:, 2].view(n, 1, 1))
    return x * keep[:, None].to(x.dtype)


class AugmentPipe:
    """The augmentation a GAN applies before its discriminator: ``mode`` "off", "fixed"
    (probability ``p`` always) or "adaptive" (p starts at 0 and follows ADA's heuristic,
    aiming at ``target``, moving by at most 1 per ``kimg`` thousand images)."""

    def __init__(self, mode: str, p: float, target: float, kimg: float, interval: int = 4) -> None:
        if mode not in ("adaptive", "fixed", "off"):
            raise ValueError(f"augmentation mode must be adaptive, fixed or off, got {mode!r}")
        self.mode, self.target, self.kimg, self.interval = mode, target, kimg, max(1, interval)
        self.p = torch.tensor(float(p) if mode == "fixed" else 0.0)
        self.signal = torch.zeros(())  # the last r_t (adaptive)
        self._sum = torch.zeros(())  # sum of sign(D(real)) since the last adjustment
        self._count = torch.zeros(())  # how many reals that sum is over

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def _on(self, device: torch.device) -> None:
        if self.p.device != device:
            self.p, self.signal = self.p.to(device), self.signal.to(device)
            self._sum, self._count = self._sum.to(device), self._count.to(device)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """``x`` augmented (itself when off)."""
        if not self.enabled:
            return x
        self._on(x.device)
        return augment(x, self.p, generator)

    @torch.no_grad()
    def observe(self, signs: Tensor, step: int) -> None:
        """Count the discriminator's verdicts on this step's reals (``signs``: sign(D(real)),
        or the critic's equivalent) and, every ``interval`` steps, move p toward the target."""
        if self.mode != "adaptive":
            return
        self._on(signs.device)
        self._sum += signs.detach().float().sum()
        self._count += signs.numel()
        if (step + 1) % self.interval:
            return
        stats = torch.stack([self._sum, self._count])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)  # one p for every process
        total, count = stats.unbind()
        self.signal = total / count.clamp(min=1)
        adjust = torch.sign(self.signal - self.target) * count / (self.kimg * 1000)
        self.p = (self.p + adjust).clamp(0.0, 1.0)
        self._sum.zero_()
        self._count.zero_()

    def metrics(self) -> dict[str, Tensor]:
        """The plotted values: ``augment_p`` and the overfitting signal ``ada_rt``."""
        return {"augment_p": self.p.detach().clone(), "ada_rt": self.signal.detach().clone()}

    def state(self) -> dict[str, Any]:
        """JSON-able state for checkpoints (reading it syncs with the device)."""
        return {
            "p": float(self.p),
            "signal": float(self.signal),
            "sum": float(self._sum),
            "count": float(self._count),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        dev = self.p.device
        if self.mode == "adaptive" and "p" in state:
            self.p = torch.tensor(float(state["p"]), device=dev)
            self.signal = torch.tensor(float(state.get("signal", 0.0)), device=dev)
            self._sum = torch.tensor(float(state.get("sum", 0.0)), device=dev)
            self._count = torch.tensor(float(state.get("count", 0.0)), device=dev)


def resolve_mode(mode: str, images: int | None) -> str:
    """The mode "auto" stands for: adaptive for a folder of fewer than :data:`AUTO_LIMIT`
    images, off for a larger one or when the folder is unknown (no training data given)."""
    if mode != "auto":
        return mode
    return "adaptive" if images is not None and images < AUTO_LIMIT else "off"
