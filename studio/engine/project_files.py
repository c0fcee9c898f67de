"""Opening and saving a project's files, as jobs for the engine thread (no Qt).

The manifest itself is :mod:`studio.core.project`; here are the file checks (does every run,
document and dataset folder it names exist on this machine) and Explore's kept latents,
``<project>/explore/kept.safetensors``: one ``z.<i>`` and one ``image.<i>`` tensor per kept
latent, in the tray's order, their names in the file's metadata. Safetensors only: nothing is
unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from studio.core import atomic
from studio.core.jobs import CancelToken, Progress
from studio.core.project import (
    MissingItem,
    Project,
    ProjectError,
    check_save_target,
    load_project,
    missing_items,
    save_project,
)

# A kept latent as the engine sees it: (name, latent vector, image H x W x 3 uint8).
Kept = tuple[str, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class OpenedProject:
    """A project read from disk: the manifest, what is missing, the kept latents read."""

    project: Project
    missing: list[MissingItem] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)


def save_kept(path: Path, items: Sequence[Kept]) -> None:
    """Write the kept latents atomically (an empty list removes nothing and writes nothing)."""
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    names = []
    for i, (name, z, image) in enumerate(items):
        names.append(str(name))
        tensors[f"z.{i}"] = np.ascontiguousarray(np.asarray(z, np.float32).reshape(-1))
        tensors[f"image.{i}"] = np.ascontiguousarray(np.asarray(image, np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"names": json.dumps(names)})


def load_kept(path: Path) -> list[Kept]:
    """The kept latents saved at ``path``; a file that is not ours is one clear error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            names = json.loads((f.metadata() or {}).get("names", "[]"))
            out: list[Kept] = []
            for i, name in enumerate(names):
                z, image = f.get_tensor(f"z.{i}"), f.get_tensor(f"image.{i}")
                if image.ndim != 3 or image.dtype != np.uint8:
                    raise ValueError(f"image {i} is not an H x W x 3 picture")
                out.append((str(name), z.astype(np.float32), image))
    except Exception as err:  # noqa: BLE001 - safetensors' own error is no OSError
        raise ProjectError(
            f"The project's kept latents ({path}) could not be read: {err}"
        ) from None
    return out


def open_project_job(path: str | Path) -> Any:
    """A job factory: read the project at ``path``, list what is missing, read kept latents."""

    def job(token: CancelToken) -> Generator[Progress, None, OpenedProject]:
        yield Progress("load", 0, 2, f"Reading the project {Path(path).name}")
        project = load_project(path)
        missing = missing_items(project)
        yield Progress("load", 1, 2, "Checking its files")
        kept: list[Kept] = []
        if project.kept_names and project.kept_path.is_file():
            kept = load_kept(project.kept_path)
        return OpenedProject(project, missing, kept)

    return job


def save_project_job(project: Project, kept: Sequence[Kept]) -> Any:
    """A job factory: write the kept latents, then the manifest (both atomically)."""
    items = [(n, np.array(z), np.array(im)) for n, z, im in kept]  # private copies

    def job(token: CancelToken) -> Generator[Progress, None, Path]:
        yield Progress("save", 0, 1, f"Saving the project {project.folder.name}")
        check_save_target(project.folder)  # before writing anything in the folder
        if items and not project.manifest_path.is_file():
            save_project(project)  # a new project's folder is claimed by its manifest first
        if items:
            project.kept_names = [name for name, _, _ in items]
            save_kept(project.kept_path, items)
        elif not project.kept_path.is_file():
            project.kept_names = []  # (names with no items: Explore's run was not open)
        return save_project(project)

    return job
