"""Directions to move along in a latent space: principal directions, raw dimensions, and
attribute directions fitted from samples a user marked.

How the principal directions are found depends on the family, because "PCA of the prior" is
empty for most of them (the prior is an isotropic Gaussian: every direction has variance 1).
The family says which features to analyse (``direction_features`` of the latent protocol),
whether they are mapped back to z by regression, and how it is described in words
(``LatentSpec``); for the built-in families:

* **VAE / VQ-VAE**: PCA of the encoder's latents for ``n_samples`` images, by default the
  model's own samples (prior -> decode -> encode; the posterior means, or code grids). The
  encoder never uses collapsed dimensions, so they drop out, and the top directions are the
  ones the decoder actually renders. With ``images`` (a user's pictures) those are encoded
  instead.
* **GAN** (GANSpace, Härkönen et al. 2020): PCA of the generator's first-block activations
  (after its batch norm and ReLU) over prior samples, mapped back to z by linear regression of z
  on the principal-component coordinates. Directions found this way change the picture most.
* **Flow**: the same regression trick with the decoded pixels as the features (a flow's z is
  as isotropic as its prior). With ``images`` the flow's exact encodings are not isotropic, and
  PCA runs on them directly.
* **Diffusion** (x_T of deterministic DDIM): PCA of the DDIM-inverted noise of the run's
  training images (:func:`studio.engine.latent_diffusion.diffusion_directions_job`).

The regression directions are orthonormalised in order (QR), so every set is orthonormal; each
direction comes with the standard deviation of the analysed latents along it, and sliders move
in those units.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.engine.latent_base import (  # Directions re-exported: it was defined here
    Directions,
    LatentSpace,
    _orthonormal_rows,
    _pca,
)

BATCH = 100  # latents per decode/encode batch: bounded memory, one progress report each


def default_samples(space: LatentSpace) -> int:
    """How many latents :func:`directions_job` analyses for ``space`` by default (the
    family's ``LatentSpec.analysed``: a GAN needs only its first layer per sample, VAEs and
    flows decode whole images and ten directions are stable from a few hundred)."""
    return int(space.spec.analysed)


def _batches(n: int) -> list[slice]:
    return [slice(i, min(n, i + BATCH)) for i in range(0, n, BATCH)]


def _features(
    space: LatentSpace, z: np.ndarray, images: np.ndarray | None
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """(latents, features) to analyse, computed in batches with a progress report each."""
    n = len(z) if images is None else len(images)
    zs, feats = [], []
    for i, part in enumerate(_batches(n), start=1):
        yield Progress("directions", i, len(_batches(n)), f"Analysing {part.stop}/{n} latents")
        with torch.inference_mode():
            if images is not None:
                x = torch.cat([space.image_tensor(space.prepare_image(i)) for i in images[part]])
                zt = space.encode_tensor(x)[:, : space.layer_dim]  # one layer's (all alike)
                zb = fb = zt.float().cpu().numpy()
            else:
                zt, ft = space.direction_features(torch.from_numpy(z[part]).to(space.device))
                zb, fb = zt.float().cpu().numpy(), ft.float().cpu().numpy()
        zs.append(zb)
        feats.append(fb)
    return np.concatenate(zs), np.concatenate(feats)


def directions_job(
    space: LatentSpace,
    n_samples: int | None = None,
    k: int = 10,
    seed: int = 0,
    images: np.ndarray | None = None,
) -> Generator[Progress, None, Directions]:
    """Principal directions of ``space`` (see the module notes for the method per family),
    as a job: one progress report per batch, cancellable between batches. ``n_samples``
    None: :func:`default_samples`."""
    if space.ode:  # its own method (DDIM-inverted training images: see latent_diffusion)
        return (yield from space.directions_job(n_samples, k, seed, images))
    k = max(1, min(int(k), space.layer_dim))
    n_samples = default_samples(space) if n_samples is None else int(n_samples)
    n = len(images) if images is not None else n_samples
    if n < max(2 * k, 8):
        raise StudioError(f"Finding {k} directions needs at least {max(2 * k, 8)} latents.")
    if images is not None and not space.can_encode:
        images = None  # a GAN has no encoder; fall back to its own samples
    z = space.prior_sample(n, seed) if images is None else None
    zs, feats = yield from _features(space, z, images)
    centred = (zs - zs.mean(0, dtype=np.float64)).astype(np.float32)  # float32: flows are big
    del zs
    coords, comps, explained = _pca(feats, k, seed)
    if images is None and space.spec.regress:
        # GANSpace: z ~ coords @ U, solved by least squares through the k x k normal
        # equations (the latents can be thousands wide); U's rows are the directions.
        gram = coords.T @ coords + 1e-9 * np.eye(len(coords.T))
        u = np.linalg.solve(gram, (coords.astype(np.float32).T @ centred).astype(np.float64))
        vectors = _orthonormal_rows(u)
    else:
        vectors = comps[:k]  # PCA ran on the latents themselves: already orthonormal
    std = np.maximum((centred @ vectors.T.astype(np.float32)).std(0), 1e-6)
    if space.layered:  # found on one layer's latent: the same move at every layer
        vectors, std = _every_layer(vectors, std, space.layers)
    source = "your images" if images is not None else "the model's own samples"
    template = space.spec.directions
    if images is not None and space.spec.image_directions:
        template = space.spec.image_directions
    method = template.format(n=n, source=source)
    names = tuple(f"PC{i + 1}" for i in range(len(vectors)))
    return Directions(vectors.astype(np.float32), std.astype(np.float32), names, method, explained)


def _every_layer(
    vectors: np.ndarray, std: np.ndarray, layers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Directions of one layer's latent (k x layer_dim) as unit directions of the layered
    latent (the same at every layer), with the spread scaled so a slider moves each layer's
    latent as far as before."""
    scale = np.sqrt(layers)
    return np.tile(vectors, (1, layers)) / scale, std * scale


