"""Does the opened image look like the run's training images? A hint before inpainting.

A model only knows the kind of image it was trained on: a photograph given to a 32 px model
of coloured shapes gets poor results. This compares a few simple statistics of the image,
seen as the model sees it (centre square resized to the run's resolution), with the same
statistics of up to :data:`SAMPLE` training images: the colour histogram's distance to the
nearest training image's, the brightness, the contrast and the share of smooth areas
(neighbouring pixels alike: flat shapes have many, photographs few). A statistic far outside
what the training images themselves show is named.

Everything here runs on a worker thread (file reads, decoding); the training statistics are
computed once per run and kept for the session.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE = 64  # training images looked at
MAX_LISTED = 4000  # files listed before picking the sample, so a huge folder stays quick
LEVELS = 4  # histogram levels per channel (4^3 colour bins)
Z_LIMIT = 4.0  # a statistic this many (robust) deviations from the training images' is odd


@dataclass(frozen=True)
class TrainingStats:
    """The training images' statistics: their colour histograms and, per statistic,
    every sampled image's value (for colours: its distance to the nearest other one)."""

    resolution: int
    hists: np.ndarray  # (count, LEVELS**3), each sums to 1
    values: dict[str, np.ndarray]  # statistic -> one value per sampled image
    count: int


_CACHE: dict[str, TrainingStats] = {}
_LOCK = threading.Lock()

_NAMES = {
    "colours": "its colours",
    "brightness": "its brightness",
    "contrast": "its contrast",
    "smooth": "its share of smooth areas",
}


def _histogram(image: np.ndarray) -> np.ndarray:
    q = (image.astype(np.int32) * LEVELS) // 256
    codes = (q[..., 0] * LEVELS + q[..., 1]) * LEVELS + q[..., 2]
    hist = np.bincount(codes.ravel(), minlength=LEVELS**3).astype(np.float64)
    return hist / max(1.0, hist.sum())


def _scalars(image: np.ndarray) -> dict[str, float]:
    x = image.astype(np.float64) / 255.0
    alike = 3.0 / 255.0
    across = (np.abs(np.diff(x, axis=1)).max(axis=2) < alike).mean()
    down = (np.abs(np.diff(x, axis=0)).max(axis=2) < alike).mean()
    smooth = (across + down) / 2
    return {"brightness": float(x.mean()), "contrast": float(x.std()), "smooth": float(smooth)}


def _nearest(hist: np.ndarray, hists: np.ndarray, skip: int | None = None) -> float:
    d = 0.5 * np.abs(hists - hist).sum(axis=1)
    if skip is not None:
        d[skip] = np.inf
    return float(d.min())


def stats_from_images(images: list[np.ndarray], resolution: int) -> TrainingStats:
    """Statistics of ``images`` (each ``R x R x 3`` uint8, as the model sees them)."""
    hists = np.stack([_histogram(im) for im in images])
    values: dict[str, list[float]] = {
        "colours": [_nearest(h, hists, skip=i) for i, h in enumerate(hists)]
    }
    for im in images:
        for name, value in _scalars(im).items():
            values.setdefault(name, []).append(value)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    return TrainingStats(resolution, hists, arrays, len(images))


def unlike(image: np.ndarray, stats: TrainingStats) -> list[str]:
    """What about ``image`` (``R x R x 3`` uint8 at the stats' resolution) is far from the
    training images, in words; empty when nothing is."""
    found = {"colours": _nearest(_histogram(image), stats.hists), **_scalars(image)}
    reasons = []
    for name, value in found.items():
        train = stats.values[name]
        centre = float(np.median(train))
        spread = float(np.median(np.abs(train - centre))) * 1.4826
        # A floor on the spread: near-identical training images must not make any
        # difference look huge.
        spread = max(spread, 0.02, 0.1 * abs(centre))
        if name == "colours":  # one-sided: only further from every training image is odd
            odd = value > max(float(train.max()) * 1.1, centre + Z_LIMIT * spread)
        else:
            odd = abs(value - centre) > Z_LIMIT * spread
        if odd:
            reasons.append(_NAMES[name])
    return reasons


def _pick_files(folder: Path) -> list[Path]:
    from studio.engine.images import IMAGE_EXTENSIONS

    listed: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS and not path.is_symlink() and path.is_file():
            listed.append(path)
            if len(listed) >= MAX_LISTED:
                break
    if len(listed) <= SAMPLE:
        return listed
    idx = np.linspace(0, len(listed) - 1, SAMPLE).round().astype(int)
    return [listed[i] for i in idx]


def training_stats(run_dir: str | Path) -> TrainingStats | None:
    """The run's training-image statistics (computed once per run; worker thread). None when
    its training images cannot be read any more (moved, deleted)."""
    from studio.engine.images import ImageRejected, fit_square, open_image

    key = str(Path(run_dir).resolve())
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    train = config.get("train") or {}
    data = (config.get("dataset") or {}).get("path") or train.get("data")
    resolution = int(train.get("resolution") or 0)
    if not data or resolution <= 0 or not Path(data).is_dir():
        return None
    images = []
    for path in _pick_files(Path(data)):
        try:
            images.append(fit_square(open_image(path), resolution))
        except (ImageRejected, OSError, ValueError):
            continue
    if len(images) < 4:
        return None
    stats = stats_from_images(images, resolution)
    with _LOCK:
        _CACHE[key] = stats
    return stats


def familiarity_hint(run_dir: str | Path, image: np.ndarray) -> str:
    """The hint for ``image`` (any size, uint8 RGB) and the run: "" when it looks like the
    training images or they cannot be read. Worker thread."""
    from PIL import Image

    from studio.engine.images import fit_square

    stats = training_stats(run_dir)
    if stats is None:
        return ""
    seen = fit_square(Image.fromarray(np.ascontiguousarray(image[..., :3])), stats.resolution)
    reasons = unlike(seen, stats)
    if not reasons:
        return ""
    what = ", ".join(reasons[:-1]) + (" and " if len(reasons) > 1 else "") + reasons[-1]
    return (
        f"This image looks unlike the run's training images ({what} at "
        f"{stats.resolution} px differ from those of {stats.count} of them); results may be poor."
    )
