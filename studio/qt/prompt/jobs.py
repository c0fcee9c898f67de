"""Job factories for the Prompt workspace. Each factory body runs on the engine thread.

Every model call, pipeline load, model inspection and file read the workspace needs is here,
so the GUI thread never waits for torch, diffusers or the disk. The engine's prompt modules
are imported inside the bodies (they import torch). Results are plain dataclasses.

Pipelines stay loaded between generations in the engine's default pipeline cache, which
lives as long as the process and is only touched from the engine thread.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from studio.core.jobs import CancelToken, Progress
from studio.qt.canvas.jobs import thumbnail
from studio.qt.engine_jobs import Factory

THUMB = 112
HISTORY_LIMIT = 200


def waiting_text(training: tuple[int, int] | None) -> str:
    """What a generation queued behind another job says: the training run's step when one
    trains here, else that the engine is busy with another job."""
    if training is None:
        return "Waiting for the engine's current job to finish — it will start then"
    step, total = training
    of = f" of {total:,}" if total else ""
    return f"Waiting for training to finish (step {step:,}{of}) — it will start then"


@dataclass(frozen=True)
class ConsentNeeded:
    """A pickled checkpoint needs the user's consent before it is read (weights-only)."""

    path: str
    message: str


@dataclass(frozen=True)
class ModelListing:
    entries: list[Any]  # studio.engine.prompt.library.ModelEntry
    added: Any = None  # the entry just added, if any
    warning: str = ""  # the library file was damaged and set aside, say


@dataclass(frozen=True)
class PromptResult:
    """Finished images (full size), their thumbnails, metadata, seeds and history PNGs."""

    images: list[np.ndarray]
    thumbnails: list[np.ndarray]
    metadata: list[dict[str, Any]]
    seeds: list[int]
    paths: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryItem:
    path: str
    metadata: dict[str, Any]
    thumbnail: np.ndarray | None


@dataclass(frozen=True)
class GridResult:
    """The labelled grid, its shape in cells and the metadata its PNG carries."""

    image: np.ndarray
    rows: int
    cols: int
    metadata: dict[str, Any] | None = None


def _thumb(image: np.ndarray, size: int = THUMB) -> np.ndarray:
    h, w = image.shape[:2]
    return thumbnail(image, (0, h, 0, w), size)


def _consent(err: Exception) -> ConsentNeeded:
    return ConsentNeeded(str(getattr(err, "path", "") or ""), str(err))


def _is_consent_error(err: BaseException) -> bool:
    from studio.engine.prompt import files

    cls = getattr(files, "PickleConsentRequired", None)
    return cls is not None and isinstance(err, cls)


# -- the model library -----------------------------------------------------------------------


def list_models() -> Factory:
    def factory(token: CancelToken) -> Generator[Progress, None, ModelListing]:
        from studio.engine.prompt.library import ModelLibrary

        yield Progress("models", message="Reading the model library")
        library = ModelLibrary()
        return ModelListing(list(library.entries()), warning=library.warning)

    return factory


def add_model(path: str | Path) -> Factory:
    """Inspect ``path`` (a diffusers folder or a checkpoint file) and add it to the library."""

    def factory(token: CancelToken) -> Generator[Progress, None, ModelListing | ConsentNeeded]:
        from studio.engine.prompt.library import ModelLibrary

        yield Progress("models", message=f"Inspecting {Path(path).name}")
        library = ModelLibrary()
        try:
            entry = library.add(path)
        except Exception as err:
            if _is_consent_error(err):
                return _consent(err)
            raise
        return ModelListing(list(library.entries()), entry)

    return factory


