"""Anomaly scores for any family: how unusual an image is to a trained model.

:func:`anomaly_scores` is the one call the engine makes. A family that implements
:class:`~studio.models.capabilities.ScoreFamily` (the VAEs: reconstruction error and negative
ELBO in one pass; diffusion: denoising error) computes its scores itself; every other family
gets them here, from what its capabilities promise:

* ``bits_per_dim``: the likelihood protocol's per-image bits/dim (flows);
* ``recon``: decode(encode(x)) against x, where the latent has an encoder (VQ-VAE); without
  one it falls back to projection;
* ``projection``: the latent found by the same optimisation latent inpainting runs
  (:func:`studio.models.latent_inpaint.optimise_latent`, every pixel known), started from the
  best of a few prior draws per image, a few dozen Adam steps: GANs.

Higher is always more unusual. Error maps and reconstructions are in [-1, 1] units turned to
the 0..1 pixel scale (a quarter of the squared error), as the explorer reports its errors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from studio.core.schema import Capability
from studio.models.base import GenerativeModel, eval_mode
from studio.models.capabilities import (
    BITS_PER_DIM,
    PROJECTION,
    RECONSTRUCTION,
    AnomalyScore,
    LatentFamily,
    LikelihoodFamily,
    ScoreBatch,
    ScoreFamily,
)
from studio.models.latent_inpaint import LatentPlan, LatentView, optimise_latent

PROJECTION_PLAN = LatentPlan(steps=60, lr=0.05, prior_weight=1.0, sigma=0.1)
PROJECTION_STARTS = 8  # prior draws per image; the closest one starts the optimisation


def score_options(model: GenerativeModel | type[GenerativeModel]) -> tuple[AnomalyScore, ...]:
    """What ``model`` offers, the default first (:meth:`GenerativeModel.score_options`)."""
    return model.score_options()


def anomaly_scores(
    model: GenerativeModel,
    images: Tensor,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ScoreBatch:
    """Every score ``model`` offers for ``images`` (N x C x R x R in [-1, 1]): the family's
    own where it implements :class:`ScoreFamily`, else the derived ones below. A ValueError
    when the model offers none."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    images = images.to(model.device).float()
    if isinstance(model, ScoreFamily):
        return model.anomaly_scores(images, labels, gen)
    options = score_options(model)
    if not options:
        raise ValueError(f"{model.info.display_name} cannot score images (no likelihood or latent)")
    out: dict[str, Tensor] = {}
    error_map: Tensor | None = None
    recon: Tensor | None = None
    for option in options:
        if option.name == BITS_PER_DIM.name and isinstance(model, LikelihoodFamily):
            with torch.no_grad(), eval_mode(model):
                out[option.name] = model.bits_per_dim(images, labels).float().cpu()
            continue
        if option.name in (RECONSTRUCTION.name, PROJECTION.name) and isinstance(
            model, LatentFamily
        ):
            encoder = option.name == RECONSTRUCTION.name and bool(model.latent_spec().encoder)
            rebuilt = (
                encoded(model, images, labels) if encoder else projected(model, images, labels, gen)
            )
            sq = squared_error(rebuilt, images)
            out[option.name] = sq.flatten(1).mean(1).cpu()
            if error_map is None:
                error_map, recon = sq.cpu(), rebuilt.float().cpu()
            continue
        raise ValueError(
            f"{model.info.display_name} declares the score {option.name!r} but does not compute it"
        )
    return ScoreBatch(out, error_map, recon)


def squared_error(rebuilt: Tensor, images: Tensor) -> Tensor:
    """Per-pixel squared error on the 0..1 scale, averaged over channels: N x H x W."""
    return ((rebuilt.float().clamp(-1, 1) - images.float()).square() / 4).mean(1)


@torch.no_grad()
def encoded(model: LatentFamily, images: Tensor, labels: Tensor | None) -> Tensor:
    """decode(encode(images)): the model's reconstruction through its encoder."""
    with eval_mode(model):  # type: ignore[arg-type]
        z = model.encode_latents(images, labels)
        return model.decode_latents(z, labels).float().clamp(-1, 1)


class _ClosestStart(LatentView):
    """Projection's start: for each image the closest of a few prior draws (one batched
    decode), which avoids most poor local minima (as the explorer's projection does)."""

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        n, k = x.shape[0], PROJECTION_STARTS
        z = self.model.prior_latents(n * k, gen, 1.0).to(x.device)
        labels = None if self.labels is None else self.labels.repeat_interleave(k)
        decoded = self.model.decode_latents(z, labels).float().clamp(-1, 1)
        err = (decoded - x.repeat_interleave(k, 0)).square().flatten(1).mean(1).view(n, k)
        best = err.argmin(1) + torch.arange(n, device=x.device) * k
        return z[best]


def projected(
    model: GenerativeModel,
    images: Tensor,
    labels: Tensor | None,
    generator: torch.Generator,
    plan: LatentPlan = PROJECTION_PLAN,
) -> Tensor:
    """The closest image the model can make to each of ``images``, by latent optimisation.
    A conditional model given no labels is projected once per class, keeping the closest."""
    classes = int(getattr(model.config, "num_classes", 0) or 0)
    if labels is not None or Capability.CONDITIONAL not in model.info.capabilities or not classes:
        return _project(model, images, labels, generator, plan)
    best: Tensor | None = None
    best_err: Tensor | None = None
    for y in range(classes):
        ys = torch.full((len(images),), y, dtype=torch.long, device=images.device)
        rebuilt = _project(model, images, ys, generator, plan)
        err = squared_error(rebuilt, images).flatten(1).mean(1)
        if best is None or best_err is None:
            best, best_err = rebuilt, err
        else:
            closer = err < best_err
            best = torch.where(closer[:, None, None, None], rebuilt, best)
            best_err = torch.minimum(err, best_err)
    assert best is not None
    return best


def _project(
    model: GenerativeModel,
    images: Tensor,
    labels: Tensor | None,
    generator: torch.Generator,
    plan: LatentPlan,
) -> Tensor:
    view = _ClosestStart(model, labels)
    known = torch.zeros(1, 1, *images.shape[2:], device=images.device)  # 0 = every pixel known
    steps = optimise_latent(view, images, known, len(images), generator, plan)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value.detach().float()
