"""Inpainting with the models trained here: regenerate the masked part of an image.

Masks are float32 ``H x W`` in [0, 1]: 1 = regenerate, 0 = keep. The work happens at the
model's (square) resolution, on a window of the image:

* ``masked_only`` (default): the mask's bounding box plus ``padding``, grown to a square of at
  least the model's size (so small holes are not magnified past the model's native scale) and
  clamped to the image; a mask wider than the image's short side gives a non-square window,
  which is stretched to the model's square. The window is resized to the model's resolution
  (Lanczos), inpainted, resized back and pasted in.
* ``whole``: the whole image is resized to the model's square and back. Large images come back
  blurry and non-square ones are stretched on the way; use it for images near the model size.

Blending: the mask is grown by the feather radius and then feathered (a Gaussian reaching
exactly that radius, :func:`studio.core.brush.feather`), so every masked pixel is fully
regenerated and the soft seam lies outside the mask. The result is composited with
:func:`studio.core.brush.composite`: pixels farther than twice the feather radius from the mask
are exactly the original's. The model regenerates the grown mask (binary at its resolution,
any coverage counts) and keeps the rest of the window as context; the outer half of the seam
therefore blends the original with the model's (resized) copy of it.

The filling itself is the family's (the inpainting protocol,
:class:`studio.models.capabilities.InpaintFamily`, set with ``Capability.INPAINT``): DDPM
runs RePaint or masked DDIM / DPM-Solver++ (:mod:`studio.models.diffusion.inpaint`), the
latent families optimise their latent (:mod:`studio.models.latent_inpaint`).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from studio.core.errors import StudioError
from studio.core.imaging import make_grid
from studio.core.jobs import Progress
from studio.core.masks import composite, feather, grow
from studio.core.regions import Rect
from studio.engine.device import cpu_generator, resolve_device
from studio.models.base import Capability, GenerativeModel, class_labels, images_to_uint8
from studio.models.capabilities import InpaintFamily, InpaintSettings

MODES = ("masked_only", "whole")
PRESET_NAMES = ("fast", "quality")
MAX_VARIATIONS = 64
PREVIEW_TILE = 256  # previews show each variation's window at most this big


@dataclass
class InpaintRequest:
    """One inpainting job.

    ``image``: H x W x 3 uint8. ``mask``: H x W float32 in [0, 1], 1 = regenerate. ``feather``:
    the blend radius in pixels. ``mode``: "masked_only" or "whole". ``padding``: context pixels
    around the mask's box (masked_only). ``preset``: "fast" or "quality". ``method``: one of
    the family's ``inpaint_methods`` (diffusion: "repaint" or "masked"); "" = its first.
    ``steps``: overrides the preset's step count (diffusion: the
    schedule length; latent models: Adam steps). ``prior_weight``: overrides the latent prior
    weight. ``conditions``: ``label`` (class index; None cycles the classes over the
    variations) and ``guidance`` (diffusion).
    """

    image: np.ndarray
    mask: np.ndarray
    seed: int = 0
    variations: int = 1
    feather: float = 4.0
    mode: str = "masked_only"
    padding: int = 32
    preset: str = "fast"
    method: str = ""
    steps: int | None = None
    prior_weight: float | None = None
    conditions: dict[str, Any] = field(default_factory=dict)


#: The image region the model works on (half-open rows y0:y1, columns x0:x1): the canvas's
#: own rectangle type, with ``slices`` for numpy and ``size`` for Pillow.
Window = Rect


# -- checking the request ------------------------------------------------------------------


def checked(request: InpaintRequest) -> InpaintRequest:
    """A validated copy: mask as float32 in [0, 1], mode spelt canonically; else StudioError."""
    img = np.asarray(request.image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise StudioError(f"The image must be H x W x 3 uint8, not {img.shape} {img.dtype}.")
    mask = np.asarray(request.mask, dtype=np.float32)
    if mask.shape != img.shape[:2]:
        raise StudioError(f"The mask is {mask.shape[::-1]} but the image {img.shape[1::-1]}.")
    if not np.isfinite(mask).all():
        raise StudioError("The mask holds NaN or infinite values.")
    mode = request.mode.replace("-", "_")
    problems = {
        f"mode must be one of {', '.join(MODES)}": mode not in MODES,
        f"preset must be one of {', '.join(PRESET_NAMES)}": request.preset not in PRESET_NAMES,
        f"variations must be 1..{MAX_VARIATIONS}": not 1 <= request.variations <= MAX_VARIATIONS,
        "feather must be >= 0 px": not request.feather >= 0,
        "padding must be >= 0 px": request.padding < 0,
        "steps must be >= 1": request.steps is not None and request.steps < 1,
        "prior weight must be >= 0": request.prior_weight is not None
        and not request.prior_weight >= 0,
    }
    for message, bad in problems.items():
        if bad:
            raise StudioError(f"Inpainting: {message}.")
    return replace(request, image=img, mask=np.clip(mask, 0.0, 1.0), mode=mode)


def blend_masks(mask: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``(blend, regenerate)``: the float mask the result is composited through (the mask
    grown by ``radius`` then feathered by it, never below ``mask``; exactly 0 farther than
    2 * radius from the mask) and the boolean region the model regenerates (the grown mask,
    which holds every pixel where the blend is 0.5 or more)."""
    mask = mask.astype(np.float32)
    if radius <= 0:
        return mask.copy(), mask > 0
    grown = grow(mask, math.ceil(radius))
    return np.maximum(mask, feather(grown, radius)).astype(np.float32), grown > 0


