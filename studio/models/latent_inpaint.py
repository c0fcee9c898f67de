"""Inpainting by latent optimisation, for the VAE, flow and GAN families.

Each variation is one latent ``z``, optimised with Adam so that the decoded image matches the
known (unmasked) pixels, plus a prior term that keeps ``z`` plausible:

    loss(z) = sum_known (decode(z) - x)^2 / (2 sigma^2) + prior_weight * energy(z)

``energy`` is ||z||^2 / 2 for the Gaussian-prior latents (VAE, GAN, flow: the negative log
density of N(0, I) up to a constant; for a flow this ignores the log-determinant, a common
approximation). The hole is free: the prior and the decoder fill it.

Starts, one per variation: VAE = encode(image with a grey hole) plus noise; flow = the flow's
exact encoding of the image with the hole filled by noise; GAN = a random draw from the prior.

VQ-VAE is supported by optimising the continuous pre-quantisation grid z_e: the decoder sees
the quantised grid with a straight-through gradient (as in training), the energy is the
commitment distance ||z_e - quantise(z_e)||^2 / 2, and the result decodes quantise(z_e).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.models.base import GenerativeModel, eval_mode
from studio.models.flow import FlowModel
from studio.models.flow.layers import BINS, DATA_SCALE
from studio.models.gan.common import GANModel
from studio.models.vae.common import params_to_images
from studio.models.vae.conv import ConvVAE
from studio.models.vae.vqvae import VQVAE

PREVIEWS = 10  # about this many previews per run
Preview = Callable[[Tensor], np.ndarray]


@dataclass(frozen=True)
class LatentPlan:
    """Settings of one latent optimisation: Adam ``steps`` at ``lr`` on z, the prior term's
    ``prior_weight``, the pixel noise ``sigma`` (in [-1, 1] units) the data term assumes, and
    how much noise ``start_noise`` perturbs the encoded starting point (VAE, VQ-VAE)."""

    steps: int
    lr: float
    prior_weight: float = 1.0
    sigma: float = 0.1
    start_noise: float = 0.5


@dataclass(frozen=True)
class Preset:
    plan: LatentPlan
    description: str


PRESETS: dict[str, Preset] = {
    "fast": Preset(LatentPlan(steps=100, lr=0.05), "100 Adam steps on the latent (lr 0.05)."),
    "quality": Preset(LatentPlan(steps=400, lr=0.02), "400 Adam steps on the latent (lr 0.02)."),
}


# -- per-family views of the latent ---------------------------------------------------------


class _Latent:
    """How one family starts, decodes and scores a latent. ``images`` must be differentiable."""

    def __init__(self, model: GenerativeModel, labels: Tensor | None) -> None:
        self.model = model
        self.labels = labels

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    def images(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def energy(self, z: Tensor) -> Tensor:
        """Per-image prior energy: -log N(z; 0, I) up to a constant."""
        return 0.5 * z.flatten(1).square().sum(1)

    def final(self, z: Tensor) -> Tensor:
        return self.images(z).clamp(-1, 1)


def _noise(like: Tensor, gen: torch.Generator) -> Tensor:
    return torch.randn(like.shape, generator=gen).to(like.device)  # CPU draw: seeded anywhere


class _VAELatent(_Latent):
    model: ConvVAE

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        grey = torch.where(hole, torch.zeros_like(x), x)  # 0 is mid-grey in [-1, 1]
        mean = self.model.posterior(grey, self.labels)[0].float()
        return mean + plan.start_noise * _noise(mean, gen)

    def images(self, z: Tensor) -> Tensor:
        params = self.model.decoder(z, self.labels)
        return params_to_images(params, self.model.config.likelihood)


class _GANLatent(_Latent):
    model: GANModel

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        return self.model.latent(x.shape[0], gen)

    def images(self, z: Tensor) -> Tensor:
        return self.model.generator(z, self.labels).float()


class _FlowLatent(_Latent):
    model: FlowModel

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        filled = torch.where(hole, (0.5 * _noise(x, gen)).clamp(-1, 1), x)
        return self.model.encode(filled).float()

    def images(self, z: Tensor) -> Tensor:
        m, c = self.model, self.model.config
        x = m.flow.inverse(z.to(next(m.parameters()).dtype))
        # quantize_back without its clamp, whose zero gradient would stall saturated pixels.
        pixels = (x / DATA_SCALE + 0.5) * BINS - 0.5
        images = (pixels / 127.5 - 1).float().reshape(-1, c.channels, c.resolution, c.resolution)
        return torch.nan_to_num(images, nan=0.0)


class _VQLatent(_Latent):
    model: VQVAE

    def _quantised(self, z: Tensor) -> Tensor:
        b, d, h, w = z.shape
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, d)
        codes = self.model.codebook[self.model.nearest(flat)]
        return codes.view(b, h, w, d).permute(0, 3, 1, 2)

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        grey = torch.where(hole, torch.zeros_like(x), x)
        z = self.model.encoder(grey).float()
        return z + plan.start_noise * z.std() * _noise(z, gen)

    def images(self, z: Tensor) -> Tensor:
        straight = z + (self._quantised(z) - z).detach()  # the decoder sees codes
        return self.model.decoder(straight).float()

    def energy(self, z: Tensor) -> Tensor:
        return 0.5 * (z - self._quantised(z)).flatten(1).square().sum(1)

    def final(self, z: Tensor) -> Tensor:
        return self.model.decoder(self._quantised(z)).float().clamp(-1, 1)


def latent_view(model: GenerativeModel, labels: Tensor | None) -> _Latent:
    """The latent adapter of ``model``; a StudioError for a model without a usable latent."""
    if isinstance(model, VQVAE):
        return _VQLatent(model, labels)
    if isinstance(model, ConvVAE):
        return _VAELatent(model, labels)
    if isinstance(model, GANModel):
        return _GANLatent(model, labels)
    if isinstance(model, FlowModel):
        return _FlowLatent(model, labels)
    raise StudioError(f"{model.info.display_name} has no latent space that inpainting can use.")


# -- the optimisation ------------------------------------------------------------------------


def optimise_latent(
    model: GenerativeModel,
    x0: Tensor,
    mask: Tensor,
    n: int,
    generator: torch.Generator,
    plan: LatentPlan,
    labels: Tensor | None = None,
    preview: Preview | None = None,
) -> Generator[Progress, None, Tensor]:
    """Optimise ``n`` latents (one per variation, all in one batch: Adam treats each element
    on its own, so the variations do not interact). Yields one Progress per step with the
    known-pixel error and loss; returns N x C x R x R images in [-1, 1] (not yet composited:
    the caller pastes the known pixels back)."""
    if plan.steps < 1 or not plan.lr > 0 or plan.prior_weight < 0 or not plan.sigma > 0:
        raise StudioError("Latent inpainting needs steps >= 1, lr > 0, sigma > 0, weight >= 0.")
    device = model.device
    x0 = x0.to(device).float().expand(n, -1, -1, -1)
    hole = (mask.to(device) > 0.5).expand_as(x0)
    known = (~hole).float()
    view = latent_view(model, labels)
    with torch.no_grad(), eval_mode(model):
        z = view.start(x0, hole, plan, generator).detach().clone()
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=plan.lr)
    count = known.flatten(1).sum(1).clamp_min(1.0)
    every = max(1, plan.steps // PREVIEWS)
    for step in range(1, plan.steps + 1):
        # eval_mode per step (batch norm must not move); nothing stays switched while suspended.
        with torch.enable_grad(), eval_mode(model):
            images = view.images(z)
            sq = ((images - x0).square() * known).flatten(1).sum(1)
            loss = (sq / (2 * plan.sigma**2) + plan.prior_weight * view.energy(z)).sum()
            # Gradients for z only: the model's weights get no .grad and stay untouched.
            (grad,) = torch.autograd.grad(loss, [z])
        z.grad = grad
        opt.step()
        metrics = {
            "known_mse": float((sq.detach() / count).mean()),
            "loss": float(loss.detach()) / n,
        }
        image = None
        if preview is not None and (step % every == 0 or step == plan.steps):
            with torch.no_grad(), eval_mode(model):
                image = preview(torch.where(hole, view.final(z), x0))
        yield Progress("inpaint", step, plan.steps, "latent optimisation", metrics, image)
    with torch.no_grad(), eval_mode(model):
        return view.final(z.detach())
