"""Upscaling an image of any size with a super-resolution run (``studio upscale``).

A large image is cut into overlapping square tiles (``tile`` input pixels a side, overlapping
by a quarter of that); each tile is upscaled on its own, from its own seeded noise, and the
outputs are blended with a window that ramps linearly from the tile's edges over the overlap:
every output pixel is the weighted mean of the tiles that cover it, so where two tiles
disagree the result fades from one to the other instead of showing a seam. The window never
reaches zero, so pixels at the image's own borders (covered by one tile) keep that tile's
value exactly. ``tile`` 0 upscales the whole image in one piece.

:func:`tiled` is the blend on its own, for any per-tile function (tests use stand-ins);
:func:`upscale_job` is the job: a run's model, progress per network pass, cancel between
passes, one clear sentence when memory runs out (with a smaller tile to try).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.core.options import UPSCALE_TILE
from studio.engine.device import resolve_device
from studio.engine.runs import RunFolder
from studio.models.base import Capability, GenerativeModel, images_to_uint8
from studio.models.registry import get_family

DEFAULT_TILE = UPSCALE_TILE  # input pixels a side
MIN_TILE = 16
MAX_WHOLE_SIDE = 512  # input pixels beyond which ``tile`` 0 (one piece) is refused
MAX_OUTPUT_PIXELS = 8192 * 8192  # the blend's float canvas: about 1 GiB at this size

#: One tile's upscaling: (1 x C x h x w input in [-1, 1], tile index) -> a generator that
#: yields (passes done, passes in all) and returns 1 x C x h*s x w*s.
TileFn = Callable[[torch.Tensor, int], Generator[tuple[int, int], None, torch.Tensor]]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of ``tile`` pixels covering ``length``, each overlapping the next by at
    least ``overlap`` (the last one flush with the end)."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp(length: int, width: int) -> torch.Tensor:
    """A window over ``length`` pixels rising linearly over ``width`` pixels at each end,
    1 between, never 0: (i + 0.5) / width near the edges."""
    i = torch.arange(length, dtype=torch.float64)
    edge = torch.minimum(i + 0.5, length - 0.5 - i)
    return (edge / max(width, 1)).clamp(max=1.0)


def tiled(
    image: torch.Tensor, scale: int, tile: int, fn: TileFn, overlap: int | None = None
) -> Generator[Progress, None, torch.Tensor]:
    """Upscale ``image`` (1 x C x H x W in [-1, 1]) by ``scale`` with ``fn`` tile by tile,
    blended with :func:`ramp` windows; ``tile`` 0 or at least the image: one piece."""
    _, c, h, w = image.shape
    if tile <= 0 or (tile >= h and tile >= w):
        steps = fn(image, 0)
        out = yield from _passes(steps, 0, 1)
        return out
    overlap = max(1, tile // 4) if overlap is None else overlap
    if not 0 < overlap < tile:
        raise ValueError(f"the overlap must be between 1 and {tile - 1} px, not {overlap}")
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    acc = torch.zeros(c, h * scale, w * scale, dtype=torch.float32)
    weight = torch.zeros(1, h * scale, w * scale, dtype=torch.float32)
    count = len(ys) * len(xs)
    index = 0
    for y in ys:
        for x in xs:
            piece = image[..., y : y + tile, x : x + tile]
            out = yield from _passes(fn(piece, index), index, count)
            th, tw = out.shape[-2:]
            win = (ramp(th, overlap * scale)[:, None] * ramp(tw, overlap * scale)[None]).float()
            ty, tx = y * scale, x * scale
            acc[:, ty : ty + th, tx : tx + tw] += out[0].float().cpu() * win
            weight[:, ty : ty + th, tx : tx + tw] += win
            index += 1
    return (acc / weight)[None]


def _passes(
    steps: Generator[tuple[int, int], None, torch.Tensor], index: int, count: int
) -> Generator[Progress, None, torch.Tensor]:
    while True:
        try:
            done, total = next(steps)
        except StopIteration as end:
            return end.value
        message = f"Upscaling tile {index + 1} of {count}" if count > 1 else "Upscaling"
        yield Progress("sample", index * total + done, count * total, message=message)


# -- the job ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upscaler:
    """A run that enlarges images, as the Canvas offers it: its folder, its family's name and
    how many times larger (each side) its outputs are."""

    path: Path
    display_name: str
    scale: int


def check_upscales(run_dir: str | Path) -> Upscaler:
    """The run at ``run_dir`` if its family enlarges images (read from its config.json,
    before any weights load); one sentence saying why not otherwise."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise StudioError(f"There is no run at {run.path} (no config.json).")
    key = str(run.read_config().get("family", ""))
    try:
        family = get_family(key)
    except KeyError:
        raise StudioError(f"The run {run.path} is of an unknown model family {key!r}.") from None
    caps = family.info.capabilities
    scale = 1
    if Capability.SINGLE_FOLDER in caps and family.translates_any_size:
        try:
            cfg = run.train_config()
            config = family.Config.from_dict({**cfg.model, "resolution": cfg.resolution})
            scale = family.scale_for(config)
        except (TypeError, ValueError, KeyError) as err:
            raise StudioError(
                f"The run {run.path} has settings that cannot be read: {err}"
            ) from None
    if scale < 2:
        raise StudioError(
            f"The run {run.path} is a {family.info.display_name} run, which does not upscale "
            "images: use a run of a super-resolution family (studio families lists them)."
        )
    return Upscaler(run.path, family.info.display_name, scale)


