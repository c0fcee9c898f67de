"""A small progress bar for the terminal (no monitor thread, no dependency)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TextIO

from studio.core.jobs import Progress, TrainStatus


def safe_console() -> None:
    """Make stdout and stderr print any text: a character the console cannot encode (a file
    name that is not valid UTF-8, on a strict UTF-8 console) comes out as a backslash escape
    instead of ending the command with ``UnicodeEncodeError``."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        # A closed or detached stream has nothing to print to.
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors="backslashreplace")


class ProgressPrinter:
    """Prints one self-updating line per stage on a terminal, plain lines otherwise."""

    def __init__(
        self, stream: TextIO | None = None, min_interval: float = 0.2, quiet: bool = False
    ) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.min_interval = min_interval
        self._last = 0.0
        self._stage = ""
        self._info: dict = {}
        self._metrics: dict = {}

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        if p.info:
            self._info = dict(p.info)
        if p.metrics:
            self._metrics = {k: v for k, v in p.metrics.items() if k != "diversity"}
        now = time.monotonic()
        final = p.total is not None and p.step >= p.total
        if p.message and p.total is None and not p.metrics and p.image is None:
            self._line(p.message, newline=True)
            return
        if p.stage != self._stage or final or now - self._last >= self.min_interval:
            self._stage = p.stage
            self._last = now
            self._line(self._format(p), newline=not self.tty or final)

    def _format(self, p: Progress) -> str:
        parts = [f"{p.stage:>6}"]
        if p.message and p.stage != "train":
            parts = [p.message.split(":")[0]]
        if p.total:
            width = 24
            filled = int(width * min(1.0, p.step / p.total))
            parts.append(f"[{'#' * filled}{'.' * (width - filled)}] {p.step}/{p.total}")
        else:
            parts.append(str(p.step))
        if p.stage == "train":
            status = TrainStatus.read(self._info)
            if status.phase:
                parts.append(status.phase)
            if status.images_per_s:
                parts.append(f"{status.images_per_s:,.0f} img/s")
            if status.eta_s is not None:
                parts.append(f"ETA {format_duration(status.eta_s)}")
            parts.extend(f"{k}={v:.4g}" for k, v in list(self._metrics.items())[:4])
        return "  ".join(parts)

    def _line(self, text: str, newline: bool) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if newline else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
