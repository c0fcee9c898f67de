"""Job factories the window submits to the engine thread.

Each function returns a factory ``f(token) -> job generator``. The factory body runs on the
engine thread, so the heavy imports (torch, the models, Pillow decoding) happen there and the
GUI thread never waits for them. Nothing here touches a widget.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from studio.core.jobs import CancelToken, Progress

Factory = Callable[[CancelToken], Generator[Progress, None, Any]]
THUMBNAILS = 120
THUMB_SIZE = 96


def keep_messages(progress: Progress) -> bool:
    """Reports a log must show one by one (skipped files, checkpoints, pauses)."""
    return bool(progress.message)


def keep_thumbnails(progress: Progress) -> bool:
    """A scan's thumbnails (a :class:`studio.engine.data.Thumbnail` payload), one by one."""
    from studio.engine.data import Thumbnail  # numpy and Pillow: imported by the scan anyway

    return progress.image is not None and isinstance(progress.payload, Thumbnail)


# -- model families ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilySpec:
    """What the model picker and the settings form need to know about a family."""

    key: str
    kind: str
    display_name: str
    summary: str
    config_cls: type
    loss_names: tuple[str, ...] = ()
    group_title: str = ""  # the picker's heading (FamilyInfo.group_title)
    sampling_options: tuple[Any, ...] = ()  # studio.models.capabilities.SamplingOption
    origin: str = ""  # built-in, or the plug-in's distribution
    # The family's advice from logged metrics (GenerativeModel.diagnose: pure Python, cheap
    # enough for the GUI thread); None: no advice.
    diagnose: Any = None
    # Trains on pairs of images from two folders (Capability.PAIRED, not SINGLE_FOLDER): the
    # Train form asks for folder B.
    paired: bool = False
    # Learns from two unpaired folders (Capability.UNPAIRED): folder B is required, unmatched.
    unpaired: bool = False


@dataclass(frozen=True)
class FamilyListing:
    families: tuple[FamilySpec, ...]
    broken: tuple[tuple[str, str], ...] = ()  # (key, why it could not be loaded)


#: The newest listing's families by key (filled by the describe_families job), so a workspace
#: can read a family's declared options on the GUI thread without importing torch.
KNOWN_FAMILIES: dict[str, FamilySpec] = {}


def known_family(key: str) -> FamilySpec | None:
    return KNOWN_FAMILIES.get(key)


def describe_families() -> Factory:
    """Import every registered family (and with it torch) and the trainer, and describe the
    families."""

    def factory(token: CancelToken) -> Generator[Progress, None, FamilyListing]:
        from studio.models.base import Capability
        from studio.models.registry import family_sources, get_family

        yield Progress("load", message="Loading the model families")
        specs, broken = [], []
        for key, source in family_sources().items():
            token.check()
            try:
                family = get_family(key)
                info = family.info
            except Exception as err:  # noqa: BLE001 - one broken family must not hide the rest
                broken.append((key, f"{type(err).__name__}: {err}"))
                continue
            specs.append(
                FamilySpec(
                    key,
                    info.kind,
                    info.display_name,
                    info.summary,
                    family.Config,
                    tuple(info.loss_names),
                    info.group_title,
                    tuple(family.sampling_options),
                    source.origin,
                    family.diagnose,
                    Capability.PAIRED in info.capabilities
                    and Capability.SINGLE_FOLDER not in info.capabilities,
                    Capability.UNPAIRED in info.capabilities,
                )
            )
        # The trainer's modules too, now, while the window is still starting: imported at the
        # first Start instead, they would hold the GIL for ~100 ms just as the user clicks.
        import studio.engine.train  # noqa: F401

        global KNOWN_FAMILIES
        KNOWN_FAMILIES = {spec.key: spec for spec in specs}  # one assignment: no torn reads
        return FamilyListing(tuple(specs), tuple(broken))

    return factory


# -- datasets ----------------------------------------------------------------------------------


def base_run_choices(requirements: dict[str, Any], also: tuple[str, ...] = ()) -> Factory:
    """For each run setting (name -> ``RunRequirement``), the runs it accepts, newest first,
    as (label, folder) pairs: the runs folder's runs and the runs in ``also`` (the recent
    runs the window remembers)."""

    def factory(token: CancelToken) -> Generator[Progress, None, dict[str, list[tuple[str, str]]]]:
        from studio.core.errors import StudioError
        from studio.core.paths import runs_dir
        from studio.engine.checkpoint import latest_checkpoint, read_trainer_state
        from studio.engine.runs import RunFolder, RunSummary, list_runs
        from studio.models.registry import get_family

        yield Progress("load", message="Finding runs to build on")
        summaries = list_runs(runs_dir())
        seen = {s.path.resolve() for s in summaries}
        for extra in also:
            token.check()
            run = RunFolder(extra)
            if not run.exists() or run.path.resolve() in seen:
                continue
            try:
                cfg = run.train_config()
                latest = latest_checkpoint(run.state_dir)
                step = int(read_trainer_state(latest)["step"]) if latest else 0
            except (StudioError, OSError, KeyError, TypeError, ValueError):
                continue
            seen.add(run.path.resolve())
            summaries.append(RunSummary(run.path, cfg.family, step, cfg.steps, cfg.data))
        out: dict[str, list[tuple[str, str]]] = {}
        for name, requires in requirements.items():
            rows = []
            for s in summaries:
                try:
                    info = get_family(s.family).info
                except KeyError:
                    continue
                if requires.accepts(s.family, info.capabilities):
                    label = f"{s.path.name} ({info.display_name}, step {s.step:,})"
                    rows.append((label, str(s.path)))
            out[name] = rows
        return out

    return factory


