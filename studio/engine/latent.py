"""Latent spaces of the studio's own models: sample, decode, encode, interpolate.

:class:`LatentSpace` puts one face on every family with the ``LATENT`` capability. A latent is
always a flat float32 numpy vector of :attr:`LatentSpace.dim` numbers, whatever its shape inside
the model, so sliders, interpolation, arithmetic and saved directions work the same for all:

The family says what its latent is through the latent protocol
(:class:`studio.models.capabilities.LatentFamily`: ``latent_spec``, ``prior_latents``,
``decode_latents``, ``encode_latents``, ``direction_features``); nothing here knows which
family it is. For the built-in ones:

======== ===================================== ===========================================
family   the latent                            encode(image)
======== ===================================== ===========================================
gan.*    z ~ N(0, I), ``latent_dim`` numbers   none: projection by optimisation
                                               (:func:`studio.engine.latent_project.project_job`)
vae.*    z ~ N(0, I), ``latent_dim`` numbers   the posterior mean of q(z | x)
vqvae    the code grid, D x h x w, flattened   the quantised encoder grid
flow.*   z ~ N(0, I), C * H * W numbers        the flow itself: exact, invertible
ddpm     DDIM's start noise x_T, C * H * W     DDIM inversion (the ODE run backward):
         numbers; decoding is a DDIM run       :mod:`studio.engine.latent_diffusion`
======== ===================================== ===========================================

``LatentSpace(model)`` of a family whose ``LatentSpec.ode`` is set builds a
:class:`~studio.engine.latent_diffusion.DiffusionLatentSpace` (decodes and inversions step
by step, with progress).

Decoding is the hot path of the slider explorer, so :meth:`LatentSpace.decode` calls the
networks directly in inference mode with the model switched to eval mode once, reuses its
input buffer for the common batch of one, and does nothing per call that it can do once.
A LatentSpace is not thread-safe: one thread (the explorer's worker) owns it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from studio.core.errors import CheckpointError, StudioError
from studio.engine.runs import RunFolder
from studio.models.base import MODEL_CONFIG, Capability, GenerativeModel
from studio.models.capabilities import LatentFamily, LatentSpec

# -- which runs can be explored ---------------------------------------------------------------


def unsupported_reason(family_key: str) -> str | None:
    """Why runs of ``family_key`` cannot be explored, in words, or None when they can."""
    from studio.models.registry import get_family

    try:
        family = get_family(family_key)
    except KeyError as err:
        return f"This run cannot be explored: its model family is unknown ({err.args[0]})."
    info = family.info
    if Capability.LATENT not in info.capabilities:
        if family.latent_note:
            return f"{info.display_name} {family.latent_note}"
        return f"{info.display_name} has no latent space to explore."
    return None


def run_family(run_dir: str | Path) -> str:
    """The family key of a run folder, read from its JSON only (no weights are loaded)."""
    run = RunFolder(run_dir)
    if run.config_path.is_file():
        config = run.read_config()
        family = config.get("family") or config.get("train", {}).get("family")
        if family:
            return str(family)
    meta_path = run.model_dir / MODEL_CONFIG
    if meta_path.is_file():
        try:
            return str(json.loads(meta_path.read_text(encoding="utf-8"))["family"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"The run's model description is damaged: {err}") from None
    raise CheckpointError(f"{run.path} is not a Studio run folder (no config.json).")


@dataclass(frozen=True)
class RunLatentInfo:
    """What the explorer shows about a run before (or instead of) loading it."""

    path: Path
    family: str
    display_name: str
    kind: str
    reason: str | None  # why it cannot be explored; None when it can

    @property
    def explorable(self) -> bool:
        return self.reason is None


def describe_run(run_dir: str | Path) -> RunLatentInfo:
    """Family and explorability of a run, from its JSON alone."""
    from studio.models.registry import get_family

    family = run_family(run_dir)
    reason = unsupported_reason(family)
    try:
        info = get_family(family).info
        name, kind = info.display_name, info.kind
    except KeyError:
        name, kind = family, family.partition(".")[0]
    return RunLatentInfo(Path(run_dir), family, name, kind, reason)


def open_latent_space(
    run_dir: str | Path, device: torch.device | str = "cpu", label: int | None = None
) -> LatentSpace:
    """Load a run's model for exploring. A run that cannot be explored is refused, with the
    reason, before any weights are read."""
    from studio.engine.sample import load_run_model

    reason = unsupported_reason(run_family(run_dir))
    if reason is not None:
        raise StudioError(reason)
    space = LatentSpace(load_run_model(run_dir, device), label=label)
    space.run_dir = Path(run_dir)
    return space


# -- the latent space -------------------------------------------------------------------------


class LatentSpace:
    """A loaded model seen as a latent space. Puts the model in eval mode for good: give it a
    model of its own, not one that is training."""

    run_dir: Path | None = None  # the run folder, when opened from one

    def __new__(cls, model: GenerativeModel, *args: object, **kwargs: object) -> LatentSpace:
        if cls is LatentSpace and _spec_of(model).ode:
            from studio.engine.latent_diffusion import DiffusionLatentSpace

            cls = DiffusionLatentSpace  # its __init__ runs next: the same call, one class down
        return super().__new__(cls)

    def __init__(self, model: GenerativeModel, label: int | None = None) -> None:
        info = model.info
        self.spec = _spec_of(model)
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
        self.dim = math.prod(self.latent_shape)
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
        return z.reshape(n, self.dim).float().cpu().numpy()

    # -- decoding ----------------------------------------------------------------------------
    def decode_tensor(self, z: Tensor) -> Tensor:
        """N x dim latents (on the model's device) -> N x C x R x R images in [-1, 1].

        Differentiable in ``z`` (projection uses it); callers that need no gradients wrap it
        in ``torch.inference_mode()``."""
        return self.model.decode_latents(z, self.labels(z.shape[0]))  # type: ignore[attr-defined]

    def decode(self, z: np.ndarray | Tensor) -> np.ndarray:
        """Latents -> uint8 RGB images: ``dim`` -> H x W x 3, ``N x dim`` -> N x H x W x 3."""
        single = z.ndim == 1
        zt = torch.as_tensor(z, dtype=torch.float32).reshape(-1, self.dim)
        with torch.inference_mode():
            if len(zt) == 1:
                self._z1.copy_(zt)
                zt = self._z1
            else:
                zt = zt.to(self.device)
            images = to_uint8(self.decode_tensor(zt))
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
        return z.reshape(len(images), -1)

    def direction_features(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(latents analysed, features) for principal directions from prior draws ``z``."""
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
