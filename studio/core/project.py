"""A Studio project: one folder with a ``studio-project.json`` manifest (no torch, no Qt).

The manifest names what the artist was working on: the dataset (and the fingerprint of its
scan), the runs, the canvas documents (``.studio-canvas`` files), the Prompt settings and the
generation history they belong to, the Compare board (runs, seed, sample count) and Explore's
run with its kept latents (``explore/kept.safetensors``, beside the manifest; named sliders
live in the run folder, ``<run>/latent/``, so they travel with the run). Paths inside the
project folder are stored relative to it (with ``/``), so moving or copying the folder to
another machine keeps them working; a path elsewhere is stored absolute.

A project folder is the studio's: :func:`check_save_target` refuses a folder holding files
unless it already has a manifest, so saving never overwrites what the studio did not write.
The manifest is written atomically (:mod:`studio.core.atomic`). :func:`missing_items` names
everything the manifest refers to that is not on this machine, so a project whose runs are
gone still opens with the rest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from studio.core import atomic
from studio.core.errors import StudioError

MANIFEST = "studio-project.json"
FORMAT = "studio-project"
VERSION = 1
KEPT_FILE = "explore/kept.safetensors"
CANVAS_DIR = "canvas"
MAX_MANIFEST_BYTES = 10_000_000


class ProjectError(StudioError):
    """A project folder or manifest that cannot be opened or saved (the message says why)."""


@dataclass
class CompareBoard:
    """A comparison: the runs side by side, the seed and the number of samples."""

    runs: list[Path] = field(default_factory=list)
    seed: int = 0
    n: int = 0


@dataclass
class Project:
    """What a project holds, with every path absolute (resolved against its folder)."""

    folder: Path
    name: str = ""
    dataset: Path | None = None
    fingerprint: str = ""
    runs: list[Path] = field(default_factory=list)
    train_run: Path | None = None
    canvas: list[Path] = field(default_factory=list)
    canvas_open: Path | None = None
    prompt_model: str = ""
    prompt_settings: dict[str, Any] = field(default_factory=dict)
    prompt_history: Path | None = None
    compare: CompareBoard = field(default_factory=CompareBoard)
    explore_run: Path | None = None
    explore_sliders: list[str] = field(default_factory=list)
    kept_names: list[str] = field(default_factory=list)

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    @property
    def kept_path(self) -> Path:
        return self.folder / KEPT_FILE

    def all_runs(self) -> list[Path]:
        """Every run the project names (its list, Train's, Compare's, Explore's), once each."""
        out: list[Path] = []
        for run in [*self.runs, self.train_run, *self.compare.runs, self.explore_run]:
            if run is not None and run not in out:
                out.append(run)
        return out


@dataclass(frozen=True)
class MissingItem:
    """Something the manifest names that is not here: what it was and where it was looked for."""

    kind: str
    path: Path

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


# -- paths ---------------------------------------------------------------------------------
def relativise(path: Path | str | None, folder: Path) -> str | None:
    """``path`` relative to ``folder`` (``/``-separated) when inside it, else absolute."""
    if path is None or str(path) == "":
        return None
    p = Path(os.path.abspath(Path(path).expanduser()))
    base = Path(os.path.abspath(folder))
    try:
        rel = p.relative_to(base)
    except ValueError:
        return str(p)
    return rel.as_posix() or "."


def resolve(text: Any, folder: Path) -> Path | None:
    """A stored path as an absolute path: relative ones are taken from ``folder``."""
    if not isinstance(text, str) or not text:
        return None
    if "\\" in text and not Path(text).is_absolute() and not _is_windows_absolute(text):
        text = text.replace("\\", "/")
    p = Path(text)
    if p.is_absolute() or _is_windows_absolute(text):
        return p
    return Path(os.path.normpath(folder / PurePosixPath(text)))


def _is_windows_absolute(text: str) -> bool:
    return len(text) > 2 and text[1] == ":" and text[2] in "/\\"


def project_folder(path: str | Path) -> Path:
    """The project folder for ``path``: the folder itself, or the folder of a manifest."""
    p = Path(path).expanduser()
    if p.name == MANIFEST:
        p = p.parent
    return Path(os.path.abspath(p))


# -- manifest ------------------------------------------------------------------------------
def to_manifest(project: Project) -> dict[str, Any]:
    """The JSON object saved for ``project``: paths inside the folder made relative."""
    folder = project.folder

    def rel(p: Path | None) -> str | None:
        return relativise(p, folder)

    def rels(paths: list[Path]) -> list[str]:
        return [r for r in (rel(p) for p in paths) if r is not None]

    model = project.prompt_model
    if model and Path(model).is_absolute():
        model = rel(Path(model)) or ""
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": project.name or folder.name,
        "dataset": (
            {"path": rel(project.dataset), "fingerprint": project.fingerprint}
            if project.dataset is not None
            else None
        ),
        "runs": rels(project.all_runs()),
        "train": {"run": rel(project.train_run)},
        "canvas": {"documents": rels(project.canvas), "open": rel(project.canvas_open)},
        "prompt": {
            "model": model,
            "settings": _json_safe(project.prompt_settings),
            "history": rel(project.prompt_history),
        },
        "compare": {
            "runs": rels(project.compare.runs),
            "seed": int(project.compare.seed),
            "n": int(project.compare.n),
        },
        "explore": {
            "run": rel(project.explore_run),
            "sliders": list(project.explore_sliders),
            "kept": list(project.kept_names),
        },
    }