def scan(folder: str | Path, thumbnails: int = THUMBNAILS) -> Factory:
    """Check every image in ``folder``; the first ``thumbnails`` come back as thumbnails."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.data import scan_folder

        return (yield from scan_folder(Path(folder), thumbnails=thumbnails, thumb_size=THUMB_SIZE))

    return factory


def demo_dataset() -> Factory:
    """Make the built-in demo dataset if needed; the job returns its folder."""

    def factory(token: CancelToken) -> Generator[Progress, None, Path]:
        from studio.engine.demo import ensure_demo_dataset

        yield Progress("demo", message="Preparing the demo dataset")
        return (yield from ensure_demo_dataset())

    return factory


# -- training ----------------------------------------------------------------------------------


def train_new(run_dir: Path, config: Any) -> Factory:
    """Train a new run (``config`` is a :class:`studio.engine.runs.TrainConfig`)."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.core.paths import cache_dir
        from studio.engine.train import train_job

        yield from _make_room_for_training(config.device)
        return (yield from train_job(run_dir, token, config, cache_dir=cache_dir()))

    return factory


def train_resume(run_dir: Path, steps: int, device: str | None = None) -> Factory:
    """Continue ``run_dir`` until ``steps`` in total."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.core.paths import cache_dir
        from studio.engine.train import train_job

        yield from _make_room_for_training(device)
        return (
            yield from train_job(
                run_dir, token, None, steps=steps, cache_dir=cache_dir(), device_override=device
            )
        )

    return factory


def train_continue(
    run_dir: Path,
    folder: str,
    replay: float,
    ewc: float,
    steps: int,
    device: str | None = None,
) -> Factory:
    """Switch ``run_dir`` to ``folder`` and train it there to ``steps`` in total, with the
    replay share and EWC lambda (studio.engine.continual)."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.core.paths import cache_dir
        from studio.engine.switch import continue_job

        yield from _make_room_for_training(device)
        job = continue_job(
            run_dir, token, folder, replay=replay, ewc=ewc, steps=steps,
            cache_dir=cache_dir(), device_override=device,
        )  # fmt: skip
        return (yield from job)

    return factory


def _make_room_for_training(device: str | None) -> Generator[Progress, None, None]:
    """A Stable Diffusion model the Prompt workspace left on the GPU is unloaded before training
    there. Nothing happens (and diffusers is not imported) if no generation ever ran."""
    cache = sys.modules.get("studio.engine.prompt.cache")
    if cache is None:
        return
    line = cache.make_room_for_training(device)
    if line:
        yield Progress("load", message=line)


@dataclass(frozen=True)
class RunSnapshot:
    """A run folder as the window shows it when opened."""

    path: Path
    family: str
    config: dict[str, Any]
    columns: dict[str, tuple[np.ndarray, np.ndarray]]  # metrics.jsonl as {name: (steps, values)}
    metrics_offset: int
    grid: np.ndarray | None
    grid_step: int | None
    step: int
    steps: int
    messages: list[str] = field(default_factory=list)


def open_run(run_dir: str | Path) -> Factory:
    """Read a run's settings, its metrics and its newest sample grid."""

    def factory(token: CancelToken) -> Generator[Progress, None, RunSnapshot]:
        from studio.engine.runs import RunFolder
        from studio.qt.series import columns

        run = RunFolder(run_dir)
        yield Progress("load", message=f"Opening {run.path.name}")
        config = run.read_config()  # raises CheckpointError with a message for the user
        records, offset = run.read_metrics()
        token.check()
        metric_columns = columns(records)  # here, not on the GUI thread: runs can be long
        grid, grid_step, messages = None, None, []
        grids = run.sample_grids()
        if grids:
            try:
                grid = _read_png(grids[-1])
                grid_step = int(grids[-1].stem.rpartition("_")[2])
            except (OSError, ValueError) as err:
                messages.append(f"The newest sample grid could not be read: {err}")
        step = _checkpoint_step(run.state_dir)
        train = config.get("train", {})
        return RunSnapshot(
            path=run.path,
            family=str(config.get("family", train.get("family", ""))),
            config=config,
            columns=metric_columns,
            metrics_offset=offset,
            grid=grid,
            grid_step=grid_step,
            step=step,
            steps=int(train.get("steps", 0)),
            messages=messages,
        )

    return factory


def _read_png(path: Path) -> np.ndarray:
    from studio.engine.images import ImageRejected, open_checked

    try:
        with open_checked(path, formats=("PNG",)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except ImageRejected as err:
        raise ValueError(str(err)) from None


def _checkpoint_step(state_dir: Path) -> int:
    from studio.engine import checkpoint

    latest = checkpoint.latest_checkpoint(state_dir)
    if latest is None:
        return 0
    try:
        return int(checkpoint.read_trainer_state(latest)["step"])
    except (KeyError, TypeError, ValueError, OSError):
        return 0
