"""What a family can do beyond training and sampling, as typed protocols and plain data.

The engine and the window never ask *which* family a model is; they ask what it declares:

* :class:`SamplingOption` rows (``GenerativeModel.sampling_options``): the knobs a sampler
  takes (steps, sampler, guidance, temperature, ...), which the window's sampling controls
  and the command line's flags are built from.
* ``GenerativeModel.conditions``: the names of what a sample can be conditioned on
  (``label`` a class, ``prompt``/``negative_prompt`` a caption) plus the sampling options.
* :class:`LatentFamily`: a latent space (prior draws with a temperature, a differentiable
  decoder, an encoder where there is one, the features directions are found in), described
  by a :class:`LatentSpec`. A family whose latent is an ODE's start noise (DDIM) implements
  :class:`OdeLatentFamily` as well and sets ``LatentSpec.ode``.
* :class:`LikelihoodFamily`: bits per dimension of a batch, with labels where conditional.
* :class:`InpaintFamily`: the family's own way to fill a masked region
  (:mod:`studio.models.latent_inpaint` is the latent-optimisation one any latent family can
  take). ``Capability.INPAINT`` is set by the families that implement it.
* :class:`AnomalyScore` rows (``GenerativeModel.scores``): how a family measures how unusual
  an image is to it (reconstruction error, negative ELBO, bits/dim, denoising error,
  projection error), as data; the first is the default. A family that declares none gets
  the ones :func:`derived_scores` reads from its capabilities. :class:`ScoreFamily` computes
  them its own way; :mod:`studio.models.scoring` computes the derived ones for any family.
* :class:`AutoencoderFamily`: images to a continuous latent grid and back (the first stage
  of latent diffusion), described by an :class:`AutoencoderSpec`.
* :class:`PerceptualFamily`: a family whose loss can use the feature function the trainer
  hands it (the studio's feature extractor trained on the run's data).
* :class:`CodeFamily`: images of the family's ``tile`` size as grids of discrete codes and
  back (a VQ-VAE), described by a :class:`CodeSpec`: what ``studio compress`` entropy-codes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from studio.core.jobs import Progress
from studio.core.schema import Capability

Preview = Callable[[Tensor], np.ndarray]


@dataclass(frozen=True)
class SamplingOption:
    """One sampling knob, as data: the window builds a control from it and the command line
    a flag. ``type`` is "int", "float" or "choice"; ``default`` None means "the family's own"
    (e.g. a per-sampler step count); ``defaults_by`` names a choice option whose value picks
    the default from ``defaults`` (steps per sampler)."""

    name: str
    type: str
    default: Any
    label: str
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    defaults_by: str = ""
    defaults: tuple[tuple[str, Any], ...] = ()

    def default_for(self, values: dict[str, Any]) -> Any:
        """The default given the other options' ``values`` (see ``defaults_by``)."""
        if self.defaults_by:
            table = dict(self.defaults)
            return table.get(values.get(self.defaults_by), self.default)
        return self.default


def option_default(options: Sequence[SamplingOption], name: str, values: dict[str, Any]) -> Any:
    """The default of the option ``name`` among a family's ``options`` given the other
    options' ``values`` (a family's steps for a sampler); None when it declares no such option."""
    return next((o.default_for(values) for o in options if o.name == name), None)


TEMPERATURE = SamplingOption(
    "temperature",
    "float",
    1.0,
    "Temperature",
    "scales the prior's noise: below 1 is tamer, above 1 wilder",
    minimum=0.01,
    maximum=5.0,
)

TRUNCATION = SamplingOption(
    "truncation",
    "float",
    1.0,
    "Truncation",
    "psi: pulls every style toward the average one; below 1 is tamer and more typical, "
    "0 draws the average image",
    minimum=0.0,
    maximum=1.0,
)


