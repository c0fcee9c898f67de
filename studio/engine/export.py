"""``studio export``: a clean copy of a run for use outside the studio.

The job checks the run (a folder with ``config.json`` whose family declares the format in
``export_formats``) and the target before it loads anything, opens the run's model as every
command does (``load_run_model``), and has the family write its files
(``GenerativeModel.export_files``, see :mod:`studio.models.export`) into a hidden temp folder
beside the target. It adds the model card ``README.md`` (the family, the step, the training
settings, the dataset and its fingerprint, how to use the files, what does not carry over), the
sample grid ``samples.png`` (the run's latest grid, or one sampled for the card), the run's
``config.json`` as ``training.json``, and ``.studio-export.json``, which lists every file with
its size and SHA-256. The temp folder is then renamed to the target.

The target must be missing, an empty folder, or an earlier export (its list present and every
file in the folder listed and unchanged): nothing the studio did not write is replaced. An
earlier export is moved aside, the new one renamed in, then the old one removed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studio import __version__
from studio.core import atomic
from studio.core.errors import CheckpointError, StudioError
from studio.core.jobs import Progress
from studio.core.safefiles import printable

MARKER = ".studio-export.json"
MARKER_FORMAT = "studio-export"
CARD = "README.md"
GRID = "samples.png"
TRAINING = "training.json"
GRID_SIZE = 16


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, what it holds, and what the card says about it."""

    out: Path
    files: tuple[str, ...]
    step: int | None
    grid: str  # where the card's sample grid came from, in words ("" = no grid)
    replaced: bool  # an earlier export was replaced


# -- checks before anything is loaded ---------------------------------------------------------


def read_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``config.json``; a clear error for a missing folder or one that is not a run."""
    from studio.engine.runs import RunFolder

    run = RunFolder(run_dir)
    if not run.path.exists():
        raise StudioError(f"There is no run folder at {printable(run.path)}.")
    if not run.path.is_dir():
        raise StudioError(f"{printable(run.path)} is a file, not a run folder.")
    if not run.config_path.is_file():
        raise StudioError(f"{printable(run.path)} is not a Studio run folder (no config.json).")
    try:
        return run.read_config()
    except CheckpointError as err:
        raise StudioError(str(err)) from None


def check_format(family_key: str, fmt: str) -> Any:
    """The run's family class, when it exports ``fmt``; a sentence saying what it can do if not."""
    from studio.models.export import EXPORT_FORMATS
    from studio.models.registry import get_family

    if fmt not in EXPORT_FORMATS:
        raise StudioError(f"unknown export format {fmt!r}; choose {' or '.join(EXPORT_FORMATS)}")
    try:
        family = get_family(family_key)
    except (KeyError, TypeError, ImportError) as err:
        raise StudioError(f"The run's family cannot be opened: {str(err).strip(chr(39))}") from None
    formats = tuple(family.export_formats)
    name = family.info.display_name
    if not formats:
        raise StudioError(f"{name} runs ({family_key}) cannot be exported.")
    if fmt not in formats:
        raise StudioError(
            f"{name} runs ({family_key}) cannot be exported as {fmt}: they export as "
            f"{' or '.join(formats)} (use --format {formats[0]})."
        )
    return family


