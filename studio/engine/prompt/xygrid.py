"""X/Y grids: one image per pair of values of two parameters, in a labelled grid.

An axis is ``(name, values)``. Names: ``seed``, ``guidance``, ``steps``, ``scheduler`` (a name
from :data:`~studio.engine.prompt.request.SCHEDULERS`) and ``prompt_sr`` (prompt search and
replace: the first value is the text to find in the prompt, and each value in turn replaces
it, so the first cell is the prompt as written; the negative prompt is searched too). Values
may be given as text (from a form): they are converted and checked before anything runs.
Every cell is one image from :func:`~studio.engine.prompt.generate.generate_job` with the
request's own seed unless ``seed`` is an axis; all cells share one loaded pipeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress
from studio.engine.prompt.request import SCHEDULER_LABELS, SCHEDULERS, GenerateRequest

AXES = {
    "seed": "Seed",
    "guidance": "Guidance",
    "steps": "Steps",
    "scheduler": "Scheduler",
    "prompt_sr": "Prompt S/R",
}
MAX_CELLS = 100
LABEL_CHARS = 48

Axis = tuple[str, Sequence[Any]]


@dataclass
class XYGridResult:
    """The labelled grid, and each cell's image and metadata, row by row (y), then x."""

    image: np.ndarray
    cells: list[np.ndarray]
    cell_metadata: list[dict[str, Any]]
    rows: int
    cols: int
    x_labels: list[str]
    y_labels: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)  # for the grid's own PNG


