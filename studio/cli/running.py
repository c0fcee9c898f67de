"""Running a job on the command line: a progress bar, Ctrl-C, and errors as one sentence.

The subcommand modules (``studio.cli.compare``, ``generate``, ``inpaint``) and ``main`` share
these; they live apart from ``main`` so no subcommand imports the module that imports it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Outcome, Status, run_sync


def run_job(job: Generator, token: CancelToken | None = None, graceful: bool = False) -> Any:
    """Run a job with a progress bar; Ctrl-C stops (graceful) or cancels it."""
    from studio.cli.progress import ProgressPrinter

    token = token or CancelToken()
    # In a multi-process launch only rank 0 draws the progress bar.
    quiet = int(os.environ.get("RANK", "0") or 0) > 0
    printer = ProgressPrinter(quiet=quiet)

    def on_sigint(_signum: int, _frame: Any) -> None:
        if graceful and not token.stop_requested:
            print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)
            token.stop()
        else:
            token.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        outcome: Outcome = run_sync(job, token, printer)
    finally:
        signal.signal(signal.SIGINT, previous)
        printer.close()
    if outcome.status is Status.CANCELLED:
        raise StudioError("cancelled")
    if outcome.status is Status.FAILED:
        if outcome.details:
            print(outcome.details, file=sys.stderr)
        raise StudioError(outcome.error or "failed")
    return outcome.result


def class_index(run: Path, value: str | None) -> int | None:
    """``--class`` as a name from the run's dataset, or as an index."""
    if value is None:
        return None
    from studio.engine.runs import RunFolder

    names: list[str] = []
    if RunFolder(run).exists():
        names = RunFolder(run).read_config().get("dataset", {}).get("class_names", [])
    if value in names:
        return names.index(value)
    try:
        return int(value)
    except ValueError:
        known = ", ".join(names) or "none"
        raise StudioError(
            f"--class {value!r}: not a class of this run (classes: {known})"
        ) from None