def _files(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            yield Path(root) / name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_target(out: Path) -> bool:
    """Whether ``out`` may receive the export: True when it is an earlier export of ours (to be
    replaced), False when it is missing or an empty folder; else a :class:`StudioError`."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise StudioError(f"{printable(out)} exists and is not a folder; choose a new folder.")
    if not out.exists() or not any(out.iterdir()):
        return False
    refusal = (
        f"{printable(out)} is not empty and is not a Studio export; choose an empty or new "
        "folder (nothing in it was changed)."
    )
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
        listed = {str(k): v for k, v in marker["files"].items()} if isinstance(marker, dict) else {}
    except (OSError, ValueError, KeyError, AttributeError):
        raise StudioError(refusal) from None
    if marker.get("format") != MARKER_FORMAT:
        raise StudioError(refusal)
    for path in _files(out):
        rel = path.relative_to(out).as_posix()
        if rel == MARKER:
            continue
        entry = listed.get(rel)
        if path.is_symlink() or not isinstance(entry, dict):
            raise StudioError(
                f"{printable(out)} is an earlier export, but {printable(rel)} in it was not "
                "written by the export; move it out or choose another folder (nothing was "
                "changed)."
            )
        if entry.get("size") != path.stat().st_size or entry.get("sha256") != _sha256(path):
            raise StudioError(
                f"{printable(out)} is an earlier export, but {printable(rel)} was changed since; "
                "choose another folder (nothing was changed)."
            )
    for dirpath, dirnames, _ in os.walk(out):  # links to folders are not followed by _files
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise StudioError(refusal)
    return True


# -- the job ------------------------------------------------------------------------------------


def run_step(run_dir: Path) -> int | None:
    """The step of the run's newest complete checkpoint (what ``model/`` was saved at), else
    the last step in its metrics, else None."""
    from studio.engine import checkpoint as ckpt
    from studio.engine.runs import RunFolder

    run = RunFolder(run_dir)
    latest = ckpt.latest_checkpoint(run.state_dir)
    if latest is not None:
        try:
            return int(ckpt.read_trainer_state(latest)["step"])
        except (OSError, ValueError, KeyError):
            pass
    records, _ = run.read_metrics()
    steps = [int(r["step"]) for r in records if isinstance(r.get("step"), int | float)]
    return max(steps) if steps else None


def export_job(
    run_dir: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    device: str = "cpu",
    seed: int = 0,
) -> Generator[Progress, None, ExportResult]:
    """Export the run at ``run_dir`` as ``fmt`` ("diffusers" or "safetensors") into ``out``."""
    from studio.engine.device import resolve_device
    from studio.engine.run_model import load_run_model
    from studio.models.export import ExportContext

    run_dir, out = Path(run_dir), Path(out)
    config = read_run(run_dir)
    family = check_format(str(config.get("family", "")), fmt)
    replacing = check_target(out)
    yield Progress("load", message=f"Loading {run_dir}")
    try:
        model = load_run_model(run_dir, resolve_device(device))
    except CheckpointError as err:
        raise StudioError(str(err)) from None
    dataset = config.get("dataset", {}) or {}
    context = ExportContext(class_names=tuple(str(c) for c in dataset.get("class_names", [])))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".export-tmp", dir=out.parent))
    try:
        yield Progress("save", message=f"Writing the {fmt} files")
        notes = model.export_files(tmp, fmt, context)
        yield Progress("sample", message="The sample grid")
        grid = _grid(run_dir, model, tmp / GRID, seed)
        atomic.write_json(tmp / TRAINING, config)
        step = run_step(run_dir)
        card = model_card(run_dir, family, fmt, config, step, notes, grid, _listing(tmp))
        atomic.write_text(tmp / CARD, card)
        files = {
            p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
            for p in _files(tmp)
        }
        marker = {
            "format": MARKER_FORMAT,
            "version": 1,
            "studio_version": __version__,
            "export_format": fmt,
            "run": str(run_dir.resolve()),
            "family": family.info.key,
            "step": step,
            "files": files,
        }
        atomic.write_json(tmp / MARKER, marker)
        _fsync_tree(tmp)
        _move_into_place(tmp, out, replacing)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temp folder
        raise
    return ExportResult(out, tuple(files), step, grid, replacing)


def _fsync_tree(folder: Path) -> None:
    for path in _files(folder):
        atomic.give_ordinary_mode(path)
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
    for root, _, _ in os.walk(folder):
        atomic.fsync_dir(Path(root))
    os.chmod(folder, 0o777 & ~atomic.current_umask())


def _move_into_place(tmp: Path, out: Path, replacing: bool) -> None:
    """Rename the finished temp folder to ``out``: over an empty folder, or with the earlier
    export (checked again, just before) moved aside and removed after."""
    if replacing:
        check_target(out)
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)  # the earlier export, every file ours
    else:
        if out.exists():
            out.rmdir()  # empty (checked); fails, changing nothing, if a file appeared since
        os.rename(tmp, out)
    atomic.fsync_dir(out.parent)


def _grid(run_dir: Path, model: Any, path: Path, seed: int) -> str:
    """The card's sample grid: the run's newest training grid, else a fresh one (seed ``seed``);
    where it came from, in words ("" when the family draws no samples on its own)."""
    from studio.engine.runs import RunFolder

    grids = RunFolder(run_dir).sample_grids()
    if grids:
        shutil.copyfile(grids[-1], path)
        return f"the run's latest training grid, samples/{grids[-1].name}"
    import torch

    from studio.core.imaging import make_grid
    from studio.engine.device import cpu_generator
    from studio.engine.monitor import save_png
    from studio.models.base import images_to_uint8

    try:
        with torch.no_grad():
            images = images_to_uint8(model.sample(GRID_SIZE, cpu_generator(seed))).numpy()
    except (ValueError, TypeError, NotImplementedError):
        return ""
    grid = make_grid(images)
    save_png(path, grid[..., 0] if grid.shape[-1] == 1 else np.ascontiguousarray(grid))
    return f"{GRID_SIZE} samples drawn for this card (seed {seed}, the default sampler)"


def _listing(folder: Path) -> list[str]:
    names = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            inner = ", ".join(sorted(p.name for p in entry.iterdir()))
            names.append(f"`{entry.name}/` ({inner})")
        else:
            names.append(f"`{entry.name}`")
    return names


# -- the model card -------------------------------------------------------------------------------


def _value(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    if len(text) > 120:
        text = text[:117] + "..."
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`" if text else "(empty)"


def _table(settings: dict[str, Any]) -> list[str]:
    rows = ["| Setting | Value |", "| --- | --- |"]
    rows += [f"| {k} | {_value(v)} |" for k, v in settings.items()]
    return rows


def model_card(
    run_dir: Path,
    family: Any,
    fmt: str,
    config: dict[str, Any],
    step: int | None,
    notes: Any,
    grid: str,
    files: list[str],
) -> str:
    """The export's ``README.md``: a model card in Markdown."""
    info = family.info
    dataset = config.get("dataset", {}) or {}
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# {run_dir.name}: {info.display_name}",
        "",
        f"A `{info.key}` model trained with Studio, exported as **{fmt}** on {when} by Studio "
        f"{__version__} from the run `{run_dir.name}`"
        + (f" at step {step}." if step is not None else "."),
        "",
        info.summary,
        "",
    ]
    if grid:
        lines += [f"![Samples]({GRID})", "", f"*{GRID}: {grid}.*", ""]
    lines += ["## Files", "", notes.layout, ""]
    lines += [f"- {name}" for name in files + [f"`{CARD}`", f"`{MARKER}`"]]
    lines += [
        "",
        f"`{TRAINING}` is the run's `config.json` (every training setting); `{MARKER}` lists "
        "each file with its SHA-256.",
        "",
    ]
    if notes.usage:
        usage = notes.usage.replace('"EXPORT', '"' + "path/to/this/folder")
        lines += ["## Use it without Studio", "", "```python", usage, "```", ""]
    for detail in notes.details:
        lines += [detail, ""]
    if notes.not_included:
        lines += ["## What does not carry over", ""]
        lines += [f"- {line}" for line in notes.not_included] + [""]
    lines += ["## Dataset", ""]
    for key, label in (
        ("path", "Folder"),
        ("fingerprint", "Fingerprint (paths, sizes and times of its files)"),
        ("images", "Images"),
        ("train_images", "Trained on"),
        ("held_out_images", "Held out"),
        ("skipped", "Skipped files"),
    ):
        if key in dataset:
            lines.append(f"- {label}: {_value(dataset[key])}")
    if dataset.get("class_names"):
        names = ", ".join(str(c) for c in dataset["class_names"])
        lines.append(f"- Classes (label order): {names}")
    lines += ["", "## Training settings", "", "### Model", ""]
    lines += _table(config.get("model", {}) or {})
    lines += ["", "### Training", ""]
    lines += _table(config.get("train", {}) or {})
    base = config.get("base_runs") or {}
    if base:
        lines += ["", "### Runs it builds on", ""]
        lines += [f"- {k}: {_value(v)}" for k, v in base.items()]
    versions = config.get("versions") or {}
    if versions:
        lines += ["", "Trained with " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    return "\n".join(lines) + "\n"
