"""Find the odd ones out: score every image of a folder with a trained run and rank them.

A run's family says how it scores an image (``GenerativeModel.score_options``: reconstruction
error, negative ELBO, bits/dim, denoising error, projection error; higher = more unusual);
:func:`studio.models.scoring.anomaly_scores` computes them, the family's own way or derived
from its capabilities. This module only reads the folder (the dataset scan, with its list of
skipped files), batches, reports progress, ranks, and writes the CSV.

Scores are measured without class labels, so they ask "is this like anything the model
learned", even for a conditional run. Random draws (diffusion's noise, a GAN's projection
starts) come from a CPU generator seeded from ``seed`` and the batch's index: the same folder,
seed and batch size give the same scores on any device.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from studio.core import atomic
from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.engine.data import (
    DEFAULT_MAX_PIXELS,
    SkippedFile,
    fit_square,
    load_dataset,
    open_image,
    scan_folder,
)
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.images import ImageRejected
from studio.engine.sample import load_run_model
from studio.models.base import GenerativeModel, images_to_uint8
from studio.models.capabilities import AnomalyScore
from studio.models.scoring import anomaly_scores, score_options

DEFAULT_BATCH = 16
THUMB = 64


@dataclass(frozen=True)
class ScoredImage:
    """One image's scores (name -> value, higher = more unusual) and its ``rank`` (1 = the
    most unusual by the report's ranking score). ``path`` is relative to the scored folder,
    ``/``-separated."""

    path: str
    scores: dict[str, float]
    rank: int


@dataclass(frozen=True)
class ScoreReport:
    """A scored folder: ``images`` ranked, most unusual first, by ``ranked_by``; the scores
    the run offers (``options``, its default first); the files the scan skipped."""

    root: Path
    run: Path
    family: str
    options: tuple[AnomalyScore, ...]
    ranked_by: str
    images: tuple[ScoredImage, ...]
    skipped: tuple[SkippedFile, ...]
    seed: int
    # With ``thumbnails=True``: each ranked image as the model saw it (N x T x T x 3 uint8,
    # T = the model's resolution, at most THUMB), in rank order, for a window's list.
    thumbnails: np.ndarray | None = None

    def values(self, name: str | None = None) -> np.ndarray:
        """The ``name`` score (default: the ranking one) of every image, in rank order."""
        key = name or self.ranked_by
        return np.array([img.scores[key] for img in self.images], dtype=np.float64)

    def above(self, threshold: float, name: str | None = None) -> list[ScoredImage]:
        """The images whose ``name`` score is at least ``threshold`` (the flagged ones)."""
        key = name or self.ranked_by
        return [img for img in self.images if not img.scores[key] < threshold]

    def option(self, name: str | None = None) -> AnomalyScore:
        key = name or self.ranked_by
        return next(o for o in self.options if o.name == key)


@dataclass(frozen=True)
class ScoreDetail:
    """One image looked at closely: its prepared pixels (R x R x 3 uint8), its scores, the
    model's reconstruction of it (R x R x 3 uint8) and the per-pixel error (R x R float32,
    squared error on the 0..1 scale) where the family's first score has them."""

    path: str
    image: np.ndarray
    scores: dict[str, float]
    reconstruction: np.ndarray | None
    error_map: np.ndarray | None


def choose_score(model: GenerativeModel, name: str | None) -> tuple[AnomalyScore, ...]:
    """The scores ``model`` offers, checked that ``name`` (None = the default) is one."""
    offered = score_options(model)
    if not offered:
        raise StudioError(f"{model.info.display_name} runs cannot score images.")
    if name and name not in {o.name for o in offered}:
        names = ", ".join(o.name for o in offered)
        raise StudioError(f"{model.info.display_name} runs offer the scores {names}, not {name!r}.")
    return offered


