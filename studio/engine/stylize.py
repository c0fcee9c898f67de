"""Neural style transfer (Gatys, Ecker and Bethge, 2016): optimise the pixels of an image so
its deep features match the content image's and its Gram matrices match the style image's, at
several layers of a VGG-19 (:mod:`studio.engine.vgg`). No training run is involved.

* Content: the mean squared difference of ``relu4_2`` activations.
* Style: for each of ``relu1_1`` ... ``relu5_1``, the mean squared difference of Gram matrices
  (normalised by ``C * H * W``, so the weights do not depend on the image size), summed.
* Total variation: the mean squared difference of neighbouring pixels, against speckle.

The optimiser is L-BFGS, as in the paper: on this smooth, deterministic objective of a few
hundred thousand pixels it reaches a given loss in several times fewer iterations than Adam,
and it has no learning rate to tune against losses whose scale the weights change by orders of
magnitude. It runs one iteration per job step (``max_iter=1``; its history carries over), so
cancel, stop and the live preview come between iterations; the strong-Wolfe line search makes
an iteration cost one to a few forward-backward passes (``evaluations`` counts them). The
pixels are clamped to [0, 1] only for previews and the result: clamping between iterations
breaks the curvature pairs L-BFGS keeps (the steps it remembers are not the steps taken) and
stalls it, which the tests caught; the content and TV terms keep the pixels near the range.
Its tolerances are 0, so tiny losses (a weak style weight) do not read as converged.

The image starts from the content image (the default; the result stays recognisable from the
first preview) or from noise. Both images work at ``size`` pixels on their longer side.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress
from studio.core.masks import composite
from studio.core.regions import Rect, clip_rect, support_rect
from studio.core.stylize import MIN_SIZE, StyleSettings
from studio.engine.device import free_memory, is_out_of_memory, resolve_device
from studio.engine.vgg import VGG19Features, load_vgg19
from studio.models.vgg import gram, tv_loss

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
HISTORY = 20  # L-BFGS curvature pairs kept: 2 x 20 image-sized vectors, 480 bytes per pixel
# Memory per working pixel with the standard widths: activations, gradients, L-BFGS history.
# The peak resident memory grew by 3,400 bytes per pixel between 256x192 and 512x384 on the CPU
# over three iterations (docs/performance.md); with a full history that is about 3,900, and
# 5,000 keeps a margin.
BYTES_PER_PIXEL = 5_000


@dataclass
class StyleRequest:
    """One style transfer: ``content`` and ``style`` (``H x W x 3`` uint8, any size) and the
    settings."""

    content: np.ndarray
    style: np.ndarray
    settings: StyleSettings = field(default_factory=StyleSettings)


@dataclass
class StyleResult:
    """The stylised image (``H x W x 3`` uint8 at the working size), how many iterations ran,
    whether a stop ended it early, and the last losses."""

    image: np.ndarray
    steps_done: int
    stopped_early: bool = False
    losses: dict[str, float] = field(default_factory=dict)


def check_request(request: StyleRequest) -> None:
    """Refuse, in one sentence, a request that cannot work (before anything loads)."""
    for name in ("content", "style"):
        img = getattr(request, name)
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3):
            raise StudioError(f"The {name} image must be an H x W x 3 image.")
        if min(img.shape[:2]) < 1:
            raise StudioError(f"The {name} image is empty.")
    request.settings.check()


# -- losses -----------------------------------------------------------------------------------


class Objective:
    """The weighted loss of an image against fixed content features and style Grams."""

    def __init__(
        self, vgg: VGG19Features, content: Tensor, style: Tensor, settings: StyleSettings
    ) -> None:
        self.vgg, self.settings = vgg, settings
        self.content_layers = list(CONTENT_LAYERS) if settings.content_weight > 0 else []
        self.style_layers = list(STYLE_LAYERS) if settings.style_weight > 0 else []
        with torch.no_grad():
            self.targets = (
                {k: v.detach() for k, v in vgg(content, self.content_layers).items()}
                if self.content_layers
                else {}
            )
            self.grams = (
                {k: gram(v).detach() for k, v in vgg(style, self.style_layers).items()}
                if self.style_layers
                else {}
            )

    def __call__(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        feats = self.vgg(x, self.content_layers + self.style_layers)
        zero = x.new_zeros(())
        content = sum((torch.mean((feats[k] - t) ** 2) for k, t in self.targets.items()), zero)
        style = sum((torch.mean((gram(feats[k]) - g) ** 2) for k, g in self.grams.items()), zero)
        tv = tv_loss(x) if self.settings.tv_weight > 0 else zero
        r = self.settings
        total = r.content_weight * content + r.style_weight * style + r.tv_weight * tv
        parts = {"content": content, "style": style, "tv": tv, "total": total}
        return total, {k: float(v.detach()) for k, v in parts.items()}


# -- images -----------------------------------------------------------------------------------


def working_size(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    """``(width, height)`` with the longer side ``size`` and the aspect ratio of ``shape``."""
    h, w = shape[:2]
    scale = size / max(h, w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def to_tensor(image: np.ndarray, size: int, device: torch.device) -> Tensor:
    """``image`` resized to ``size`` on its longer side, as ``1 x 3 x H x W`` in [0, 1]."""
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    pil = pil.resize(working_size(image.shape, size), Image.Resampling.LANCZOS)
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous().to(device)


def to_uint8(x: Tensor) -> np.ndarray:
    return (x[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for the job on ``device`` (None when unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def too_big(size: int) -> StudioError:
    smaller = max(MIN_SIZE, size // 2)
    return StudioError(
        f"Not enough memory to stylize at {size} px: try a smaller size (--size {smaller} on "
        "the command line, Size in the window)."
    )


def check_memory(shape: tuple[int, ...], size: int, vgg: VGG19Features, device: torch.device):
    """Refuse a working size whose activations cannot fit (an estimate, before any work)."""
    w, h = working_size(shape, size)
    scale = sum(vgg.widths) / sum((64, 128, 256, 512, 512))
    need = int(w * h * BYTES_PER_PIXEL * scale)
    free = available_memory(device)
    if free is not None and need > free:
        raise too_big(size)


_VGG_CACHE: dict[tuple[str, int, int, str], VGG19Features] = {}


def cached_vgg(path: str | os.PathLike[str], device: str = "auto") -> VGG19Features:
    """:func:`load_vgg19`, kept for the next call while the file is unchanged (one entry:
    the window stylizes with one file; the real one is 80 MB of features in memory)."""
    dev = resolve_device(device)
    p = Path(path).expanduser()
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size, str(dev))
    except OSError:
        return load_vgg19(p, dev)  # says what is wrong with the path
    if key not in _VGG_CACHE:
        _VGG_CACHE.clear()
        _VGG_CACHE[key] = load_vgg19(p, dev)
    return _VGG_CACHE[key]


# -- the job ------------------------------------------------------------------------------------


def stylize_job(
    request: StyleRequest,
    vgg_path: str | os.PathLike[str] | None = None,
    device: str = "auto",
    token: CancelToken | None = None,
    vgg: VGG19Features | None = None,
) -> Generator[Progress, None, StyleResult]:
    """Job: stylise ``request.content`` after ``request.style``.

    Yields a ``stylize`` report per iteration (losses as metrics, a preview image every
    ``settings.preview_every`` iterations and at the end). ``token.stop()`` ends it early and
    returns the image so far (``stopped_early``); a cancel returns nothing.
    """
    check_request(request)
    dev = resolve_device(device)
    if vgg is None:
        if vgg_path is None:
            raise StudioError("Choose the VGG-19 weights file.")
        yield Progress("load", message=f"Loading VGG-19 from {Path(vgg_path).name}")
        vgg = load_vgg19(vgg_path, dev)
    else:
        vgg = vgg.to(dev)
    check_memory(request.content.shape, request.settings.size, vgg, dev)
    try:
        return (yield from _optimise(request, vgg, dev, token))
    except Exception as err:
        if not is_out_of_memory(err):
            raise
    free_memory()  # outside the except block: its traceback holds the failed step's tensors
    raise too_big(request.settings.size)


def _optimise(
    request: StyleRequest, vgg: VGG19Features, dev: torch.device, token: CancelToken | None
) -> Generator[Progress, None, StyleResult]:
    s = request.settings
    content = to_tensor(request.content, s.size, dev)
    style = to_tensor(request.style, s.size, dev)
    objective = Objective(vgg, content, style, s)
    if s.init == "content":
        start = content.clone()
    else:
        gen = torch.Generator().manual_seed(s.seed)
        start = torch.rand(content.shape, generator=gen).to(dev)
    x = start.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=1,
        history_size=HISTORY,
        line_search_fn="strong_wolfe",
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )
    losses: dict[str, float] = {}
    evaluations = 0

    def closure() -> Tensor:
        nonlocal losses, evaluations
        if token is not None:
            token.check()  # a cancel lands within one evaluation, not after a whole line search
        optimizer.zero_grad(set_to_none=True)
        loss, losses = objective(x)
        loss.backward()
        evaluations += 1
        return loss

    total = s.steps
    step = 0
    for step in range(1, total + 1):
        optimizer.step(closure)
        if not all(math.isfinite(v) for v in losses.values()):
            raise StudioError(
                f"The loss became NaN or infinite at iteration {step}: lower the style weight "
                "(or check the VGG-19 file)."
            )
        preview = step % s.preview_every == 0 or step == total
        yield Progress(
            "stylize",
            step,
            total,
            message="Stylizing",
            metrics=dict(losses),
            image=to_uint8(x) if preview else None,
            info={"evaluations": evaluations},
        )
        if token is not None and token.stop_requested and not token.cancelled and step < total:
            return StyleResult(to_uint8(x), step, True, dict(losses))
    return StyleResult(to_uint8(x), step, False, dict(losses))


# -- the canvas ---------------------------------------------------------------------------------


def mask_window(mask: np.ndarray, feather_px: float) -> Rect | None:
    """The part of the image a masked style transfer works on: the mask's box, the blend's
    reach (twice the feather) and a quarter of the box as context around it, clipped to the
    image. A small region of a big image is so stylised at the working size, not shrunk with
    the whole image and enlarged back. None when the mask is empty."""
    box = support_rect(mask)
    if box is None:
        return None
    reach = 2 * math.ceil(feather_px) + 2 + max(box.y1 - box.y0, box.x1 - box.x0) // 4
    return clip_rect(box.y0 - reach, box.y1 + reach, box.x0 - reach, box.x1 + reach, mask.shape)


def blend_result(
    original: np.ndarray, stylized: np.ndarray, mask: np.ndarray | None, feather_px: float
) -> np.ndarray:
    """``stylized`` (any size) resized to ``original`` and put in: everywhere when ``mask`` is
    None, else through the mask feathered as inpainting feathers it (pixels farther than
    twice the feather from the mask stay exactly the original's)."""
    from studio.engine.inpaint import blend_masks

    h, w = original.shape[:2]
    resized = np.asarray(
        Image.fromarray(stylized).resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8
    )
    if mask is None:
        return resized.copy()
    blend, _ = blend_masks(mask, feather_px)
    return composite(original, resized, blend)


def stylize_canvas_job(
    image: np.ndarray,
    mask: np.ndarray | None,
    feather_px: float,
    style: np.ndarray,
    settings: StyleSettings,
    vgg: VGG19Features,
    device: str = "auto",
    token: CancelToken | None = None,
) -> Generator[Progress, None, tuple[np.ndarray, StyleResult]]:
    """Job: ``image`` stylised whole (``mask`` None) or in :func:`mask_window` and blended
    through the feathered mask; returns the whole new image and the transfer's result."""
    window = mask_window(mask, feather_px) if mask is not None else None
    if mask is not None and window is None:
        raise StudioError("No mask painted: paint the region to stylize first.")
    where = window.slices if window is not None else (slice(None), slice(None))
    crop = np.ascontiguousarray(image[where])
    request = StyleRequest(crop, style, settings)
    result = yield from stylize_job(request, device=device, token=token, vgg=vgg)
    out = np.array(image, dtype=np.uint8)
    out[where] = blend_result(crop, result.image, None if mask is None else mask[where], feather_px)
    return out, result