def parse_sampling(options: tuple[SamplingOption, ...], pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings (the command line's ``--with``) as values of the declared
    ``options``, typed and range-checked; a ValueError names what is wrong, in words."""
    by_name = {o.name: o for o in options}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        option = by_name.get(name.strip())
        if not sep or option is None:
            known = ", ".join(by_name) or "none"
            raise ValueError(f"--with {pair!r}: expected NAME=VALUE with NAME one of: {known}")
        if option.type == "choice":
            if text not in option.choices:
                raise ValueError(f"--with {name}: choose one of {', '.join(option.choices)}")
            out[option.name] = text
            continue
        try:
            value: float = int(text) if option.type == "int" else float(text)
        except ValueError:
            raise ValueError(f"--with {name}: {text!r} is not a number") from None
        low, high = option.minimum, option.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"--with {name}: {value} is outside {low}..{high}")
        out[option.name] = value
    return out


@dataclass(frozen=True)
class LayerGroup:
    """A run of the decoder's layers that takes one latent each (``start`` to ``stop``,
    ``stop`` excluded): Explore's group sliders move only these layers' latents."""

    name: str
    start: int
    stop: int
    help: str = ""


@dataclass(frozen=True)
class LatentSpec:
    """What a latent space looks like, as data.

    ``shape``: the latent's shape inside the model (flattened to ``prod(shape)`` numbers
    outside). ``encoder``: how an image's latent is found, in words, or "" when there is no
    encoder (a GAN: the explorer projects by optimisation instead). ``temperature``: the prior
    temperature the explorer shows samples at. ``discrete``: the prior is over codes (VQ-VAE):
    prior draws come from the model and raw coordinates mean little. ``analysed``: how many
    latents principal directions are found from by default. ``regress``: the directions are
    the PCA of :meth:`LatentFamily.direction_features` mapped back to z by regression
    (GANSpace) rather than the PCA of the latents themselves. ``directions``: how they are
    found, in words, with ``{n}`` and ``{source}`` filled in. ``ode``: decoding is an ODE run
    of many network passes and encoding its inversion (:class:`OdeLatentFamily`)."""

    shape: tuple[int, ...]
    encoder: str = ""
    temperature: float = 1.0
    discrete: bool = False
    analysed: int = 500
    regress: bool = False
    directions: str = "PCA of the latents of {n} of {source}"
    image_directions: str = ""  # the same, when a user's images are encoded ("" = as above)
    ode: bool = False
    # Explore's control for the prior's temperature, as data (StyleGAN: its truncation psi);
    # None = no control (prior draws use ``temperature``).
    temperature_option: SamplingOption | None = None
    # A decoder that takes one latent per layer (StyleGAN's w+): ``layers`` of them, each
    # of ``shape``, decoded by :meth:`LayeredLatentFamily.decode_layers`. Explore then edits
    # the per-layer latent (``layers * prod(shape)`` numbers; a prior draw is the same latent
    # at every layer) and offers group sliders over ``layer_groups`` and layer mixing.
    layers: int = 1
    layer_groups: tuple[LayerGroup, ...] = ()
    # Explore's switch for a latent that is only the top of a hierarchy (the levels below are
    # decoded from it): a "choice" option between DETAILS_FIXED (the levels below decoded the
    # same way every time) and DETAILS_RESAMPLE (drawn anew for each picture: the same layout,
    # new details). Set only by a family that implements DetailLatentFamily; None = no switch.
    details_option: SamplingOption | None = None


@runtime_checkable
class LatentFamily(Protocol):
    """A family with a latent space. Latents are N x dim tensors (flattened)."""

    def latent_spec(self) -> LatentSpec: ...

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        """``n`` draws from the prior (N x dim, on the CPU, from ``generator``)."""
        ...

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """N x dim latents on the model's device -> images in [-1, 1], differentiable in z
        (unclamped where a clamp would stop gradients)."""
        ...

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """Images in [-1, 1] -> N x dim latents; only where ``latent_spec().encoder``."""
        ...

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """(latents analysed, features) for finding principal directions from prior draws
        ``z``: the PCA runs on the features (``LatentSpec.regress``: and is mapped back to
        the latents by regression)."""
        ...


DETAILS_FIXED = "fixed"
DETAILS_RESAMPLE = "resample"

DETAILS = SamplingOption(
    "details",
    "choice",
    DETAILS_FIXED,
    "Lower levels",
    "fixed: the sliders move the top level and the levels below follow it the same way every "
    "time; resample: each picture draws the levels below anew (the same layout, new details)",
    choices=(DETAILS_FIXED, DETAILS_RESAMPLE),
)


@runtime_checkable
class DetailLatentFamily(Protocol):
    """A latent family whose latent is the top of a hierarchy (``LatentSpec.details_option``):
    ``decode_latents`` decodes the levels below the same way every time; this draws them."""

    def decode_latents_resampled(
        self, z: Tensor, labels: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        """As ``decode_latents``, with the levels below the latent drawn from their prior
        given it, with noise from ``generator`` (a CPU generator): same generator state, same
        images."""
        ...


@runtime_checkable
class LayeredLatentFamily(Protocol):
    """A latent family whose decoder takes one latent per layer (``LatentSpec.layers``)."""

    def decode_layers(self, ws: Tensor, labels: Tensor | None) -> Tensor:
        """N x layers x dim latents on the model's device -> images in [-1, 1],
        differentiable in ``ws``; layer ``i`` gets ``ws[:, i]``."""
        ...


@runtime_checkable
class OdeLatentFamily(Protocol):
    """A latent that is the start noise of a deterministic ODE sampler (DDIM): decoding runs
    ``steps`` network passes from the noise, encoding runs them backward."""

    def ode_max_steps(self) -> int: ...

    def ode_guidance(self) -> float: ...

    def ode_path(self, steps: int) -> Any:
        """The sampler's path for ``steps`` steps (handed back to the two calls below)."""
        ...

    def ode_decode_iter(
        self, z: Tensor, labels: Tensor | None, path: Any, guidance: float
    ) -> Generator[int, None, Tensor]:
        """Noise (N x C x R x R) -> images, one yield (passes so far) per network pass."""
        ...

    def ode_invert_iter(
        self, images: Tensor, labels: Tensor | None, path: Any, guidance: float, refine: int
    ) -> Generator[int, None, Tensor]:
        """Images -> noise (N x C x R x R), one yield per network pass."""
        ...