def pca_directions(
    space: LatentSpace,
    n_samples: int | None = None,
    k: int = 10,
    seed: int = 0,
    images: np.ndarray | None = None,
) -> Directions:
    """:func:`directions_job` run to its end on the calling thread."""
    job = directions_job(space, n_samples, k, seed, images)
    while True:
        try:
            next(job)
        except StopIteration as done:
            return done.value


def raw_directions(
    space: LatentSpace, k: int | None = None, start: int = 0, seed: int = 0
) -> Directions:
    """The latent's own coordinates ``start .. start + k`` as directions (unit vectors), with
    the prior's spread along each. Meaningful for GAN and VAE latents; a flow's or VQ-VAE's
    raw coordinates are single pixels or code entries."""
    width = space.layer_dim  # a layered latent: a coordinate moves at every layer
    k = width - start if k is None else min(int(k), width - start)
    if k < 1:
        raise StudioError(f"The latent has only {width} dimensions.")
    vectors = np.zeros((k, width), np.float32)
    vectors[np.arange(k), np.arange(start, start + k)] = 1.0
    prior = space.prior_sample(256, seed)[:, start : start + k]
    std = np.maximum(prior.std(0), 1e-6).astype(np.float32)
    if space.layered:
        vectors, std = _every_layer(vectors, std, space.layers)
    names = tuple(f"z{start + i}" for i in range(k))
    return Directions(
        vectors.astype(np.float32),
        std.astype(np.float32),
        names,
        "the latent's raw dimensions (prior spread)",
    )


# -- attribute directions from marked samples ---------------------------------------------------


@dataclass(frozen=True)
class AttributeFit:
    """A fitted attribute: unit ``direction`` (positives lie on its + side), ``bias`` of the
    classifier along it, training ``accuracy``, and ``std`` of the marked latents along it."""

    direction: np.ndarray
    bias: float
    accuracy: float
    std: float
    n_pos: int
    n_neg: int


def fit_attribute_direction(
    z_pos: np.ndarray, z_neg: np.ndarray, l2: float = 1e-2, max_iter: int = 200
) -> AttributeFit:
    """A linear classifier of "has the attribute" (``z_pos``) against "has not" (``z_neg``):
    logistic regression with an L2 penalty, classes weighted equally. Its unit normal is the
    attribute direction (as in InterFaceGAN); moving along it adds the attribute."""
    if len(z_pos) < 1 or len(z_neg) < 1:
        raise StudioError("Mark at least one sample with the attribute (+) and one without (−).")
    pos = np.asarray(z_pos, np.float64).reshape(len(z_pos), -1)
    neg = np.asarray(z_neg, np.float64).reshape(len(z_neg), -1)
    if pos.shape[1] != neg.shape[1]:
        raise StudioError("The marked latents come from different models.")
    x = torch.from_numpy(np.concatenate([pos, neg]))
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).double()
    weight = torch.where(y > 0, 0.5 / len(pos), 0.5 / len(neg)).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ w + b
        loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * weight).sum()
        loss = loss + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    wn = w.detach().numpy()
    norm = float(np.linalg.norm(wn))
    bias = float(b.detach())
    if not np.isfinite(norm) or norm < 1e-9:
        # Nothing to learn (or a degenerate fit): the difference of the class means is the
        # next best guess at the direction.
        wn = pos.mean(0) - neg.mean(0)
        norm = float(np.linalg.norm(wn))
        if norm < 1e-9:
            raise StudioError("The samples marked + and − cannot be told apart.")
        bias = -float(np.dot(wn, (pos.mean(0) + neg.mean(0)) / 2))
    direction = wn / norm
    scores = x.numpy() @ wn + bias
    accuracy = float(np.mean((scores > 0) == (y.numpy() > 0)))
    proj = x.numpy() @ direction
    std = float(max(proj.std(), 1e-3)) if len(proj) > 1 else 1.0
    return AttributeFit(
        direction.astype(np.float32), bias / norm, accuracy, std, len(pos), len(neg)
    )
