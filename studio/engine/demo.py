"""The built-in demo dataset: coloured shapes, one class folder per shape, with captions.

It lets a new user train something within minutes without finding images first, and gives
the tests a dataset whose content is known. Drawing is plain Pillow on a supersampled canvas,
so 3000 images at 64 px take a few seconds on one core.

Layout::

    folder/circle/00000.png    folder/circle/00000.txt   -> "small red circle on blue"
    ...
    folder/.studio-demo.json   -> written last: its presence means the folder is complete
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Generator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from studio.core.atomic import write_json
from studio.core.jobs import Progress
from studio.core.paths import demo_dir

DEMO_VERSION = 1
MARKER_NAME = ".studio-demo.json"
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (245, 220, 50),
    "green": (50, 170, 70),
    "cyan": (60, 200, 220),
    "blue": (40, 80, 210),
    "purple": (140, 60, 190),
    "pink": (240, 130, 180),
    "brown": (120, 75, 40),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}
SIZES: dict[str, float] = {"small": 0.18, "medium": 0.27, "large": 0.37}  # radius / side

_SUPERSAMPLE = 4  # draw 4x larger, then box-reduce: cheap anti-aliasing
_REPORT_EVERY = 50
_MIN_DISTANCE = 140.0  # Euclidean RGB distance between a shape and its background...
_MIN_LUMA_GAP = 35.0  # ...and a brightness gap, so hue-only pairs (orange on pink) are out
_OUR_FILE = re.compile(r"^\d+\.(png|txt)$")


def _luma(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _contrasting_pairs() -> list[tuple[str, str]]:
    """Every (shape colour, background colour) pair that is easy to tell apart."""
    return [
        (fg, bg)
        for fg, fg_rgb in PALETTE.items()
        for bg, bg_rgb in PALETTE.items()
        if math.dist(fg_rgb, bg_rgb) >= _MIN_DISTANCE
        and abs(_luma(fg_rgb) - _luma(bg_rgb)) >= _MIN_LUMA_GAP
    ]


_PAIRS = _contrasting_pairs()


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Corner points of a polygonal shape of outer radius ``r``, rotated by ``angle``."""
    if shape == "square":
        pts = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == "triangle":
        pts = [(-math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
    elif shape == "star":
        pts = [(-math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else r * 0.45) for k in range(10)]
    elif shape == "cross":
        w = 0.33  # half-width of the arms, relative to r
        corners = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1)]
        corners += [(-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        return [_rotate(cx, cy, x * r * 0.9, y * r * 0.9, angle) for x, y in corners]
    else:
        raise ValueError(shape)
    return [_rotate(cx, cy, rad * math.cos(a), rad * math.sin(a), angle) for a, rad in pts]


def _rotate(cx: float, cy: float, x: float, y: float, angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    return (cx + x * c - y * s, cy + x * s + y * c)


def draw_shape_image(index: int, size: int = 64, seed: int = 0) -> tuple[Image.Image, str, str]:
    """Draw demo image ``index``; return ``(image, shape, caption)``.

    Each image depends only on ``(seed, index)``, so a bigger dataset starts with the same
    images as a smaller one.
    """
    rng = np.random.default_rng([seed, index])
    shape = SHAPES[index % len(SHAPES)]  # balanced classes
    size_name = list(SIZES)[int(rng.integers(len(SIZES)))]
    fg, bg = _PAIRS[int(rng.integers(len(_PAIRS)))]
    big = size * _SUPERSAMPLE
    r = SIZES[size_name] * big * float(rng.uniform(0.9, 1.1))
    slack = max(0.0, big / 2 - r * 1.05)  # keep the whole shape inside the image
    cx = big / 2 + float(rng.uniform(-slack, slack)) * 0.8
    cy = big / 2 + float(rng.uniform(-slack, slack)) * 0.8
    angle = math.radians(float(rng.uniform(-20.0, 20.0)))

    img = Image.new("RGB", (big, big), PALETTE[bg])
    draw = ImageDraw.Draw(img)
    colour = PALETTE[fg]
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(1, round(r * 0.35)))
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=colour)
    return img.reduce(_SUPERSAMPLE), shape, f"{size_name} {fg} {shape} on {bg}"


def _clear_ours(folder: Path) -> None:
    """Remove what a previous (maybe interrupted) run created; leave anything else alone."""
    with contextlib.suppress(FileNotFoundError):
        (folder / MARKER_NAME).unlink()
    if not folder.is_dir():
        return
    for item in folder.iterdir():
        if item.name.startswith(f"{MARKER_NAME}.") and item.name.endswith(".tmp"):
            item.unlink(missing_ok=True)  # a temp file of an interrupted atomic write
    for shape in SHAPES:
        sub = folder / shape
        if not sub.is_dir():
            continue
        for item in sub.iterdir():
            if _OUR_FILE.match(item.name) and item.is_file():
                item.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: the user put files there
            sub.rmdir()


def make_demo_dataset(
    folder: str | os.PathLike[str], *, count: int = 3000, size: int = 64, seed: int = 0
) -> Generator[Progress, None, Path]:
    """Job: write ``count`` demo PNGs of ``size`` px with captions into ``folder``.

    Removes the files of an earlier demo first, and writes the completion marker last, so a
    cancelled or crashed run never looks complete (see :func:`demo_is_complete`).
    """
    if count < 1 or size < 8:
        raise ValueError("the demo needs count >= 1 and size >= 8")
    folder = Path(folder)
    _clear_ours(folder)
    for shape in SHAPES:
        (folder / shape).mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(count - 1)))
    yield Progress(stage="demo", step=0, total=count, message="Drawing the demo images")
    for i in range(count):
        img, shape, caption = draw_shape_image(i, size, seed)
        stem = folder / shape / f"{i:0{width}d}"
        img.save(stem.with_suffix(".png"), format="PNG", compress_level=6)
        stem.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        done = i + 1
        if done % _REPORT_EVERY == 0 or done == count:
            yield Progress(
                stage="demo",
                step=done,
                total=count,
                message=f"Drawing the demo images: {done}/{count}",
            )
    marker = {"count": count, "size": size, "seed": seed, "version": DEMO_VERSION}
    write_json(folder / MARKER_NAME, {**marker, "shapes": list(SHAPES)})
    return folder