def upscaling_runs(paths: Sequence[str | Path]) -> list[Upscaler]:
    """The runs among ``paths`` that enlarge images, in order (others, and folders that are
    gone or unreadable, are left out)."""
    found = []
    for path in paths:
        try:
            found.append(check_upscales(path))
        except (StudioError, OSError, ValueError):
            continue
    return found


def check_size(height: int, width: int, scale: int, tile: int) -> None:
    """Refuse an image too large to upscale, with what to do instead."""
    if height * scale * width * scale > MAX_OUTPUT_PIXELS:
        side = int((MAX_OUTPUT_PIXELS**0.5) // scale)
        raise StudioError(
            f"The output would be {width * scale} x {height * scale} pixels, more than this "
            f"command holds in memory; scale the image to at most about {side} x {side} first."
        )
    if tile <= 0 and max(height, width) > MAX_WHOLE_SIDE:
        raise StudioError(
            f"The image ({width} x {height}) is too large to upscale in one piece: use tiles, "
            f"e.g. --tile {DEFAULT_TILE}."
        )
    if 0 < tile < MIN_TILE:
        raise StudioError(f"--tile must be at least {MIN_TILE} px (or 0: the whole image).")


def _out_of_memory(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate" in text or "not enough memory" in text
    )


def upscale_job(
    run_dir: str | Path,
    image: np.ndarray,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    tile: int = DEFAULT_TILE,
    device: str = "auto",
    model: GenerativeModel | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Job: ``image`` (``H x W x 3`` uint8) upscaled by the run's model, as ``H*s x W*s x C``
    uint8 (C: the run's channels). Same seed, same output."""
    from studio.engine.compress import as_channels
    from studio.engine.sample import load_run_model

    if model is None:
        check_upscales(run_dir)
        yield Progress("load", message=f"Loading {run_dir}")
        model = load_run_model(run_dir, resolve_device(device))
    scale = model.output_scale
    if Capability.SINGLE_FOLDER not in model.info.capabilities or scale < 2:
        raise StudioError(f"{model.info.display_name} does not upscale images.")
    arr = as_channels(np.asarray(image), model.config.channels)
    h, w = arr.shape[:2]
    check_size(h, w, scale, tile)
    x = torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
    options: dict[str, Any] = {"steps": steps, "sampler": sampler}
    options = {k: v for k, v in options.items() if v is not None}

    def one_tile(piece: torch.Tensor, index: int) -> Generator[tuple[int, int], None, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + index)
        passes = model.sample_iter(1, gen, image=piece, **options)
        while True:
            try:
                report = next(passes)
            except StopIteration as done:
                return done.value
            yield report.step, report.total

    model.eval()
    try:
        with torch.no_grad():
            out = yield from tiled(x, scale, tile, one_tile)
    except ValueError as err:  # the family's checks of its options (steps out of range, say)
        raise StudioError(f"{model.info.display_name} cannot upscale this image: {err}") from None
    except (RuntimeError, MemoryError) as err:
        if not _out_of_memory(err):
            raise
        smaller = max(MIN_TILE, (tile if tile > 0 else min(h, w, DEFAULT_TILE * 2)) // 2)
        raise StudioError(
            f"Not enough memory to upscale {'this tile' if tile > 0 else 'the image'} on "
            f"{model.device}: try a smaller tile, e.g. --tile {smaller}."
        ) from None
    return images_to_uint8(out).numpy()[0]


# -- the canvas ------------------------------------------------------------------------------------


def bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (``H x W x C`` uint8) resized bicubically to ``height x width``."""
    from PIL import Image

    arr = np.ascontiguousarray(image, dtype=np.uint8)
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    out = np.array(pil.resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def upscale_canvas_job(
    run_dir: str | Path,
    image: np.ndarray,
    mask: np.ndarray | None,
    feather_px: float,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    tile: int = DEFAULT_TILE,
    device: str = "auto",
    model: GenerativeModel | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Job: the canvas ``image`` (``H x W x 3`` uint8) enlarged by the run's scale ``s``, as
    ``H*s x W*s x 3`` uint8. Whole (``mask`` None): the model upscales every pixel (in tiles).
    Masked: the whole image is enlarged bicubically and the model upscales only the window
    around the mask (:func:`studio.engine.stylize.mask_window`), blended in through the mask
    enlarged with it and feathered ``feather_px * s`` output pixels, so only the painted
    region pays for the model and nothing outside the feather's reach differs from bicubic."""
    from studio.core.canvas import scale_mask
    from studio.core.regions import Rect
    from studio.engine.sample import load_run_model
    from studio.engine.stylize import blend_result, mask_window

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise StudioError(f"expected an H x W x 3 uint8 image, not {image.shape} {image.dtype}")
    window = mask_window(mask, feather_px) if mask is not None else None
    if mask is not None and window is None:
        raise StudioError("No mask painted: paint the region to upscale first.")
    if model is None:
        check_upscales(run_dir)
        yield Progress("load", message=f"Loading {Path(run_dir).name}")
        model = load_run_model(run_dir, resolve_device(device))
    s = model.output_scale
    h, w = image.shape[:2]
    check_size(h, w, s, tile)
    part = image if window is None else np.ascontiguousarray(image[window.slices])
    up = yield from upscale_job(run_dir, part, seed, steps, sampler, tile, device, model)
    if up.shape[2] == 1:  # a grey run: its output in the canvas's three channels
        up = np.repeat(up, 3, axis=2)
    if window is None or mask is None:
        return up
    out = bicubic(image, h * s, w * s)
    big = Rect(window.y0 * s, window.y1 * s, window.x0 * s, window.x1 * s)
    big_mask = scale_mask(mask, h * s, w * s)[big.slices]
    out[big.slices] = blend_result(out[big.slices], up, big_mask, feather_px * s)
    return out
