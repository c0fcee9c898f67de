"""Job factories of the Dataset workspace's *Odd ones out* tab. Nothing here touches a widget;
the factory bodies run on a worker thread, so torch and the models load there."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.flagged import MoveLog, Placed, Transfer, TransferResult, transfer_job
from studio.core.jobs import CancelToken, Progress
from studio.qt.engine_jobs import Factory


@dataclass(frozen=True)
class Scored:
    """A scored folder (``studio.engine.score.ScoreReport``) and the model that scored it,
    kept for the closer look at one image (only ever used on the engine thread)."""

    report: Any
    model: Any


def score_folder(run: str, folder: str, seed: int = 0) -> Factory:
    def factory(token: CancelToken) -> Generator[Progress, None, Scored]:
        from studio.engine.device import resolve_device
        from studio.engine.sample import load_run_model
        from studio.engine.score import score_job

        yield Progress("load", message=f"Loading {Path(run).name}")
        model = load_run_model(run, resolve_device("auto"))
        job = score_job(run, folder, seed=seed, model=model, thumbnails=True)
        report = yield from job
        return Scored(report, model)

    return factory


def look_closer(model: Any, root: str, path: str, seed: int = 0) -> Factory:
    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.score import score_detail_job

        return (yield from score_detail_job(model, root, path, seed))

    return factory


def export_csv(report: Any, path: str) -> Factory:
    def factory(token: CancelToken) -> Generator[Progress, None, Path]:
        from studio.engine.score import write_csv

        yield Progress("export", 0, 1, f"Writing {Path(path).name}")
        return write_csv(report, path)

    return factory


def copy_or_move(
    files: list[str], root: str, target: str, action: Transfer, placed: list[Placed]
) -> Factory:
    """``placed`` fills as files go (the caller records moves even if the job is stopped)."""

    def factory(token: CancelToken) -> Generator[Progress, None, TransferResult]:
        return (yield from transfer_job(files, root, target, action, placed))

    return factory


def undo_move(log: MoveLog) -> Factory:
    def factory(token: CancelToken) -> Generator[Progress, None, TransferResult]:
        yield Progress("export", 0, 1, "Moving the files back")
        return log.undo()

    return factory
