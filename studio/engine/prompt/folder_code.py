"""Refuse a diffusers folder that ships code or names code to run (:func:`check_folder_code`).

diffusers before 0.38 ran a Python file a folder named without asking, and a library named in
``model_index.json`` is imported by name, so this check is complete on its own rather than a
second opinion:

- Every entry at any depth is listed without following links. A link is resolved and must stay
  inside the folder (for a Hugging Face cache snapshot, ``<repo>/snapshots/<rev>``, the
  repository's ``blobs/`` counts as inside); one that leaves it, loops or dangles is refused.
- Only regular files and folders: a FIFO, socket or device is refused and never opened, so the
  check cannot hang on one.
- Code is refused by name, the link's and its target's: ``.py``, ``.pyc``, ``.pyd``, ``.so``.
- Every JSON file is read and searched at every depth for ``auto_map``, ``custom_pipeline`` and a
  ``_class_name`` that is not a plain class name. A JSON file too large or too deeply nested to
  check, or not valid JSON, is refused, never skipped.
- In ``model_index.json`` every ``[library, class]`` pair, the ``_``-keys included, must come
  from diffusers or transformers (or be empty).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from studio.engine.prompt.file_errors import (
    CorruptModelFile,
    ModelFileError,
    UnsafeModelError,
    open_regular,
)

SAFE_LIBRARIES = frozenset({"diffusers", "transformers"})
CODE_KEYS = ("auto_map", "custom_pipeline")
CODE_SUFFIXES = (".py", ".pyc", ".pyd", ".so")
MAX_JSON_BYTES = 64 * 1024 * 1024  # CLIP's tokenizer.json is ~2 MB, the largest known ~35 MB
MAX_ENTRIES = 20_000  # files and folders; a diffusers folder has a few dozen
_NEVER = "and Studio never runs code that comes with a model"


def check_folder_code(folder: str | os.PathLike[str]) -> None:
    """Refuse ``folder`` (:class:`UnsafeModelError`) if anything in it could make a loader run
    code; a damaged config is :class:`CorruptModelFile`. Nothing in the folder is imported."""
    folder = Path(folder)
    try:
        root = folder.resolve(strict=True)
    except (OSError, RuntimeError) as err:
        raise UnsafeModelError(f"{folder.name} cannot be read: {err}.", folder) from None
    roots = [root]
    if root.parent.name == "snapshots":  # huggingface_hub's cache: snapshots link into blobs/
        roots.append(root.parent.parent / "blobs")
    jsons: list[tuple[str, Path]] = []
    for rel, path in _entries(folder, root, roots):
        if rel.lower().endswith(".json"):
            jsons.append((rel, path))
    for rel, path in jsons:
        data = _read_json(folder, rel, path)
        _check_json(folder, rel, data)
        if rel == "model_index.json":
            _check_model_index(folder, data)


def _refuse(folder: Path, why: str) -> UnsafeModelError:
    return UnsafeModelError(f"{folder.name} is refused: {why}.", folder)


def _entries(folder: Path, root: Path, roots: list[Path]) -> list[tuple[str, Path]]:
    """(relative name, resolved path) of every regular file under ``root``; links checked."""
    out: list[tuple[str, Path]] = []
    stack: list[tuple[str, Path]] = [("", root)]
    seen = 0
    walked = {root}
    while stack:
        prefix, directory = stack.pop()
        try:
            names = sorted(os.listdir(directory))
        except OSError as err:
            raise _refuse(folder, f"{prefix or '.'} cannot be listed ({err.strerror})") from None
        for name in names:
            seen += 1
            if seen > MAX_ENTRIES:
                raise _refuse(
                    folder, f"it holds more than {MAX_ENTRIES:,} files, too many to check"
                )
            rel = f"{prefix}{name}"
            path = directory / name
            _check_name(folder, rel)
            mode = _lstat(folder, rel, path)
            if stat.S_ISLNK(mode):
                path = _follow(folder, rel, path, roots)
                _check_name(folder, rel, path.name)
                mode = _lstat(folder, rel, path)
            if stat.S_ISDIR(mode):
                if path not in walked:  # a link to a folder inside is walked where it lies
                    walked.add(path)
                    stack.append((f"{rel}/", path))
            elif stat.S_ISREG(mode):
                out.append((rel, path))
            else:
                raise _refuse(
                    folder,
                    f"{rel} is not a regular file (a pipe, socket or device), so Studio does not "
                    "open it",
                )
    return out


def _lstat(folder: Path, rel: str, path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError as err:
        raise _refuse(folder, f"{rel} cannot be read ({err.strerror})") from None


def _follow(folder: Path, rel: str, link: Path, roots: list[Path]) -> Path:
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        raise _refuse(folder, f"{rel} is a link that leads nowhere or in a loop") from None
    if not any(target == r or target.is_relative_to(r) for r in roots):
        raise _refuse(
            folder,
            f"{rel} is a link that leads out of the folder (to {target}), so Studio cannot "
            "check what a loader would find there",
        )
    return target


def _check_name(folder: Path, rel: str, name: str | None = None) -> None:
    if (name or rel).lower().endswith(CODE_SUFFIXES):
        raise _refuse(
            folder,
            f"it ships Python code ({rel}), {_NEVER}. Use a plain diffusers "
            "folder (configs and weights only)",
        )


def _read_json(folder: Path, rel: str, path: Path) -> Any:
    damaged = f"{folder.name}/{rel} is damaged"
    try:
        with open_regular(path) as fh:  # checked again on the open file: never a FIFO
            raw = fh.read(MAX_JSON_BYTES + 1)
    except ModelFileError:
        raise _refuse(folder, f"{rel} is not a regular file, so Studio does not open it") from None
    except OSError as err:
        raise _refuse(folder, f"{rel} cannot be read ({err.strerror})") from None
    if len(raw) > MAX_JSON_BYTES:
        raise _refuse(
            folder,
            f"{rel} is larger than {MAX_JSON_BYTES // (1024 * 1024)} MB, too large to check for "
            "code a loader might run",
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise _refuse(folder, f"{rel} nests too deeply to check") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise CorruptModelFile(
            f"{damaged} ({type(err).__name__}); re-download or re-export it.", folder
        ) from None


def _check_json(folder: Path, rel: str, data: Any) -> None:
    """``auto_map``/``custom_pipeline`` anywhere, and ``_class_name`` that is not a string."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in CODE_KEYS:
                    raise _refuse(folder, f"{rel} asks for custom code ({key!r}), {_NEVER}")
                if key == "_class_name" and not (value is None or isinstance(value, str)):
                    raise _refuse(
                        folder,
                        f"{rel} names its pipeline as {_short(value)} rather than a diffusers "
                        f"class: that is custom pipeline code, {_NEVER}",
                    )
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _check_model_index(folder: Path, data: Any) -> None:
    if not isinstance(data, dict):
        raise CorruptModelFile(
            f"{folder.name}/model_index.json is not a table; re-download or re-export it.", folder
        )
    for name, value in data.items():
        if not isinstance(value, (list, tuple)) or not value:
            continue
        library = value[0]
        if library is None or library in SAFE_LIBRARIES or _is_diffusers_pipeline_module(library):
            continue
        raise _refuse(
            folder,
            f"its component {name!r} comes from {_short(library)}, not from diffusers or "
            "transformers, and loading it would run code that is not part of them",
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_diffusers_pipeline_module(name: Any) -> bool:
    """``["stable_diffusion", "StableDiffusionSafetyChecker"]``: a module of diffusers itself."""
    import importlib.util

    if not isinstance(name, str) or not name.isidentifier():
        return False
    try:
        return importlib.util.find_spec(f"diffusers.pipelines.{name}") is not None
    except (ImportError, ValueError):
        return False