def to_model_input(images: np.ndarray, channels: int, device: torch.device) -> torch.Tensor:
    """N x R x R x 3 uint8 -> N x C x R x R in [-1, 1] (grey models get the luminance)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x * weights).sum(1, keepdim=True).round()
    return (x / 127.5 - 1.0).to(device)


def score_job(
    run_dir: str | Path,
    data_dir: str | Path,
    *,
    score: str | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    device: str = "auto",
    model: GenerativeModel | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    thumbnails: bool = False,
) -> Generator[Progress, None, ScoreReport]:
    """Job: score every usable image below ``data_dir`` with the run's model and rank them
    by ``score`` (a name the run's family offers; None = its default). Unreadable files are
    skipped and listed, as when training. Cancellable between batches. ``thumbnails``: keep
    a small copy of each image in the report (:attr:`ScoreReport.thumbnails`)."""
    if batch_size < 1:
        raise StudioError("The batch size must be at least 1.")
    run = Path(run_dir)
    yield Progress("load", message=f"Loading {run}")
    if model is None:
        model = load_run_model(run, resolve_device(device))
    model.eval()
    offered = choose_score(model, score)
    ranked_by = score or offered[0].name
    scan = yield from scan_folder(data_dir, max_pixels=max_pixels)
    scan.require_usable()
    resolution = int(model.config.resolution)
    data = yield from load_dataset(scan, resolution)
    total = len(data)
    values: dict[str, list[float]] = {o.name: [] for o in offered}
    channels = int(getattr(model.config, "channels", 3))
    for index, start in enumerate(range(0, total, batch_size)):
        chunk = data.images[start : start + batch_size]
        x = to_model_input(chunk, channels, model.device)
        result = anomaly_scores(model, x, None, cpu_generator(seed + 7919 * index))
        for o in offered:
            values[o.name].extend(float(v) for v in result.scores[o.name].reshape(-1))
        done = min(total, start + batch_size)
        yield Progress("score", done, total, f"Scoring images: {done}/{total}")
    order = sorted(range(total), key=lambda i: (_descending(values[ranked_by][i]), data.paths[i]))
    ranked = tuple(
        ScoredImage(data.paths[i], {name: v[i] for name, v in values.items()}, rank)
        for rank, i in enumerate(order, start=1)
    )
    return ScoreReport(
        root=Path(scan.root),
        run=run,
        family=model.info.display_name,
        options=offered,
        ranked_by=ranked_by,
        images=ranked,
        skipped=data.skipped,
        seed=seed,
        thumbnails=_thumbnails(data.images[order]) if thumbnails else None,
    )


def _thumbnails(images: np.ndarray) -> np.ndarray:
    if images.shape[1] <= THUMB:
        return images
    from PIL import Image

    size = (THUMB, THUMB)
    return np.stack(
        [np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BOX)) for a in images]
    )


def _descending(value: float) -> float:
    # Highest first; a score that is not a number (the model broke on that image) first of all.
    return -math.inf if math.isnan(value) else -value


def score_detail_job(
    model: GenerativeModel, root: str | Path, path: str, seed: int = 0
) -> Generator[Progress, None, ScoreDetail]:
    """Job: one image of a scored folder (``path`` relative to ``root``) with its scores, the
    model's reconstruction and the per-pixel error map, for a closer look."""
    yield Progress("score", 0, 1, f"Scoring {path}")
    try:
        rgb = open_image(Path(root) / path)
    except ImageRejected as err:
        raise StudioError(f"{path} cannot be read now: {err.reason}.") from None
    image = fit_square(rgb, int(model.config.resolution))
    channels = int(getattr(model.config, "channels", 3))
    x = to_model_input(image[None], channels, model.device)
    result = anomaly_scores(model, x, None, cpu_generator(seed))
    recon = None
    if result.reconstruction is not None:
        recon = images_to_uint8(result.reconstruction)[0].numpy()
        if recon.shape[-1] == 1:
            recon = np.repeat(recon, 3, axis=-1)
    error = None if result.error_map is None else result.error_map[0].float().numpy()
    yield Progress("score", 1, 1, f"Scored {path}")
    return ScoreDetail(
        path=path,
        image=image,
        scores={k: float(v[0]) for k, v in result.scores.items()},
        reconstruction=recon,
        error_map=error,
    )


# -- export -----------------------------------------------------------------------------------


def report_csv(report: ScoreReport, top: int | None = None) -> str:
    """The ranked list as CSV text: rank, path, then every score (the ranking one first)."""
    names = [report.ranked_by] + [o.name for o in report.options if o.name != report.ranked_by]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "path", *names])
    rows: Sequence[ScoredImage] = report.images if top is None else report.images[:top]
    for img in rows:
        writer.writerow([img.rank, img.path, *(f"{img.scores[n]:.6g}" for n in names)])
    return out.getvalue()


def write_csv(report: ScoreReport, path: str | Path, top: int | None = None) -> Path:
    """Write :func:`report_csv` to ``path`` atomically (a crash leaves any older file whole)."""
    target = Path(path)
    try:
        atomic.write_text(target, report_csv(report, top))
    except OSError as err:
        raise StudioError(f"Cannot write {target}: {err.strerror or err}.") from None
    return target
