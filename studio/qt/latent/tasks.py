"""Tasks the explorer runs as engine jobs (see :mod:`studio.qt.latent.explore_jobs`).

Each function returns a factory ``f(context, token) -> job generator``, ``context`` being the
:class:`~studio.qt.latent.engine_side.SpaceHolder` whose ``space`` is the loaded
:class:`~studio.engine.latent.LatentSpace`. The body runs on the engine thread, so the engine
(and torch) is imported there. Results are plain values and numpy arrays; nothing here touches
a widget.

Factories marked :func:`~studio.qt.latent.engine_side.uses_model` run the model; while the run
trains in this window the workspace runs them between training steps with a holder whose
space is over the run's current weights (:func:`~studio.qt.latent.engine_side.live_task_job`).
Their bodies use ``context.space`` only.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress
from studio.qt.latent.engine_side import SpaceHolder, TaskFactory, uses_model

RAW_SHOWN = 32  # raw dimensions offered as sliders (a flow has thousands)


@dataclass(frozen=True)
class Loaded:
    """A run opened in the explorer. ``reason`` set: it cannot be explored, and why."""

    path: Path
    family: str
    display_name: str
    reason: str | None = None
    dim: int = 0
    resolution: int = 0
    num_classes: int = 0
    can_encode: bool = False
    encoder: str = ""
    device: str = ""
    raw: Any = None  # latent_directions.Directions of the raw dimensions
    named: tuple[Any, ...] = ()  # latent_io.NamedSlider
    z: np.ndarray | None = None  # the first sample
    seed: int = 0
    ode: bool = False  # LatentSpace.ode: decodes are ODE runs (DDIM), inversion a job
    discrete: bool = False  # LatentSpace.discrete: the prior is over codes (VQ-VAE)
    steps: int = 0  # ODE latents: DDIM steps per decode and inversion
    refine: int = 0  # ODE latents: fixed-point refinements per inversion step
    step: int | None = None  # the training step of the loaded (saved) weights
    temperature: Any = None  # LatentSpec.temperature_option: Explore's control, or None
    layers: int = 1  # LatentSpace.layers: > 1, a latent per layer (group sliders, mixing)
    layer_dim: int = 0  # numbers per layer
    layer_groups: tuple[Any, ...] = ()  # capabilities.LayerGroup: the group sliders' choices
    details: Any = None  # LatentSpec.details_option: Explore's lower-levels switch, or None


def _space(context: SpaceHolder) -> Any:
    if context.space is None:
        raise StudioError("Open a run to explore first.")
    return context.space


def load_run(path: str | Path, device: str, seed: int) -> TaskFactory:
    """Describe the run; if it can be explored, load it, its saved sliders and a first
    sample. The principal directions come after (:func:`find_directions`): the picture can
    show while they are found."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Loaded]:
        from studio.engine.device import resolve_device
        from studio.engine.latent import describe_run, open_latent_space
        from studio.engine.latent_directions import raw_directions
        from studio.engine.latent_io import load_sliders
        from studio.engine.peek import saved_step

        yield Progress("load", message=f"Opening {Path(path).name}")
        info = describe_run(path)
        context.space = None  # the old model goes before the new one loads
        if info.reason is not None:
            return Loaded(info.path, info.family, info.display_name, reason=info.reason)
        dev = resolve_device(device)
        yield Progress("load", message=f"Loading {info.display_name} on {_describe_device(dev)}")
        space = open_latent_space(path, dev)
        context.space = space
        named = tuple(load_sliders(path, dim=space.dim))
        z = space.prior_sample(1, seed)[0]
        raw = raw_directions(space, k=min(space.dim, RAW_SHOWN), seed=seed)
        return Loaded(
            info.path,
            info.family,
            info.display_name,
            dim=space.dim,
            resolution=space.resolution,
            num_classes=space.num_classes,
            can_encode=space.can_encode,
            encoder=space.encoder,
            device=_describe_device(dev),
            raw=raw,
            named=named,
            z=z,
            seed=seed,
            ode=space.ode,
            discrete=space.discrete,
            steps=getattr(space, "steps", 0),
            refine=getattr(space, "refine", 0),
            step=saved_step(path),
            temperature=space.spec.temperature_option,
            layers=space.layers,
            layer_dim=space.layer_dim,
            layer_groups=space.layer_groups,
            details=space.spec.details_option if space.resamples_details else None,
        )

    return factory


def refresh_weights(path: str | Path, device: str) -> TaskFactory:
    """Load the run's newest saved weights into the holder (after its training ended), keeping
    the class and DDIM settings; returns their training step (or None)."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.device import resolve_device
        from studio.engine.latent import open_latent_space
        from studio.engine.peek import saved_step

        old = _space(context)
        yield Progress("load", message="Loading the newest saved weights")
        space = open_latent_space(path, resolve_device(device), label=old.label)
        if old.ode and space.ode:
            space.steps, space.refine = old.steps, old.refine
        context.space = space
        return saved_step(path)

    return factory


def _describe_device(device: Any) -> str:
    import torch

    from studio.engine.device import device_name

    if device.type != "cpu":
        return device_name(device)
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


def find_directions(n_samples: int | None, k: int, seed: int) -> TaskFactory:
    """The loaded space's principal directions (a Directions)."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.latent_directions import directions_job

        return (yield from directions_job(_space(context), n_samples, k, seed))

    return uses_model(factory)


def set_label(label: int) -> TaskFactory:
    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, int]:
        yield Progress("label")
        _space(context).label = label
        return label

    return factory