def plan_window(support: np.ndarray, mode: str, padding: int, resolution: int) -> Window:
    """The window the model inpaints (see the module docstring); ``support`` is where the
    blend mask is non-zero (must not be empty)."""
    h, w = support.shape
    if mode == "whole":
        return Window(0, h, 0, w)
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    by0, by1, bx0, bx1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    short = min(h, w)
    side = min(max(by1 - by0, bx1 - bx0) + 2 * padding, short)
    side = max(side, min(resolution, short))  # do not magnify beyond the model's scale
    # A box longer than the short side cannot sit in a square: cover it (and its padding).
    ww = min(w, max(side, bx1 - bx0 + 2 * padding))
    hh = min(h, max(side, by1 - by0 + 2 * padding))
    # Centred on the box, then shifted to lie inside the image.
    x0 = min(max(round((bx0 + bx1 - ww) / 2), 0), w - ww)
    y0 = min(max(round((by0 + by1 - hh) / 2), 0), h - hh)
    return Window(y0, y0 + hh, x0, x0 + ww)


# -- moving between the image and the model ---------------------------------------------------


def _to_model(crop: np.ndarray, resolution: int, channels: int, device: torch.device) -> Tensor:
    img = Image.fromarray(crop).resize((resolution, resolution), Image.LANCZOS)
    if channels == 1:
        img = img.convert("L")
    arr = np.asarray(img, dtype=np.float32).reshape(resolution, resolution, channels)
    return (torch.from_numpy(arr.copy()).permute(2, 0, 1)[None] / 127.5 - 1.0).to(device)


def _mask_to_model(region: np.ndarray, resolution: int, device: torch.device) -> Tensor:
    # Box filter = each model pixel's coverage (exactly 0 where nothing is covered); any
    # coverage at all means "regenerate", so even a one-pixel hole survives downscaling.
    small = np.asarray(
        Image.fromarray(region.astype(np.float32)).resize((resolution, resolution), Image.BOX)
    )
    return torch.from_numpy((small > 0).astype(np.float32))[None, None].to(device)


def _from_model(images: Tensor, size: tuple[int, int]) -> list[np.ndarray]:
    """N x C x R x R in [-1, 1] -> N uint8 H x W x 3 arrays at ``size`` (width, height)."""
    out = []
    for arr in images_to_uint8(images).numpy():
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        out.append(np.asarray(Image.fromarray(arr).resize(size, Image.LANCZOS)))
    return out


def _paste(original: np.ndarray, window: Window, patch: np.ndarray, m: np.ndarray) -> np.ndarray:
    result = original.copy()
    result[window.slices] = patch
    return composite(original, result, m)


# -- the job -----------------------------------------------------------------------------------


def settings_of(model: InpaintFamily, request: InpaintRequest) -> InpaintSettings:
    """The family-facing part of a request. A family with several methods refuses one it
    lacks; a family with one way only ignores the method (a shared default)."""
    methods = tuple(model.inpaint_methods)
    method = request.method if methods else ""
    if method and method not in methods:
        raise StudioError(f"Inpainting: method must be one of {', '.join(methods)}.")
    guidance = request.conditions.get("guidance")
    return InpaintSettings(
        preset=request.preset,
        method=method,
        steps=request.steps,
        prior_weight=request.prior_weight,
        guidance=None if guidance is None else float(guidance),
    )


