"""The latent space every family with a latent shares: the class, its numbers, its math.

:mod:`studio.engine.latent` opens spaces (:func:`~studio.engine.latent.open_space` picks
:class:`~studio.engine.latent_diffusion.DiffusionLatentSpace` for an ODE latent);
:mod:`studio.engine.latent_directions` finds directions in them. This module imports
neither, so none of them imports another in a circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from studio.core.errors import StudioError
from studio.models.base import Capability, GenerativeModel
from studio.models.capabilities import DetailLatentFamily, LatentFamily, LatentSpec
from studio.models.pooling import MAX_FEATURES, pooled

# -- the latent space -------------------------------------------------------------------------


class LatentSpace:
    """A loaded model seen as a latent space. Puts the model in eval mode for good: give it a
    model of its own, not one that is training."""

    run_dir: Path | None = None  # the run folder, when opened from one

    handles_ode = False  # a subclass that decodes an ODE latent (DiffusionLatentSpace) sets it

    def __init__(self, model: GenerativeModel, label: int | None = None) -> None:
        info = model.info
        self.spec = _spec_of(model)
        if self.spec.ode and not self.handles_ode:
            raise TypeError(
                f"{info.display_name}'s latent is an ODE's start noise: open it with "
                "studio.engine.latent.open_space, which builds the space that decodes it"
            )
        self.model = model.eval()
        for p in model.parameters():
            p.requires_grad_(False)  # projection asks for gradients of z only
        config = model.config
        self.family, self.display_name, self.kind = info.key, info.display_name, info.kind
        self.resolution, self.channels = int(config.resolution), int(config.channels)
        self.device = model.device
        self.temperature = float(self.spec.temperature)
        self.latent_shape = tuple(self.spec.shape)
        self.encoder = self.spec.encoder or "projection (an optimisation)"
        # A layered latent (LatentSpec.layers > 1): one latent of layer_dim numbers per layer,
        # flattened layer by layer; a prior draw is the same latent at every layer.
        self.layers = max(1, int(self.spec.layers))
        self.layer_dim = math.prod(self.latent_shape)
        self.layer_groups = tuple(self.spec.layer_groups) if self.layers > 1 else ()
        self.dim = self.layers * self.layer_dim
        conditional = Capability.CONDITIONAL in info.capabilities
        self.num_classes = int(config.num_classes) if conditional else 0
        self._label: int | None = None
        self.label = label if label is not None else (0 if self.num_classes else None)
        self._z1 = torch.zeros(1, self.dim, device=self.device)  # the batch-of-one buffer

    # -- conditioning ------------------------------------------------------------------------
    @property
    def label(self) -> int | None:
        """The class every decode and encode uses (conditional models), else None."""
        return self._label

    @label.setter
    def label(self, value: int | None) -> None:
        if not self.num_classes:
            if value is not None:
                raise StudioError(f"{self.display_name} does not take a class.")
            self._label, self._labels1 = None, None
            return
        if value is None or not 0 <= int(value) < self.num_classes:
            raise StudioError(f"Pick a class from 0 to {self.num_classes - 1}.")
        self._label = int(value)
        self._labels1 = torch.full((1,), self._label, dtype=torch.long, device=self.device)

    @property
    def can_encode(self) -> bool:
        """Whether :meth:`encode` works directly (GANs need projection instead)."""
        return bool(self.spec.encoder)

    @property
    def discrete(self) -> bool:
        """The prior is over codes (VQ-VAE): prior draws come from the model itself."""
        return self.spec.discrete

    @property
    def ode(self) -> bool:
        """Decoding is an ODE run of many network passes (DDIM): jobs with progress."""
        return self.spec.ode

    def labels(self, n: int) -> Tensor | None:
        """``n`` copies of the current class on the device, or None (unconditional)."""
        if self._label is None:
            return None
        if n == 1:
            return self._labels1
        return torch.full((n,), self._label, dtype=torch.long, device=self.device)

    # -- sampling ----------------------------------------------------------------------------
    def prior_sample(self, n: int, seed: int, temperature: float | None = None) -> np.ndarray:
        """``n`` latents from the prior (N x dim float32); same seed, same latents."""
        if n < 1:
            raise StudioError("Ask for at least one latent.")
        t = self.temperature if temperature is None else float(temperature)
        gen = torch.Generator().manual_seed(int(seed))
        z = self.model.prior_latents(n, gen, t)  # type: ignore[attr-defined]
        z = z.reshape(n, 1, self.layer_dim).expand(-1, self.layers, -1)
        return z.reshape(n, self.dim).float().cpu().numpy()

    @property
    def layered(self) -> bool:
        """One latent per decoder layer (StyleGAN's w+): group sliders and layer mixing."""
        return self.layers > 1

    # -- decoding ----------------------------------------------------------------------------
    def decode_tensor(self, z: Tensor) -> Tensor:
        """N x dim latents (on the model's device) -> N x C x R x R images in [-1, 1].

        Differentiable in ``z`` (projection uses it); callers that need no gradients wrap it
        in ``torch.inference_mode()``."""
        if self.layers > 1:
            ws = z.reshape(z.shape[0], self.layers, self.layer_dim)
            return self.model.decode_layers(ws, self.labels(z.shape[0]))  # type: ignore[attr-defined]
        return self.model.decode_latents(z, self.labels(z.shape[0]))  # type: ignore[attr-defined]

    @property
    def resamples_details(self) -> bool:
        """The latent is the top of a hierarchy whose lower levels can be drawn anew
        (``LatentSpec.details_option``): :meth:`decode` takes a ``detail_seed``."""
        return self.spec.details_option is not None and isinstance(self.model, DetailLatentFamily)

    def decode_resampled(self, z: Tensor, seed: int) -> Tensor:
        """As :meth:`decode_tensor`, with the levels below the latent drawn from the prior with
        noise from ``seed`` (same seed, same images)."""
        if not self.resamples_details:
            raise StudioError(f"{self.display_name} has no lower levels to draw anew.")
        gen = torch.Generator().manual_seed(int(seed))
        return self.model.decode_latents_resampled(z, self.labels(len(z)), gen)  # type: ignore[attr-defined]

    def decode(self, z: np.ndarray | Tensor, detail_seed: int | None = None) -> np.ndarray:
        """Latents -> uint8 RGB images: ``dim`` -> H x W x 3, ``N x dim`` -> N x H x W x 3.
        ``detail_seed``: draw the levels below the latent from it (:meth:`decode_resampled`);
        None decodes them the fixed way."""
        single = z.ndim == 1
        zt = torch.as_tensor(z, dtype=torch.float32).reshape(-1, self.dim)
        with torch.inference_mode():
            if len(zt) == 1:
                self._z1.copy_(zt)
                zt = self._z1
            else:
                zt = zt.to(self.device)
            if detail_seed is None:
                images = to_uint8(self.decode_tensor(zt))
            else:
                images = to_uint8(self.decode_resampled(zt, detail_seed))
        return images[0] if single else images

    # -- encoding ----------------------------------------------------------------------------
    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """Any H x W x 3 (or H x W) uint8 image -> the model's R x R x 3 input: the centre
        square, resized; grey for a one-channel model."""
        from PIL import Image

        from studio.engine.images import fit_square

        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
            raise StudioError("Expected an 8-bit image (H x W x 3).")
        img = Image.fromarray(arr[..., :3] if arr.ndim == 3 else arr).convert("RGB")
        fitted = fit_square(img, self.resolution)
        if self.channels == 1:
            grey = np.asarray(Image.fromarray(fitted).convert("L"))
            fitted = np.repeat(grey[..., None], 3, axis=2)
        return fitted

    def image_tensor(self, image: np.ndarray) -> Tensor:
        """A prepared (R x R x 3 uint8) image -> 1 x C x R x R in [-1, 1] on the device."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1
        if self.channels == 1:
            x = x[:1]
        return x[None].to(self.device)

    def encode(self, image: np.ndarray) -> np.ndarray:
        """An image's latent (``dim`` float32): the VAE's posterior mean, the flow's exact
        inverse, the VQ-VAE's code grid. GANs have no encoder: use ``project_job``."""
        x = self.image_tensor(self.prepare_image(image))
        with torch.inference_mode():
            return self.encode_tensor(x)[0].float().cpu().numpy()

    def encode_tensor(self, images: Tensor) -> Tensor:
        """N x C x R x R images in [-1, 1] (on the device) -> N x dim latents, in a batch."""
        if not self.can_encode:
            raise StudioError(
                f"{self.display_name} has no encoder: its latent is found by projection "
                "(an optimisation that takes a few seconds)."
            )
        z = self.model.encode_latents(images, self.labels(len(images)))  # type: ignore[attr-defined]
        return self.spread(z.reshape(len(images), -1))

    def spread(self, z: Tensor) -> Tensor:
        """N x layer_dim latents -> the same latent at every layer (N x dim)."""
        if self.layers == 1:
            return z
        return z[:, None, :].expand(-1, self.layers, -1).reshape(len(z), self.dim)

    def direction_features(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(latents analysed, features) for principal directions from prior draws ``z``.
        A layered space analyses one layer's latent (every layer of a prior draw holds the
        same): the latents returned are ``layer_dim`` wide."""
        if self.layers > 1:
            z = z.reshape(len(z), self.layers, self.layer_dim)[:, 0]
        return self.model.direction_features(z, self.labels(len(z)))  # type: ignore[attr-defined]


def _spec_of(model: GenerativeModel) -> LatentSpec:
    """The model's latent description; a StudioError for a model without a latent."""
    info = model.info
    if Capability.LATENT not in info.capabilities or not isinstance(model, LatentFamily):
        note = type(model).latent_note
        if note:
            raise StudioError(f"{info.display_name} {note}")
        raise StudioError(f"{info.display_name} has no latent space to explore.")
    return model.latent_spec()


def to_uint8(images: Tensor) -> np.ndarray:
    """N x C x H x W images in [-1, 1] -> N x H x W x 3 uint8 on the CPU (grey -> RGB)."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def image_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error between two uint8 images, on the 0..1 scale."""
    diff = a.astype(np.float64) / 255 - b.astype(np.float64) / 255
    return float(np.mean(diff * diff))


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for an MSE on the 0..1 scale (inf when exact)."""
    return math.inf if mse <= 0 else -10 * math.log10(mse)


# -- moving between latents ---------------------------------------------------------------------


def interpolate(z0: np.ndarray, z1: np.ndarray, n: int, mode: str = "linear") -> np.ndarray:
    """``n`` latents from ``z0`` to ``z1`` (N x dim), both ends included exactly.

    ``spherical`` (slerp) follows the great circle, and so keeps the norm a Gaussian latent
    typically has; a straight line through the middle passes near the origin, where the
    prior's samples never are, and mid-way images look washed out.
    """
    if n < 2:
        raise StudioError("An interpolation needs at least two frames.")
    if mode not in ("linear", "spherical"):
        raise StudioError(f"Interpolation is linear or spherical, not {mode!r}.")
    a = np.asarray(z0, np.float64).reshape(-1)
    b = np.asarray(z1, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise StudioError("Both ends of an interpolation must come from the same model.")
    t = np.linspace(0.0, 1.0, n)[:, None]
    out = (1 - t) * a + t * b
    if mode == "spherical":
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na > 0 and nb > 0:
            cos = np.clip(np.dot(a / na, b / nb), -1.0, 1.0)
            omega = math.acos(cos)
            if math.sin(omega) > 1e-6:  # otherwise the ends are (anti)parallel: stay linear
                s = math.sin(omega)
                out = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / s
    out = out.astype(np.float32)
    out[0], out[-1] = np.asarray(z0, np.float32).reshape(-1), np.asarray(z1, np.float32).reshape(-1)
    return out


def arithmetic(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Latent arithmetic ``a - b + c``: "a, without what b has, with what c has"."""
    a, b, c = (np.asarray(v, np.float32).reshape(-1) for v in (a, b, c))
    if not a.shape == b.shape == c.shape:
        raise StudioError("Latent arithmetic needs three latents from the same model.")
    return a - b + c


def mix_layers(first: np.ndarray, second: np.ndarray, crossover: int, layers: int) -> np.ndarray:
    """A layered latent whose layers below ``crossover`` come from ``first`` and the rest from
    ``second``: 0 is ``second``, ``layers`` is ``first``; a low crossover takes only the
    coarse layers (layout) from ``first``, the fine ones (colour, texture) from ``second``."""
    a, b = np.asarray(first, np.float32), np.asarray(second, np.float32)
    if a.size != b.size or a.size % layers:
        raise StudioError("Mixing needs two latents from the same model.")
    a, b = a.reshape(layers, -1), b.reshape(layers, -1)
    if not 0 <= int(crossover) <= layers:
        raise StudioError(f"The crossover layer runs from 0 to {layers}, not {crossover}.")
    out = b.copy()
    out[: int(crossover)] = a[: int(crossover)]
    return out.reshape(-1)


# -- directions: their record and the linear algebra behind them ----------------------------


@dataclass(frozen=True)
class Directions:
    """``k`` orthonormal directions (rows of ``vectors``, k x dim) and the spread of the
    analysed latents along each (``std``). ``method`` says in words how they were found."""

    vectors: np.ndarray
    std: np.ndarray
    names: tuple[str, ...]
    method: str
    explained: np.ndarray | None = None  # share of the analysed features' variance, per row

    @property
    def k(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def offset(self, values: np.ndarray) -> np.ndarray:
        """The latent offset for slider ``values`` given in standard deviations."""
        values = np.asarray(values, np.float32)
        return (values * self.std.astype(np.float32)) @ self.vectors.astype(np.float32)


def _pooled(maps: torch.Tensor) -> np.ndarray:
    """N x C x H x W maps, average-pooled to at most MAX_FEATURES numbers each, flattened."""
    return pooled(maps, MAX_FEATURES).cpu().numpy()


def _pca(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coordinates N x k, components k x F, explained variance share k) of ``features``."""
    small = min(features.shape) <= 1024
    x = torch.from_numpy(features).to(torch.float64 if small else torch.float32)
    x = x - x.mean(0)
    total = float(x.double().square().sum()) or 1.0
    if small:
        _, s, vt = torch.linalg.svd(x, full_matrices=False)
        v = vt[:k].T
    else:  # randomised, for thousands of features: the top few are all we need
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, s, v = torch.pca_lowrank(x, q=min(k + 10, *x.shape), center=False, niter=6)
        v = v[:, :k]
    coords = x @ v
    share = (s[:k].double().square() / total).numpy()
    return coords.double().numpy(), v.T.double().numpy(), share


def _orthonormal_rows(u: np.ndarray) -> np.ndarray:
    """Gram-Schmidt in order (by QR): row i stays in the span of rows 0..i, same sign."""
    q, _ = np.linalg.qr(u.T)
    q = q.T[: len(u)]
    signs = np.sign(np.sum(q * u, axis=1))
    signs[signs == 0] = 1
    return q * signs[:, None]
