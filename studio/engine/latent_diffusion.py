"""ODE latents in the explorer (a DDPM run): the latent is DDIM's starting noise x_T.

A family whose ``LatentSpec.ode`` is set implements
:class:`studio.models.capabilities.OdeLatentFamily` (path, decode and inversion step by step);
this module drives it with progress and finds its directions. The notes below are for DDPM's.

Deterministic DDIM (eta = 0) turns a noise tensor x_T (C x R x R numbers, drawn from N(0, I))
into an image, always the same image for the same x_T, so x_T works as a latent:

* **decode(z)** runs ``steps`` DDIM steps of the run's EMA UNet from z (batched; with
  classifier-free guidance for a class-conditional model). It costs ``steps`` network passes
  (twice that with guidance), far more than a GAN's one, so the explorer defaults to
  :data:`DEFAULT_STEPS` (20) and lets the user trade speed for fidelity; its latest-wins
  decoding already keeps a fast drag from queueing work.
* **encode(image)** is DDIM inversion (:mod:`studio.models.diffusion.inversion`): the same
  steps run backward from the image to its noise, with :data:`DEFAULT_REFINE` fixed-point
  refinements per step so that decoding the result with the same steps gives the image back.
  Change the step count and an encoded latent decodes a little differently (it was inverted
  for the old count). :func:`invert_job` is the same as a job, with progress and cancel.
* **Sliders**: PCA of sampled x_T finds nothing (the prior is isotropic: every direction has
  variance 1), and x_T's raw coordinates are single noise pixels. The principal directions are
  the PCA of the *inverted* noise of the run's own training images, where the images' common
  structure survives (:func:`diffusion_directions_job`); when the dataset is gone, the pixels
  of the model's own samples are analysed and mapped back to x_T by regression, as for flows.
* **Interpolation** between two x_T is spherical by default (slerp keeps the norm a Gaussian
  sample has; the straight line's middle is too short a vector and decodes to a washed-out
  blur). Arithmetic and attribute sliders work on x_T like on any latent.

The DDIM steps here do not clip the predicted clean image along the way (a clip cannot be
inverted), so a decode can differ slightly from the Sample workspace's DDIM (which clips).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.engine.latent_base import (
    Directions,
    LatentSpace,
    _orthonormal_rows,
    _pca,
    _pooled,
    image_error,
    psnr,
    to_uint8,
)
from studio.models.base import GenerativeModel
from studio.models.capabilities import OdeLatentFamily

DEFAULT_STEPS = 20  # DDIM steps per decode and inversion (the Sample workspace uses 50)
DEFAULT_REFINE = 3  # fixed-point refinements per inversion step
BATCH = 64  # latents per batched decode or inversion: bounded memory
DEFAULT_ANALYSED = 128  # training images inverted to find the principal directions
FALLBACK_SAMPLES = 96  # model samples decoded when the training images cannot be read
# Ends the method text (the workspace shows "Found by <method>.").
METHOD_NOTE = "; PCA of sampled noise would find nothing: it varies alike in every direction"


class DiffusionLatentSpace(LatentSpace):
    """A DDPM run seen through deterministic DDIM: z is the flattened x_T (see the module
    notes). ``steps`` and ``refine`` may be changed at any time; ``guidance`` is the model's
    default for a class-conditional model (decode and inversion use the same one)."""

    handles_ode = True

    def __init__(
        self,
        model: GenerativeModel,
        label: int | None = None,
        steps: int = DEFAULT_STEPS,
        refine: int = DEFAULT_REFINE,
    ) -> None:
        super().__init__(model, label)
        if not isinstance(model, OdeLatentFamily):
            raise StudioError(f"{model.info.display_name} has no ODE latent to explore.")
        self.ode_model: OdeLatentFamily = model
        self.guidance = model.ode_guidance()
        self.refine = int(refine)
        self._steps = 0
        self.steps = steps

    def directions_job(
        self, n_samples: int | None, k: int, seed: int, images: np.ndarray | None
    ) -> Generator[Progress, None, Directions]:
        """Principal directions of x_T (see :func:`diffusion_directions_job`)."""
        return diffusion_directions_job(self, n_samples, k, seed, images)

    # -- settings ----------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """DDIM steps per decode and per inversion."""
        return self._steps

    @steps.setter
    def steps(self, value: int) -> None:
        value = int(value)
        limit = self.ode_model.ode_max_steps()
        if not 1 <= value <= limit:
            raise StudioError(f"Pick between 1 and {limit} DDIM steps.")
        self._path = self.ode_model.ode_path(value)
        self._steps = value

    @property
    def encoder(self) -> str:  # type: ignore[override]  # a plain attribute elsewhere
        """How an image's latent is found, in words (follows the settings)."""
        base = self.spec.encoder
        return f"{base} ({self.steps} steps, up to {self.refine} refinements each)"

    @encoder.setter
    def encoder(self, value: str) -> None:
        pass  # LatentSpace.__init__ sets it; here it follows the step count

    def _labels_for(self, n: int, labels: Tensor | np.ndarray | None) -> Tensor | None:
        if not self.num_classes:
            return None
        if labels is None:
            return self.labels(n)
        return torch.as_tensor(labels, dtype=torch.long).reshape(-1).to(self.device)

    # -- decode and encode, step by step -------------------------------------------------------
    def decode_iter(
        self, z: Tensor, labels: Tensor | np.ndarray | None = None
    ) -> Generator[int, None, Tensor]:
        """N x dim latents on the device -> N x C x R x R images in [-1, 1], one yield (the
        steps done) per network pass. Call under ``torch.inference_mode()``."""
        n = z.shape[0]
        x = z.reshape(n, *self.latent_shape).float()
        lab = self._labels_for(n, labels)
        return (yield from self.ode_model.ode_decode_iter(x, lab, self._path, self.guidance))

    def invert_iter(
        self,
        images: Tensor,
        labels: Tensor | np.ndarray | None = None,
        refine: int | None = None,
    ) -> Generator[int, None, Tensor]:
        """N x C x R x R images in [-1, 1] on the device -> N x dim noise, one yield (the
        network passes so far) per pass. Call under ``torch.inference_mode()``."""
        n = images.shape[0]
        lab = self._labels_for(n, labels)
        refine = self.refine if refine is None else int(refine)
        z = yield from self.ode_model.ode_invert_iter(
            images.float(), lab, self._path, self.guidance, refine
        )
        return z.reshape(n, -1)

    def passes(self, refine: int | None = None) -> tuple[int, int]:
        """Network passes per inversion (at most: refining stops early when it stops
        helping) and per decode."""
        refine = self.refine if refine is None else refine
        return self.steps * (refine + 1), self.steps

    # -- the LatentSpace interface -----------------------------------------------------------
    def decode_tensor(self, z: Tensor) -> Tensor:
        parts = [_drain(self.decode_iter(z[i : i + BATCH])) for i in range(0, len(z), BATCH)]
        return torch.cat(parts)

    def encode_tensor(self, images: Tensor) -> Tensor:
        return torch.cat(
            [_drain(self.invert_iter(images[i : i + BATCH])) for i in range(0, len(images), BATCH)]
        )

    # -- images the principal directions are found from ---------------------------------------
    def training_images(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """Up to ``n`` of the run's training images (N x R x R x 3 uint8) and their class
        indices (or None), a seeded choice; raises StudioError when they cannot be read."""
        from studio.core.paths import cache_dir
        from studio.engine.data import load_dataset, scan_folder
        from studio.engine.runs import RunFolder

        if self.run_dir is None:
            raise StudioError("No run folder: its training images are unknown.")
        try:
            train = RunFolder(self.run_dir).train_config()
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StudioError(f"The run's settings could not be read ({err}).") from None
        if not train.data or not Path(train.data).is_dir():
            raise StudioError(f"The run's training images are gone ({train.data or 'no path'}).")
        scan = _drain(scan_folder(Path(train.data)))
        scan.require_usable()
        data = _drain(load_dataset(scan, self.resolution, cache_dir=cache_dir()))
        pick = np.random.default_rng(seed).permutation(len(data))[:n]
        pick.sort()
        labels = None
        if self.num_classes and data.labels is not None:
            labels = data.labels[pick] % self.num_classes
        return data.images[pick], labels


def _drain(gen: Generator[Any, None, Any]) -> Any:
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


# -- jobs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inversion:
    """An image's DDIM noise ``z``, its ``reconstruction`` (decoded from z with the same
    steps), the ``target`` it was inverted from (R x R x 3 uint8) and the error (MSE on the
    0..1 scale)."""

    z: np.ndarray
    reconstruction: np.ndarray
    target: np.ndarray
    error: float
    method: str

    @property
    def psnr(self) -> float:
        return psnr(self.error)


def invert_job(
    space: DiffusionLatentSpace, image: np.ndarray
) -> Generator[Progress, None, Inversion]:
    """DDIM-invert ``image`` (any H x W x 3 uint8), then decode the noise to show how close it
    comes: one progress report per network pass (cancellable at each), the reconstruction as
    the last report's image."""
    target = space.prepare_image(image)
    x = space.image_tensor(target)
    invert_passes, decode_passes = space.passes()
    total = invert_passes + decode_passes
    yield Progress("invert", 0, total, f"Inverting with DDIM ({space.steps} steps)")
    with torch.inference_mode():
        gen = space.invert_iter(x)
        while True:
            try:
                done = next(gen)
            except StopIteration as stop:
                z = stop.value
                break
            msg = f"Inverting: network pass {done} of up to {invert_passes}"
            yield Progress("invert", done, total, msg)
        gen = space.decode_iter(z)
        while True:
            try:
                done = next(gen)
            except StopIteration as stop:
                images = stop.value
                break
            msg = f"Reconstructing: step {done} of {decode_passes}"
            yield Progress("invert", invert_passes + done, total, msg)
    recon = to_uint8(images)[0]
    error = image_error(recon, target)
    yield Progress("invert", total, total, "Inverted", {"mse": error}, recon)
    return Inversion(z[0].float().cpu().numpy(), recon, target, error, space.encoder)


def diffusion_directions_job(
    space: DiffusionLatentSpace,
    n_samples: int | None = None,
    k: int = 10,
    seed: int = 0,
    images: np.ndarray | None = None,
) -> Generator[Progress, None, Any]:
    """Principal directions of x_T (a latent_directions.Directions): PCA of the DDIM-inverted
    noise of ``images``, by default of the run's own training images; without them, PCA of
    the pixels of decoded samples mapped back to x_T by regression. One report per network
    pass; cancellable at each."""
    k = max(1, min(int(k), space.dim))
    n = DEFAULT_ANALYSED if n_samples is None else int(n_samples)
    labels = None
    source = "your images"
    note = ""
    if images is None:
        yield Progress("directions", 0, None, "Reading the run's training images")
        try:
            images, labels = space.training_images(n, seed)
            source = "the run's training images"
        except StudioError as err:
            images, note = None, f" ({str(err).rstrip('.')})"
    if images is not None and len(images) < max(2 * k, 8):
        note = f" (only {len(images)} training images)"
        images = None
    if images is not None:
        zs = []
        parts = range(0, len(images), BATCH)
        passes = space.steps * len(parts)
        for b, start in enumerate(parts):
            batch = images[start : start + BATCH]
            x = torch.cat([space.image_tensor(space.prepare_image(im)) for im in batch])
            lab = None if labels is None else labels[start : start + BATCH]
            with torch.inference_mode():
                gen = space.invert_iter(x, lab, refine=0)  # plain inversion: statistics only
                while True:
                    try:
                        done = next(gen)
                    except StopIteration as stop:
                        zs.append(stop.value.float().cpu().numpy())
                        break
                    step = b * space.steps + done
                    msg = f"Inverting {len(images)} images: {step}/{passes}"
                    yield Progress("directions", step, passes, msg)
        z = np.concatenate(zs)
        centred = (z - z.mean(0, dtype=np.float64)).astype(np.float32)
        _, comps, explained = _pca(centred, k, seed)
        vectors = comps[:k]
        method = (
            f"PCA of the DDIM-inverted noise of {len(z)} of {source} ({space.steps} steps)"
            + METHOD_NOTE
        )
    else:
        n = FALLBACK_SAMPLES if n_samples is None else n
        z = space.prior_sample(n, seed)
        feats = []
        parts = range(0, n, BATCH)
        passes = space.steps * len(parts)
        for b, start in enumerate(parts):
            with torch.inference_mode():
                gen = space.decode_iter(torch.from_numpy(z[start : start + BATCH]).to(space.device))
                while True:
                    try:
                        done = next(gen)
                    except StopIteration as stop:
                        feats.append(_pooled(stop.value))
                        break
                    step = b * space.steps + done
                    yield Progress(
                        "directions", step, passes, f"Sampling {n} images: {step}/{passes}"
                    )
        coords, _, explained = _pca(np.concatenate(feats), k, seed)
        centred = (z - z.mean(0, dtype=np.float64)).astype(np.float32)
        gram = coords.T @ coords + 1e-9 * np.eye(len(coords.T))
        u = np.linalg.solve(gram, (coords.astype(np.float32).T @ centred).astype(np.float64))
        vectors = _orthonormal_rows(u)
        method = (
            f"PCA of the pixels of {n} decoded samples, mapped back to the noise by linear "
            f"regression, as the training images could not be read{note}" + METHOD_NOTE
        )
    std = np.maximum((centred @ vectors.T.astype(np.float32)).std(0), 1e-6)
    names = tuple(f"PC{i + 1}" for i in range(len(vectors)))
    return Directions(vectors.astype(np.float32), std.astype(np.float32), names, method, explained)