@runtime_checkable
class LikelihoodFamily(Protocol):
    """A family that scores images: per-image bits/dim (exact, or a bound), lower is
    better. ``labels`` is used by class-conditional families and ignored by the others."""

    def bits_per_dim(self, images: Tensor, labels: Tensor | None = None) -> Tensor: ...


@dataclass(frozen=True)
class InpaintSettings:
    """What a user chose for one inpainting run: a ``preset`` ("fast" or "quality"), a
    ``method`` (one of the family's ``inpaint_methods``; "" = its first), and overrides of
    the preset's ``steps`` and latent ``prior_weight``; ``guidance`` for families with it."""

    preset: str = "fast"
    method: str = ""
    steps: int | None = None
    prior_weight: float | None = None
    guidance: float | None = None


@runtime_checkable
class InpaintFamily(Protocol):
    """A family that fills a masked region its own way. ``x0`` is 1 x C x R x R in [-1, 1],
    ``hole`` 1 x 1 x R x R (1 = regenerate); the result is N x C x R x R in [-1, 1] (the
    caller pastes the known pixels back)."""

    inpaint_methods: tuple[str, ...]  # e.g. ("repaint", "masked"); () = one way only
    inpaint_method_labels: dict[str, str]  # method -> its name in the window

    @classmethod
    def inpaint_presets(cls, method: str = "") -> dict[str, str]:
        """Preset name -> what it runs, in words (a class method: no weights needed)."""
        ...

    def inpaint_describe(self, settings: InpaintSettings) -> str:
        """One line on what ``settings`` will run (the number of network passes, say)."""
        ...

    def inpaint_iter(
        self,
        x0: Tensor,
        hole: Tensor,
        n: int,
        generator: torch.Generator,
        settings: InpaintSettings,
        labels: Tensor | None,
        preview: Preview | None,
    ) -> Generator[Progress, None, Tensor]: ...


# -- discrete codes (an image codec) ---------------------------------------------------------


@dataclass(frozen=True)
class CodeSpec:
    """What a family's discrete codes look like, as data: a ``tile`` x ``tile`` image (the
    run's resolution) becomes a ``grid`` (rows, columns) of codes, each in
    ``range(codebook_size)``; ``channels`` is how many colour channels a tile has."""

    tile: int
    grid: tuple[int, int]
    codebook_size: int
    channels: int = 3


@runtime_checkable
class CodeFamily(Protocol):
    """A family that turns images into discrete codes and back (``Capability.CODES``).
    Both directions are deterministic: the same tiles give the same codes, the same codes the
    same pixels (on one device)."""

    def code_spec(self) -> CodeSpec: ...

    def encode_codes(self, images: Tensor) -> Tensor:
        """N x C x tile x tile images in [-1, 1] -> N x rows x cols codes (long, on the CPU)."""
        ...

    def decode_codes(self, codes: Tensor) -> Tensor:
        """N x rows x cols codes (long) -> N x C x tile x tile images in [-1, 1] (CPU)."""
        ...


