"""Job factories for the Compare workspace. Each body runs on the engine thread."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from studio.core.jobs import CancelToken, Progress
from studio.qt.engine_jobs import Factory


def read_fingerprint(run: str | Path) -> str | None:
    """The dataset fingerprint a run's config.json records (None if unreadable)."""
    from studio.core.errors import StudioError
    from studio.engine.runs import RunFolder

    try:
        return RunFolder(run).read_config().get("dataset", {}).get("fingerprint")
    except (StudioError, OSError, AttributeError):
        return None


def default_runs(base: Path | None = None) -> Factory:
    """The newest run of each kind (the families' ``info.kind``: GAN, VAE, flow, diffusion,
    and any a plug-in adds) sharing the newest run's dataset, in the registry's order of
    kinds; the job returns their paths. ``list_runs`` reads checkpoints, hence a job."""

    def factory(token: CancelToken) -> Generator[Progress, None, list[Path]]:
        from studio.core.paths import runs_dir
        from studio.engine.runs import list_runs
        from studio.models.registry import family_keys, get_family

        def kind_of(key: str) -> str | None:
            try:
                return get_family(key).info.kind
            except Exception:  # noqa: BLE001 - an unknown or broken family is skipped
                return None

        kinds = list(dict.fromkeys(k for k in map(kind_of, family_keys()) if k))

        yield Progress("load", message="Looking for runs to compare")
        summaries = list_runs(base or runs_dir())  # newest first
        chosen: dict[str, Path] = {}
        first_fp: str | None = None
        for summary in summaries:
            token.check()
            kind = kind_of(summary.family)
            if kind is None or kind in chosen:
                continue
            fp = read_fingerprint(summary.path)
            if fp is None:
                continue
            if first_fp is None:
                first_fp = fp
            if fp == first_fp:
                chosen[kind] = summary.path
        return [chosen[k] for k in kinds if k in chosen]

    return factory


def compare(settings: dict[str, Any]) -> Factory:
    """Run :func:`studio.engine.compare.compare_job`; ``settings`` are CompareSettings fields,
    built into the dataclass here because importing the engine module imports torch."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.compare import CompareSettings, compare_job

        return (yield from compare_job(CompareSettings(**settings)))

    return factory


def prepare(settings: dict[str, Any]) -> Factory:
    """The first job of a comparison run between training steps: check the runs, read the
    dataset, get the feature extractor (:func:`studio.engine.compare.prepare_compare`)."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.compare import CompareSettings, prepare_compare

        return (yield from prepare_compare(CompareSettings(**settings)))

    return factory


def panel(prep: Any, index: int) -> Factory:
    """One panel, with the run's live weights when it trains (a peek), else its saved model."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.peek import compare_panel_peek

        return (yield from compare_panel_peek(prep, index))

    return factory


def report(prep: Any, panels: list[Any], notes: list[str]) -> Factory:
    """The last job: the CompareReport of the finished panels."""

    def factory(token: CancelToken) -> Generator[Progress, None, Any]:
        from studio.engine.compare import build_report

        yield Progress("report", message="Writing up the comparison")
        return build_report(prep, panels, notes)

    return factory


def keep_panels(progress: Progress) -> bool:
    """Finished panels are delivered one by one: the mailbox would coalesce them away."""
    return progress.stage == "panel"