def _convert(name: str, value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
    try:
        if name in ("seed", "steps"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if name == "guidance":
            return float(value)
    except (TypeError, ValueError):
        raise StudioError(
            f"X/Y grid: {value!r} is not a valid {AXES[name].lower()} value."
        ) from None
    if name == "scheduler":
        key = str(value).lower().replace(" ", "_").replace("+", "p")
        by_label = {label.lower(): k for k, label in SCHEDULER_LABELS.items()}
        key = key if key in SCHEDULERS else by_label.get(str(value).lower(), key)
        if key not in SCHEDULERS:
            raise StudioError(
                f"X/Y grid: unknown scheduler {value!r}; use one of {', '.join(SCHEDULERS)}."
            )
        return key
    return str(value)


def checked_axis(axis: Axis | None, request: GenerateRequest) -> tuple[str, list[Any]] | None:
    """The axis with its values converted, or StudioError saying what is wrong."""
    if axis is None:
        return None
    name, values = axis
    if name not in AXES:
        raise StudioError(f"X/Y grid: cannot vary {name!r}; choose one of {', '.join(AXES)}.")
    values = [_convert(name, v) for v in values]
    if not values:
        raise StudioError(f"X/Y grid: give at least one {AXES[name].lower()} value.")
    if name == "prompt_sr":
        if not values[0]:
            raise StudioError("X/Y grid: the first prompt S/R value (the text to find) is empty.")
        if values[0] not in request.prompt and values[0] not in request.negative_prompt:
            raise StudioError(
                f"X/Y grid: {values[0]!r} is not in the prompt; the first prompt S/R value is "
                "the text to find, the others replace it."
            )
    return name, values


def apply(
    request: GenerateRequest, axis: tuple[str, list[Any]] | None, value: Any
) -> GenerateRequest:
    if axis is None:
        return request
    name, values = axis
    if name == "prompt_sr":
        find = values[0]
        return dataclasses.replace(
            request,
            prompt=request.prompt.replace(find, value),
            negative_prompt=request.negative_prompt.replace(find, value),
        )
    return dataclasses.replace(request, **{name: value})


def label(axis: tuple[str, list[Any]] | None, value: Any) -> str:
    if axis is None:
        return ""
    name = axis[0]
    if name == "prompt_sr":
        text = str(value)
    elif name == "scheduler":
        text = f"{AXES[name]}: {SCHEDULER_LABELS[value]}"
    else:
        text = f"{AXES[name]}: {value:g}" if isinstance(value, float) else f"{AXES[name]}: {value}"
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def draw_grid(
    cells: list[np.ndarray], rows: int, cols: int, x_labels: list[str], y_labels: list[str]
) -> np.ndarray:
    """The cells (same size) in a rows x cols grid, x labels above, y labels on the left."""
    h, w = cells[0].shape[:2]
    font = _font(max(10, min(28, w // 12)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        if not text:
            return 0, 0
        box = probe.textbbox((0, 0), text, font=font)
        return box[2] - box[0], box[3] - box[1]

    pad = 6
    top = max((text_size(t)[1] for t in x_labels), default=0)
    left = max((text_size(t)[0] for t in y_labels), default=0)
    top = top + 2 * pad if top else 0
    left = left + 2 * pad if left else 0
    sheet = Image.new("RGB", (left + cols * w, top + rows * h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r in range(rows):
        for c in range(cols):
            sheet.paste(Image.fromarray(cells[r * cols + c]), (left + c * w, top + r * h))
    for c, text in enumerate(x_labels):
        tw, _ = text_size(text)
        draw.text((left + c * w + max(0, (w - tw) // 2), pad), text, fill=(0, 0, 0), font=font)
    for r, text in enumerate(y_labels):
        _, th = text_size(text)
        draw.text((pad, top + r * h + max(0, (h - th) // 2)), text, fill=(0, 0, 0), font=font)
    return np.asarray(sheet)


def xy_grid_job(
    request: GenerateRequest,
    x_axis: Axis,
    y_axis: Axis | None,
    token: CancelToken,
    *,
    library: Any = None,
    allow_pickle: bool = False,
    pipeline_cache: Any = None,
) -> Generator[Progress, None, XYGridResult]:
    """Render every (x, y) cell and return the labelled grid. ``y_axis`` None: one row."""
    from studio.engine.prompt.generate import generate_job

    base = dataclasses.replace(request, batch_count=1)
    x = checked_axis(x_axis, base)
    y = checked_axis(y_axis, base)
    if x is None:
        raise StudioError("X/Y grid: choose what the X axis varies.")
    xs, ys = x[1], (y[1] if y is not None else [None])
    if len(xs) * len(ys) > MAX_CELLS:
        raise StudioError(f"X/Y grid: {len(xs) * len(ys)} cells is too many (at most {MAX_CELLS}).")
    plan = [(apply(apply(base, x, xv), y, yv), xv, yv) for yv in ys for xv in xs]  # checks all
    totals = [req.denoising_steps for req, _, _ in plan]
    total, done = sum(totals), 0
    cells: list[np.ndarray] = []
    metas: list[dict[str, Any]] = []
    for k, (req, xv, yv) in enumerate(plan):
        job = generate_job(
            req, token, library=library, allow_pickle=allow_pickle, pipeline_cache=pipeline_cache
        )
        while True:
            try:
                p = next(job)
            except StopIteration as stop:
                result = stop.value
                break
            yield Progress(
                "grid",
                done + min(p.step if p.stage == "generate" else 0, totals[k]),
                total,
                message=f"Cell {k + 1}/{len(plan)}: {p.message}",
                image=p.image,
                info=p.info,
            )
        done += totals[k]
        image = result.images[0]
        if cells and image.shape != cells[0].shape:
            image = np.asarray(Image.fromarray(image).resize(cells[0].shape[1::-1], Image.LANCZOS))
        cells.append(image)
        meta = dict(result.metadata[0])
        meta["xy"] = {"x": [x[0], xv], "y": [y[0], yv] if y is not None else None}
        metas.append(meta)
    x_labels = [label(x, v) for v in xs]
    y_labels = [label(y, v) for v in ys] if y is not None else []
    grid = draw_grid(cells, len(ys), len(xs), x_labels, y_labels)
    summary = dict(base.to_metadata())
    summary["xy_grid"] = {
        "x": {"name": x[0], "values": xs},
        "y": {"name": y[0], "values": ys} if y is not None else None,
        "cells": metas,
    }
    return XYGridResult(grid, cells, metas, len(ys), len(xs), x_labels, y_labels, summary)
