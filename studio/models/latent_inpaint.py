"""Inpainting by latent optimisation, for any family with a latent space (VAE, flow, GAN).

Each variation is one latent ``z``, optimised with Adam so that the decoded image matches the
known (unmasked) pixels, plus a prior term that keeps ``z`` plausible:

    loss(z) = sum_known (decode(z) - x)^2 / (2 sigma^2) + prior_weight * energy(z)

``energy`` is ||z||^2 / 2 for the Gaussian-prior latents (VAE, GAN, flow: the negative log
density of N(0, I) up to a constant; for a flow this ignores the log-determinant, a common
approximation). The hole is free: the prior and the decoder fill it.

A family takes it by mixing in :class:`LatentInpainting`; its :class:`LatentView` says how
to start, decode and score a latent. Starts, one per variation: a random draw from the prior by
default (GANs); VAEs encode the image with a grey hole and add noise, flows encode the image
with the hole filled by noise (their views live in their own files). VQ-VAE optimises the
continuous pre-quantisation grid z_e: the decoder sees the quantised grid with a
straight-through gradient (as in training), the energy is the commitment distance
||z_e - quantise(z_e)||^2 / 2, and the result decodes quantise(z_e).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.models.base import eval_mode
from studio.models.capabilities import InpaintSettings, Preview

PREVIEWS = 10  # about this many previews per run


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


# -- how a family's latent is optimised ------------------------------------------------------


class LatentView:
    """How one family starts, decodes and scores a latent for inpainting. ``images`` must be
    differentiable. The default serves any :class:`~studio.models.capabilities.LatentFamily`
    with a Gaussian prior: start from a prior draw, decode with ``decode_latents``, energy
    ||z||^2 / 2. A family overrides :meth:`LatentInpainting.inpaint_view` to start elsewhere
    (an encoder's guess) or to optimise another latent (VQ-VAE: the pre-quantisation grid)."""

    def __init__(self, model: Any, labels: Tensor | None) -> None:
        self.model = model
        self.labels = labels

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        return self.model.prior_latents(x.shape[0], gen, 1.0).to(x.device)

    def images(self, z: Tensor) -> Tensor:
        return self.model.decode_latents(z, self.labels)

    def energy(self, z: Tensor) -> Tensor:
        """Per-image prior energy: -log N(z; 0, I) up to a constant."""
        return 0.5 * z.flatten(1).square().sum(1)

    def final(self, z: Tensor) -> Tensor:
        return self.images(z).clamp(-1, 1)


def noise_like(like: Tensor, gen: torch.Generator) -> Tensor:
    """Standard normal noise shaped like ``like``, drawn on the CPU (seeded anywhere)."""
    return torch.randn(like.shape, generator=gen).to(like.device)


class LatentInpainting:
    """The :class:`~studio.models.capabilities.InpaintFamily` of latent optimisation, for a
    family that implements the latent protocol: mix it into the family's class and set
    ``Capability.INPAINT``."""

    inpaint_methods: tuple[str, ...] = ()
    inpaint_method_labels: dict[str, str] = {}

    def inpaint_view(self, labels: Tensor | None) -> LatentView:
        return LatentView(self, labels)

    @classmethod
    def inpaint_presets(cls, method: str = "") -> dict[str, str]:
        return {name: p.description for name, p in PRESETS.items()}

    def inpaint_describe(self, settings: InpaintSettings) -> str:
        plan = latent_plan(settings)
        return f"latent optimisation: {plan.steps} Adam steps, prior weight {plan.prior_weight:g}"

    def inpaint_iter(
        self,
        x0: Tensor,
        hole: Tensor,
        n: int,
        generator: torch.Generator,
        settings: InpaintSettings,
        labels: Tensor | None,
        preview: Preview | None,
    ) -> Generator[Progress, None, Tensor]:
        view = self.inpaint_view(labels)
        plan = latent_plan(settings)
        return (yield from optimise_latent(view, x0, hole, n, generator, plan, preview))


def latent_plan(settings: InpaintSettings) -> LatentPlan:
    """The preset's plan with the user's overrides."""
    if settings.preset not in PRESETS:
        raise StudioError(f"Inpainting: preset must be one of {', '.join(PRESETS)}.")
    plan = PRESETS[settings.preset].plan
    if settings.steps is not None:
        plan = replace(plan, steps=settings.steps)
    if settings.prior_weight is not None:
        plan = replace(plan, prior_weight=settings.prior_weight)
    return plan


# -- the optimisation ------------------------------------------------------------------------


def optimise_latent(
    view: LatentView,
    x0: Tensor,
    mask: Tensor,
    n: int,
    generator: torch.Generator,
    plan: LatentPlan,
    preview: Preview | None = None,
) -> Generator[Progress, None, Tensor]:
    """Optimise ``n`` latents (one per variation, all in one batch: Adam treats each element
    on its own, so the variations do not interact). Yields one Progress per step with the
    known-pixel error and loss; returns N x C x R x R images in [-1, 1] (not yet composited:
    the caller pastes the known pixels back)."""
    if plan.steps < 1 or not plan.lr > 0 or plan.prior_weight < 0 or not plan.sigma > 0:
        raise StudioError("Latent inpainting needs steps >= 1, lr > 0, sigma > 0, weight >= 0.")
    model = view.model
    device = model.device
    x0 = x0.to(device).float().expand(n, -1, -1, -1)
    hole = (mask.to(device) > 0.5).expand_as(x0)
    known = (~hole).float()
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