@dataclass(frozen=True)
class AutoencoderSpec:
    """The latent grid of an autoencoder (``Capability.AUTOENCODER``): an image of side S
    becomes ``channels`` x S/``downsample`` x S/``downsample`` numbers."""

    channels: int
    downsample: int


@runtime_checkable
class AutoencoderFamily(Protocol):
    """A family whose encoder maps images to a continuous latent grid and whose decoder maps
    such grids back (``Capability.AUTOENCODER``): the frozen first stage that a latent
    diffusion run models. Both work on the model's device, in eval mode, without gradients
    being required of the caller."""

    def autoencoder_spec(self) -> AutoencoderSpec: ...

    def encode_to_grid(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """N x C x S x S images in [-1, 1] -> N x channels x S/d x S/d latents, unscaled.
        With a generator, a sample of the posterior where the family has one; without, its
        mean (deterministic)."""
        ...

    def decode_from_grid(self, latents: Tensor) -> Tensor:
        """N x channels x s x s latents (unscaled) -> N x C x s*d x s*d images in [-1, 1]."""
        ...


@runtime_checkable
class PerceptualFamily(Protocol):
    """A family that can add a perceptual loss (a distance between image features) when its
    settings ask for one. The trainer, before the first step, asks ``wants_perceptual_features``
    and if so hands ``set_perceptual_features`` a frozen, differentiable function from
    N x C x S x S images in [-1, 1] to N x F features: the feature extractor the studio trains
    on the run's own images (nothing is downloaded; the models layer never sees the engine)."""

    def wants_perceptual_features(self) -> bool: ...

    def set_perceptual_features(self, features: Callable[[Tensor], Tensor] | None) -> None: ...


# -- anomaly scores ("find the odd ones out") -------------------------------------------------


@dataclass(frozen=True)
class AnomalyScore:
    """One way a family scores how unusual an image is to it, as data. Higher is always
    more unusual. ``name`` is what the command line's ``--score`` and the CSV column use;
    ``label`` and ``help`` are for people; ``unit`` says what the numbers are in."""

    name: str
    label: str
    help: str = ""
    unit: str = ""


RECONSTRUCTION = AnomalyScore(
    "recon",
    "Reconstruction error",
    "how far the image is from the model's reconstruction of it (encode, then decode)",
    "mean squared error, 0..1 pixels",
)
NEGATIVE_ELBO = AnomalyScore(
    "neg_elbo",
    "Negative ELBO",
    "the VAE's bound on the image's code length: how surprised the model is by it",
    "bits/dim",
)
BITS_PER_DIM = AnomalyScore(
    "bits_per_dim",
    "Bits per dimension",
    "the image's negative log-likelihood under the model",
    "bits/dim",
)
DENOISING = AnomalyScore(
    "denoise",
    "Denoising error",
    "how badly the model removes noise from the image, averaged over a few fixed noise levels",
    "mean squared error, 0..1 pixels",
)
PROJECTION = AnomalyScore(
    "projection",
    "Projection error",
    "how close the model's best matching image comes, found by optimising the latent",
    "mean squared error, 0..1 pixels",
)


def derived_scores(capabilities: Capability) -> tuple[AnomalyScore, ...]:
    """The scores a family gets without code: bits/dim from a likelihood, else the
    reconstruction error from a latent space (its encoder, or projection without one)."""
    if Capability.LIKELIHOOD in capabilities:
        return (BITS_PER_DIM,)
    if Capability.LATENT in capabilities:
        return (RECONSTRUCTION,)
    return ()


@dataclass(frozen=True)
class ScoreBatch:
    """Scores of N images: ``scores`` maps each offered score's name to N floats (CPU,
    higher = more unusual); ``error_map`` is N x H x W, the per-pixel error behind the first
    score where it has one (squared error on the 0..1 scale); ``reconstruction`` N x C x H x W
    in [-1, 1], what the image was compared with, where the score has one."""

    scores: dict[str, Tensor]
    error_map: Tensor | None = None
    reconstruction: Tensor | None = None


@runtime_checkable
class ScoreFamily(Protocol):
    """A family that computes its anomaly scores itself (all of its ``scores`` at once).
    ``labels`` (a class per image) is used by conditional families and may be None; every
    random draw comes from ``generator`` (a CPU generator; a fixed seed when None), so the
    same images and seed give the same scores."""

    def anomaly_scores(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ScoreBatch: ...