def describe_plan(model: GenerativeModel, request: InpaintRequest) -> str:
    """One line on what a request will run, e.g. the diffusion UNet evaluation count."""
    request = checked(request)
    family = _inpainter(model)
    return family.inpaint_describe(settings_of(family, request))


def preset_descriptions(model: GenerativeModel, method: str = "") -> dict[str, str]:
    """Preset name -> description for ``model`` (for ``method`` where it has several)."""
    return _inpainter(model).inpaint_presets(method)


def _labels(model: GenerativeModel, request: InpaintRequest, n: int) -> Tensor | None:
    conds = {k: v for k, v in request.conditions.items() if v is not None}
    allowed = {"label", "guidance"} & set(model.conditions)
    unknown = sorted(set(conds) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no conditions"
        raise StudioError(
            f"{model.info.display_name} cannot inpaint with {', '.join(unknown)} "
            f"(it takes {takes})."
        )
    if "label" not in model.conditions:
        return None
    label = conds.get("label")
    try:
        return class_labels(n, model.config.num_classes, label, model.device)
    except ValueError as err:
        raise StudioError(str(err)) from None


def _inpainter(model: GenerativeModel) -> InpaintFamily:
    """``model`` as an inpainting family; a StudioError (in words) for one that cannot."""
    caps = model.info.capabilities
    if Capability.TEXT in caps:
        raise StudioError(
            f"{model.info.display_name} follows prompts: inpaint with it in the Prompt workspace "
            "(mode Inpaint uses this canvas's image and mask), or with `studio generate --mask`."
        )
    if Capability.INPAINT in caps and isinstance(model, InpaintFamily):
        return model
    raise StudioError(
        f"{model.info.display_name} cannot inpaint: it has neither a diffusion UNet nor a "
        "latent space to optimise."
    )


def inpaint_job(
    model: GenerativeModel, request: InpaintRequest
) -> Generator[Progress, None, list[np.ndarray]]:
    """Inpaint ``request.variations`` full-size H x W x 3 uint8 variations with ``model``.

    Yields one Progress per UNet evaluation (diffusion) or optimisation step (latent models),
    with a preview of the window every few steps. Same seed and device: same variations.
    """
    req = checked(request)
    family = _inpainter(model)
    settings = settings_of(family, req)
    n, original = req.variations, req.image
    m, regen = blend_masks(req.mask, req.feather)
    if not (m > 0).any():
        yield Progress("inpaint", 1, 1, message="The mask is empty: nothing to inpaint.")
        return [original.copy() for _ in range(n)]

    c = model.config
    res, device = c.resolution, model.device
    window = plan_window(m > 0, req.mode, req.padding, res)
    x0 = _to_model(original[window.slices], res, c.channels, device)
    hole = _mask_to_model(regen[window.slices], res, device)
    labels = _labels(model, req, n)
    generator = cpu_generator(req.seed)

    crop, m_crop = original[window.slices], m[window.slices]
    scale = min(1.0, PREVIEW_TILE / max(window.size))
    tile = (max(1, round(window.size[0] * scale)), max(1, round(window.size[1] * scale)))

    def preview(images: Tensor) -> np.ndarray:
        tiles = [
            np.asarray(Image.fromarray(composite(crop, p, m_crop)).resize(tile, Image.BILINEAR))
            for p in _from_model(images, window.size)
        ]
        return make_grid(np.stack(tiles)) if len(tiles) > 1 else tiles[0]

    yield Progress("inpaint", 0, None, message=family.inpaint_describe(settings))
    images = yield from family.inpaint_iter(x0, hole, n, generator, settings, labels, preview)
    patches = _from_model(images, window.size)
    return [_paste(original, window, p, m) for p in patches]


def inpaint_run_job(
    run_dir: str | Path, request: InpaintRequest, device: str = "auto"
) -> Generator[Progress, None, list[np.ndarray]]:
    """Load the run's model (its latest saved weights) and inpaint with it."""
    from studio.engine.sample import load_run_model

    yield Progress("load", message=f"Loading {run_dir}")
    model = load_run_model(run_dir, resolve_device(device))
    return (yield from inpaint_job(model, request))