def library_entry(path: str | Path) -> Factory:
    """The library's entry for ``path`` as stored now (no rescan; None if it is not there):
    after a load found what an unread pickle is, the model list shows it (see
    :func:`studio.engine.prompt.library.record_architecture`)."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.prompt.library import ModelLibrary

        yield Progress("models", message="Reading the model library")
        return ModelLibrary().find(path)

    return factory


def remove_model(entry_id: str) -> Factory:
    def factory(token: CancelToken) -> Generator[Progress, None, ModelListing]:
        from studio.engine.prompt.library import ModelLibrary

        yield Progress("models", message="Removing the model from the library")
        library = ModelLibrary()
        library.remove(entry_id)
        return ModelListing(list(library.entries()))

    return factory


def release_models() -> Factory:
    """Unload the loaded Stable Diffusion pipelines and free their memory; the result is a line
    saying what was freed."""

    def factory(token: CancelToken) -> Generator[Progress, None, str]:
        generate = sys.modules.get("studio.engine.prompt.generate")
        if generate is None:  # nothing was ever generated in this process
            yield Progress("models", message="Unloading models")
            return "No model was loaded."
        return (yield from generate.release_models_job(token))

    return factory


# -- generation ------------------------------------------------------------------------------


def build_request(fields: dict[str, Any], image: Any = None, mask: Any = None) -> Any:
    """A :class:`~studio.engine.prompt.request.GenerateRequest` (imports the engine)."""
    from studio.engine.prompt.request import GenerateRequest

    return GenerateRequest(**fields, image=image, mask=mask)


def generate(
    fields: dict[str, Any],
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    *,
    allow_pickle: bool = False,
) -> Factory:
    """Generate with the request ``fields`` (every GenerateRequest field but the arrays);
    ``image`` and ``mask`` must be private copies. Each image is saved to the history."""

    def factory(token: CancelToken) -> Generator[Progress, None, PromptResult | ConsentNeeded]:
        from studio.engine.prompt.generate import default_cache, generate_job

        request = build_request(fields, image, mask)
        try:
            result = yield from generate_job(
                request, token, allow_pickle=allow_pickle, pipeline_cache=default_cache()
            )
        except Exception as err:
            if _is_consent_error(err):
                return _consent(err)
            raise
        token.check()
        yield Progress("save", message="Saving to the history")
        paths = _save_history(result)
        return PromptResult(
            images=list(result.images),
            thumbnails=[_thumb(im) for im in result.images],
            metadata=[dict(m) for m in result.metadata],
            seeds=[int(s) for s in result.seeds],
            paths=paths,
        )

    return factory


def _save_history(result: Any) -> list[str]:
    """Each image as a PNG with its metadata in the generation history."""
    from studio.engine.prompt import history

    existing = getattr(result, "paths", None)
    if existing:  # the engine saved them already
        return [str(p) for p in existing]
    return [str(history.save_generation(im, md)) for im, md in zip(result.images, result.metadata)]


def xy_grid(
    fields: dict[str, Any],
    x_axis: tuple[str, Sequence[Any]],
    y_axis: tuple[str, Sequence[Any]],
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    *,
    allow_pickle: bool = False,
) -> Factory:
    def factory(token: CancelToken) -> Generator[Progress, None, GridResult | ConsentNeeded]:
        from studio.engine.prompt.generate import default_cache
        from studio.engine.prompt.xygrid import xy_grid_job

        request = build_request(fields, image, mask)
        try:
            grid = yield from xy_grid_job(
                request, x_axis, y_axis, token, allow_pickle=allow_pickle,
                pipeline_cache=default_cache(),
            )  # fmt: skip
        except Exception as err:
            if _is_consent_error(err):
                return _consent(err)
            raise
        return GridResult(
            np.asarray(grid.image, dtype=np.uint8), grid.rows, grid.cols, grid.metadata or None
        )

    return factory


# -- files -----------------------------------------------------------------------------------


def read_png_params(path: str | Path) -> Factory:
    """The studio metadata a PNG carries (None when it carries none)."""

    def factory(token: CancelToken) -> Generator[Progress, None, dict[str, Any] | None]:
        from studio.engine.prompt.pngmeta import read_png_metadata

        yield Progress("read", message=f"Reading {Path(path).name}")
        return read_png_metadata(path)

    return factory


def load_history(limit: int = HISTORY_LIMIT) -> Factory:
    """The newest generations, newest first, with thumbnails."""

    def factory(token: CancelToken) -> Generator[Progress, None, list[HistoryItem]]:
        from studio.engine.prompt.history import list_history

        yield Progress("history", message="Reading the generation history")
        items = []
        for entry in list_history(limit):
            token.check()
            small = _read_thumb(Path(entry.thumbnail or entry.path))
            items.append(HistoryItem(str(entry.path), dict(entry.metadata), small))
        return items

    return factory


def _read_thumb(path: Path) -> np.ndarray | None:
    from studio.engine.images import ImageRejected, open_checked

    try:
        with open_checked(path, formats=("PNG",)) as img:
            img.thumbnail((THUMB, THUMB))
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (ImageRejected, OSError, ValueError):
        return None  # a generation whose PNG was deleted, damaged or too large still lists


def save_png(
    image: np.ndarray, path: str | Path, metadata: dict[str, Any] | None = None
) -> Factory:
    """Write ``image`` to ``path`` atomically, with ``metadata`` when given."""

    def factory(token: CancelToken) -> Generator[Progress, None, str]:
        import io

        from PIL import Image

        from studio.core.atomic import write_bytes

        yield Progress("save", message=f"Saving {Path(path).name}")
        if metadata is not None:
            from studio.engine.prompt import pngmeta

            data = pngmeta.png_bytes(image, metadata)
        else:
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
            data = buf.getvalue()
        write_bytes(path, data)
        return str(path)

    return factory
