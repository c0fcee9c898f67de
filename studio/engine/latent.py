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
vae.hier the top level's grid, C x h x w,      its posterior mean (decoding puts the
         flattened                             lower levels at their prior means)
vqvae    the code grid, D x h x w, flattened   the quantised encoder grid
flow.*   z ~ N(0, I), C * H * W numbers        the flow itself: exact, invertible
ddpm     DDIM's start noise x_T, C * H * W     DDIM inversion (the ODE run backward):
         numbers; decoding is a DDIM run       :mod:`studio.engine.latent_diffusion`
======== ===================================== ===========================================

:func:`open_space` of a family whose ``LatentSpec.ode`` is set builds a
:class:`~studio.engine.latent_diffusion.DiffusionLatentSpace` (decodes and inversions step
by step, with progress); the class itself lives in :mod:`studio.engine.latent_base`.

Decoding is the hot path of the slider explorer, so :meth:`LatentSpace.decode` calls the
networks directly in inference mode with the model switched to eval mode once, reuses its
input buffer for the common batch of one, and does nothing per call that it can do once.
A LatentSpace is not thread-safe: one thread (the explorer's worker) owns it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from studio.core.errors import CheckpointError, StudioError
from studio.engine.latent_base import (  # re-exported: the public face of the latent spaces
    LatentSpace,
    arithmetic,
    image_error,
    interpolate,
    psnr,
    to_uint8,
)
from studio.engine.latent_diffusion import DiffusionLatentSpace
from studio.engine.runs import RunFolder
from studio.models.base import MODEL_CONFIG, Capability, GenerativeModel

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
    space = open_space(load_run_model(run_dir, device), label=label)
    space.run_dir = Path(run_dir)
    return space


def open_space(model: GenerativeModel, label: int | None = None, **options: object) -> LatentSpace:
    """``model`` as a latent space: a :class:`DiffusionLatentSpace` for an ODE latent (DDIM's
    start noise), else a :class:`LatentSpace`. Puts the model in eval mode for good."""
    from studio.engine.latent_base import _spec_of

    if _spec_of(model).ode:
        return DiffusionLatentSpace(model, label=label, **options)  # type: ignore[arg-type]
    return LatentSpace(model, label=label, **options)  # type: ignore[arg-type]


__all__ = [
    "DiffusionLatentSpace",
    "LatentSpace",
    "RunLatentInfo",
    "arithmetic",
    "describe_run",
    "image_error",
    "interpolate",
    "open_latent_space",
    "open_space",
    "psnr",
    "run_family",
    "to_uint8",
    "unsupported_reason",
]
