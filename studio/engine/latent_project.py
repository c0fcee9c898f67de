"""Projection: find the latent whose decoded image best matches a given image.

A GAN has no encoder, so its latent for a picture is found by optimisation, as latent
inpainting does (:mod:`studio.models.latent_inpaint`), with every pixel known:

    loss(z) = mean (decode(z) - x)^2 + prior_weight * mean(z^2) / 2

The prior term keeps z where the generator was trained (a z far out of the prior's typical
set can match the picture and still edit badly). The start is the best of ``candidates``
prior samples, which avoids most poor local minima for the price of one batched decode. Adam
on z only; the model's weights get no gradients. Works for any latent space (a VAE's projection
refines its encoder's guess), though the explorer uses it for GANs.

A layered space (one latent per decoder layer, StyleGAN's w+) projects either into one latent
shared by every layer (``per_layer=False``, w: the images the model draws) or into one per layer
(``per_layer=True``, w+: more freedom, so a closer match, though edits stray sooner from what
the model learnt). The result is a layered latent either way.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.engine.latent_base import LatentSpace, image_error, psnr, to_uint8

PREVIEWS = 20  # about this many preview images per projection


@dataclass(frozen=True)
class Projection:
    """The latent found (``z``), its decoded ``reconstruction`` (R x R x 3 uint8), the
    ``target`` it was matched to (the prepared input), and the error before and after, as
    mean squared error on the 0..1 pixel scale."""

    z: np.ndarray
    reconstruction: np.ndarray
    target: np.ndarray
    error: float
    initial_error: float
    steps: int

    @property
    def psnr(self) -> float:
        return psnr(self.error)


def project_job(
    space: LatentSpace,
    image: np.ndarray,
    steps: int = 300,
    seed: int = 0,
    lr: float = 0.05,
    prior_weight: float = 1e-3,
    candidates: int = 16,
    per_layer: bool = False,
) -> Generator[Progress, None, Projection]:
    """Project ``image`` (any H x W x 3 uint8) into ``space``. One progress report per Adam
    step with the error so far (``metrics["mse"]``) and, now and then, the current
    reconstruction (``image``); cancellable at every step."""
    if steps < 1 or not lr > 0 or prior_weight < 0 or candidates < 1:
        raise StudioError("Projection needs steps >= 1, lr > 0, candidates >= 1, weight >= 0.")
    target = space.prepare_image(image)
    x = space.image_tensor(target)
    yield Progress("project", 0, steps, "Choosing a starting point")

    starts = torch.from_numpy(space.prior_sample(candidates, seed)).to(space.device)
    with torch.no_grad():  # not inference_mode: z must stay usable by autograd
        errors = (space.decode_tensor(starts).clamp(-1, 1) - x).square().flatten(1).mean(1)
        best = int(errors.argmin())
        initial = image_error(to_uint8(space.decode_tensor(starts[best : best + 1]))[0], target)
    start = starts[best : best + 1]
    shared = space.layered and not per_layer  # optimise one layer's latent, used at all
    z = (start[:, : space.layer_dim] if shared else start).clone().requires_grad_(True)
    latent = (lambda: space.spread(z)) if shared else (lambda: z)
    opt = torch.optim.Adam([z], lr=lr)
    # Step the learning rate down over the last quarter: the last steps polish, not explore.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, max(0.05, (steps - i) / max(1.0, 0.25 * steps)))
    )
    every = max(1, steps // PREVIEWS)
    for step in range(1, steps + 1):
        with torch.enable_grad():
            images = space.decode_tensor(latent())
            mse = (images - x).square().mean()
            loss = mse + prior_weight * 0.5 * z.square().mean()
            (grad,) = torch.autograd.grad(loss, [z])
        z.grad = grad
        opt.step()
        sched.step()
        preview = None
        if step % every == 0 or step == steps:
            preview = to_uint8(images.detach())[0]
        # mse is in [-1, 1] units; a quarter of it is the 0..1-scale error users read.
        metrics = {"mse": float(mse.detach()) / 4}
        yield Progress("project", step, steps, "Projecting", metrics, preview)

    with torch.no_grad():
        found = latent().detach()
        final = to_uint8(space.decode_tensor(found))[0]
    return Projection(
        z=found.reshape(-1).float().cpu().numpy(),
        reconstruction=final,
        target=target,
        error=image_error(final, target),
        initial_error=initial,
        steps=steps,
    )