def demo_is_complete(
    folder: str | os.PathLike[str],
    *,
    count: int | None = None,
    size: int | None = None,
    seed: int | None = None,
) -> bool:
    """True when ``folder`` holds a finished demo dataset of the current version.

    ``count``, ``size`` and ``seed``, when given, must also match the finished dataset.
    """
    folder = Path(folder)
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("version") != DEMO_VERSION:
        return False
    wanted = {"count": count, "size": size, "seed": seed}
    if any(value is not None and marker.get(key) != value for key, value in wanted.items()):
        return False
    expected = marker.get("count")
    if not isinstance(expected, int) or expected < 1:
        return False
    # Cheap check that the images are still there (a user may have tidied the folder).
    found = 0
    for shape in SHAPES:
        try:
            with os.scandir(folder / shape) as it:
                found += sum(
                    1 for item in it if _OUR_FILE.match(item.name) and item.name.endswith(".png")
                )
        except OSError:
            return False
    return found == expected


def ensure_demo_dataset(
    folder: str | os.PathLike[str] | None = None,
    *,
    count: int = 3000,
    size: int = 64,
    seed: int = 0,
) -> Generator[Progress, None, Path]:
    """Job: return the demo folder (default :func:`studio.core.paths.demo_dir`), making it
    first when it is missing, incomplete or made with other settings. A complete one is
    returned at once, without yielding."""
    target = Path(folder) if folder is not None else demo_dir()
    if demo_is_complete(target, count=count, size=size, seed=seed):
        return target
    return (yield from make_demo_dataset(target, count=count, size=size, seed=seed))