def prior_sample(seed: int, temperature: float | None = None) -> TaskFactory:
    """One latent from the prior (at ``temperature``; None: the space's own)."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        yield Progress("sample")
        return _space(context).prior_sample(1, seed, temperature)[0]

    return uses_model(factory)  # a VQ-VAE's prior is its codebook


def sample_grid(n: int, seed: int) -> TaskFactory:
    """``n`` prior latents and their images: ``(z N x dim, images N x H x W x 3)``."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        yield Progress("sample", message="Drawing samples")
        space = _space(context)
        z = space.prior_sample(n, seed)
        return z, space.decode(z)

    return uses_model(factory)


def interpolation_strip(z0: np.ndarray, z1: np.ndarray, n: int, mode: str) -> TaskFactory:
    """The frames between two latents: ``(z N x dim, frames N x H x W x 3)``."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.latent import interpolate

        yield Progress("interpolate", message="Decoding the frames")
        zs = interpolate(z0, z1, n, mode)
        return zs, _space(context).decode(zs)

    return uses_model(factory)


def combine(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> TaskFactory:
    """Latent arithmetic ``a - b + c``: ``(z, image)``."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.latent import arithmetic

        yield Progress("arithmetic")
        z = arithmetic(a, b, c)
        return z, _space(context).decode(z)

    return uses_model(factory)


def mix(a: np.ndarray, b: np.ndarray, crossover: int) -> TaskFactory:
    """The layers below ``crossover`` from ``a``, the rest from ``b``: ``(z, image)``."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.latent_base import mix_layers

        yield Progress("mix")
        space = _space(context)
        z = mix_layers(a, b, crossover, space.layers)
        return z, space.decode(z)

    return uses_model(factory)


def mix_grid(latents: list[np.ndarray], crossover: int) -> TaskFactory:
    """Every mix of ``latents`` at ``crossover`` as one grid image (see latent_layers)."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.latent_layers import mix_grid_job

        return (yield from mix_grid_job(_space(context), latents, crossover))

    return uses_model(factory)


def save_image(image: np.ndarray, path: Path, overwrite: bool) -> TaskFactory:
    """Write a PNG (atomically; an existing file only with ``overwrite``)."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Path]:
        from studio.engine.latent_layers import save_png

        yield Progress("export", message=f"Saving {path.name}")
        return save_png(image, path, overwrite)

    return factory


@dataclass(frozen=True)
class Encoded:
    """An image brought into the latent space."""

    name: str
    z: np.ndarray
    target: np.ndarray  # the image as the model sees it (R x R x 3)
    reconstruction: np.ndarray
    error: float  # MSE on the 0..1 scale
    method: str
    source_shape: tuple[int, int] = (0, 0)  # the opened image's (height, width)


def encode_image(
    source: str | Path | np.ndarray, name: str, steps: int, seed: int, per_layer: bool = False
) -> TaskFactory:
    """Encode (VAE, VQ-VAE), invert (flow, diffusion) or project (GAN) an image file or
    array; ``per_layer``: a layered space's projection finds a latent per layer (w+)."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Encoded]:
        from studio.engine.images import ImageRejected, open_image
        from studio.engine.latent import image_error
        from studio.engine.latent_project import project_job

        space = _space(context)
        yield Progress("encode", 0, None, f"Reading {name}")
        if isinstance(source, np.ndarray):
            image = source
        else:
            try:
                image = np.asarray(open_image(source), dtype=np.uint8)
            except ImageRejected as err:
                raise StudioError(f"{name} cannot be used: {err}") from None
        shape = (int(np.shape(image)[0]), int(np.shape(image)[1]))
        if space.ode:  # DDIM inversion: a job with progress and cancel
            from studio.engine.latent_diffusion import invert_job

            inv = yield from invert_job(space, image)
            return Encoded(
                name, inv.z, inv.target, inv.reconstruction, inv.error, inv.method, shape
            )
        if not space.can_encode:
            proj = yield from project_job(space, image, steps=steps, seed=seed, per_layer=per_layer)
            into = ""
            if space.layered:
                into = ", a latent per layer" if per_layer else ", one latent for every layer"
            return Encoded(
                name,
                proj.z,
                proj.target,
                proj.reconstruction,
                proj.error,
                f"projected in {proj.steps} steps{into}",
                shape,
            )
        target = space.prepare_image(image)
        z = space.encode(target)
        recon = space.decode(z)
        error = image_error(recon, target)
        return Encoded(name, z, target, recon, error, space.encoder, shape)

    return uses_model(factory)


def fit_slider(
    run_dir: Path,
    name: str,
    z_pos: np.ndarray,
    z_neg: np.ndarray,
    family: str,
    label: int | None,
) -> TaskFactory:
    """Fit an attribute direction from marked latents and save it with the run:
    ``(fit, all named sliders)``."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.latent_directions import fit_attribute_direction
        from studio.engine.latent_io import NamedSlider, add_slider

        yield Progress("fit", message=f"Fitting {name}")
        fit = fit_attribute_direction(z_pos, z_neg)
        slider = NamedSlider(name, fit.direction, fit.std, fit.accuracy, label)
        return fit, tuple(add_slider(run_dir, slider, family))

    return factory


def remove_slider(run_dir: Path, name: str, family: str) -> TaskFactory:
    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.latent_io import remove_slider as remove

        yield Progress("sliders")
        return tuple(remove(run_dir, name, family))

    return factory


def export_frames(frames: np.ndarray, path: Path) -> TaskFactory:
    """Save frames as a PNG strip or a GIF/WebP animation, by the path's suffix."""

    def factory(context: SpaceHolder, token: CancelToken) -> Generator[Progress, None, Path]:
        from studio.engine.latent_io import export_animation, export_strip_png

        yield Progress("export", message=f"Saving {path.name}")
        if path.suffix.lower() in (".gif", ".webp"):
            return export_animation(frames, path)
        return export_strip_png(frames, path)

    return factory