def from_manifest(data: Any, folder: Path) -> Project:
    """The project a manifest describes; anything that is no Studio project is refused."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ProjectError(f"{folder / MANIFEST} is not a Studio project file.")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise ProjectError(f"{folder / MANIFEST} has no valid version: it cannot be opened.")
    if version > VERSION:
        raise ProjectError(
            f"{folder / MANIFEST} was saved by a newer Studio (project version {version}; "
            f"this one reads up to {VERSION}): update Studio to open it."
        )

    def section(key: str) -> dict[str, Any]:
        value = data.get(key)
        return value if isinstance(value, dict) else {}

    def paths(value: Any) -> list[Path]:
        items = value if isinstance(value, list) else []
        return [p for p in (resolve(v, folder) for v in items) if p is not None]

    dataset = section("dataset")
    canvas, prompt, compare, explore = (
        section("canvas"),
        section("prompt"),
        section("compare"),
        section("explore"),
    )
    model = prompt.get("model") if isinstance(prompt.get("model"), str) else ""
    model_path = resolve(model, folder) if model and ("/" in model or "\\" in model) else None
    settings = prompt.get("settings")
    return Project(
        folder=folder,
        name=str(data.get("name") or folder.name),
        dataset=resolve(dataset.get("path"), folder),
        fingerprint=str(dataset.get("fingerprint") or ""),
        runs=paths(data.get("runs")),
        train_run=resolve(section("train").get("run"), folder),
        canvas=paths(canvas.get("documents")),
        canvas_open=resolve(canvas.get("open"), folder),
        prompt_model=str(model_path) if model_path is not None else str(model or ""),
        prompt_settings=dict(settings) if isinstance(settings, dict) else {},
        prompt_history=resolve(prompt.get("history"), folder),
        compare=CompareBoard(
            runs=paths(compare.get("runs")),
            seed=_int(compare.get("seed")),
            n=_int(compare.get("n")),
        ),
        explore_run=resolve(explore.get("run"), folder),
        explore_sliders=[str(s) for s in explore.get("sliders") or [] if isinstance(s, str)],
        kept_names=[str(s) for s in explore.get("kept") or [] if isinstance(s, str)],
    )


def load_project(path: str | Path) -> Project:
    """Read the project at ``path`` (its folder or its manifest); one clear error otherwise."""
    folder = project_folder(path)
    manifest = folder / MANIFEST
    if not folder.is_dir():
        raise ProjectError(f"There is no project folder at {folder}.")
    if not manifest.is_file():
        raise ProjectError(f"{folder} is not a Studio project: it has no {MANIFEST}.")
    try:
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            raise ProjectError(f"{manifest} is too large to be a Studio project file.")
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ProjectError(f"{manifest} could not be read as a Studio project: {err}") from None
    return from_manifest(data, folder)


def check_save_target(folder: str | Path) -> Path:
    """The folder, when a project may be saved there: missing, empty, or already a project.

    A folder holding anything else is refused, so saving never overwrites a file the studio
    did not write."""
    p = project_folder(folder)
    if p.exists() and not p.is_dir():
        raise ProjectError(f"{p} is a file, not a folder: choose a folder for the project.")
    if p.is_dir() and not (p / MANIFEST).is_file():
        try:
            has_files = any(p.iterdir())
        except OSError as err:
            raise ProjectError(f"{p} cannot be read: {err}") from None
        if has_files:
            raise ProjectError(
                f"{p} already holds other files: choose an empty folder for a new project."
            )
    if (p / MANIFEST).is_file():
        load_project(p)  # a foreign or newer manifest is not ours to replace
    return p


def save_project(project: Project) -> Path:
    """Write the manifest atomically (after :func:`check_save_target`); returns its path."""
    folder = check_save_target(project.folder)
    project.folder = folder
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_json(folder / MANIFEST, to_manifest(project))
    return folder / MANIFEST


# -- what is missing -----------------------------------------------------------------------
def missing_items(project: Project) -> list[MissingItem]:
    """Everything the project names that is not on this machine, each with what it was."""
    out: list[MissingItem] = []
    if project.dataset is not None and not project.dataset.is_dir():
        out.append(MissingItem("the dataset folder", project.dataset))
    for run in project.all_runs():
        if not (run / "config.json").is_file():
            out.append(MissingItem("the run", run))
    docs = list(project.canvas)
    if project.canvas_open is not None and project.canvas_open not in docs:
        docs.append(project.canvas_open)
    for doc in docs:
        if not doc.is_file():
            out.append(MissingItem("the canvas document", doc))
    if project.kept_names and not project.kept_path.is_file():
        out.append(MissingItem("Explore's kept latents", project.kept_path))
    return out


def missing_message(items: list[MissingItem]) -> str:
    """One sentence naming every missing item ("" when nothing is missing)."""
    if not items:
        return ""
    named = "; ".join(str(item) for item in items)
    return f"The project opened without what is missing on this computer: {named}."


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _json_safe(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that JSON can hold as they are (numbers, text, booleans, lists of them)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out
