"""Jobs: generators that yield :class:`Progress` and return a result.

A job is a generator object. :func:`run_sync` drives it, checks the :class:`CancelToken` at every
yield and turns the way it ended into an :class:`Outcome`. The CLI, the tests and the Qt engine
thread all run jobs through :func:`run_sync`, so a job behaves the same everywhere.
"""

from __future__ import annotations

import enum
import numbers
import threading
import traceback
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from studio.core.errors import StudioError

R = TypeVar("R")


class Cancelled(Exception):
    """Raised inside a job when its token was cancelled."""


class Stage(str, enum.Enum):
    """What a job is doing when it reports (a ``str`` enum: ``Stage.TRAIN == "train"``).

    Jobs may pass the plain name (``Progress("load", ...)``); :class:`Progress` turns it into
    the member and refuses a name that is not here, so every reader can switch on the stage.
    """

    WORK = "work"  # a job with no stage of its own (tests, small helpers)
    LOAD = "load"  # reading a dataset, a model or a run; messages for the log
    SCAN = "scan"
    DEMO = "demo"
    TRAIN = "train"
    PAUSED = "paused"
    SAVE = "save"
    SAMPLE = "sample"
    DECODE = "decode"
    ENCODE = "encode"
    INPAINT = "inpaint"
    STYLIZE = "stylize"  # neural style transfer's iterations
    GENERATE = "generate"  # a Stable Diffusion (or prompt-run) image
    GRID = "grid"  # an X/Y grid of generations
    MODELS = "models"  # the prompt model library
    HISTORY = "history"
    SETTINGS = "settings"
    READ = "read"
    PROJECT = "project"  # a GAN's latent projection of an image
    INVERT = "invert"  # DDIM inversion
    DIRECTIONS = "directions"
    INTERPOLATE = "interpolate"
    ARITHMETIC = "arithmetic"
    MIX = "mix"  # layer (style) mixing of latents
    LABEL = "label"
    SLIDERS = "sliders"
    FIT = "fit"
    FEATURES = "features"  # the comparison's feature extractor
    WARMUP = "warmup"
    PANEL = "panel"  # one comparison panel finished
    SCORE = "score"
    REPORT = "report"
    EXPORT = "export"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Progress:
    """One report from a running job. Holds plain values and CPU numpy arrays only.

    ``step``/``total`` count the job's unit of work (images scanned, training steps, sampler
    steps). ``metrics`` are the named scalar values measured at ``step`` (loss components);
    ``image`` is an ``H x W x 3`` uint8 array (a sample grid or a preview); ``info`` carries
    status values such as images/s, ETA, device and memory (the mailbox keeps the newest).

    ``payload`` is what a job hands its caller mid-job: a typed, frozen dataclass defined
    beside the job (one finished comparison panel, :class:`studio.engine.compare.PanelDone`;
    one scanned thumbnail, :class:`studio.engine.data.Thumbnail`). A caller reads it with
    ``isinstance``; a ``keep`` filter delivers such reports one by one, payload intact.
    """

    stage: Stage
    step: int = 0
    total: int | None = None
    message: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    image: Any = None
    info: Mapping[str, Any] = field(default_factory=dict)
    payload: object | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.stage, Stage):
            try:
                object.__setattr__(self, "stage", Stage(self.stage))
            except ValueError:
                raise ValueError(f"unknown progress stage {self.stage!r}") from None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, self.step / self.total))


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (numpy's included), else None."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return float(value) if real else None


@dataclass(frozen=True)
class TrainStatus:
    """The training job's status values, read from ``Progress.info`` in one place.

    They stay in ``info`` (the mailbox keeps the newest, so a report without them does not
    blank the status line); :meth:`read` turns them into typed fields, a missing or malformed
    value into its default. ``peek_cost`` is the share of training time spent on interleaved
    work (peeks, Explore decodes, Canvas inpaints...), ``peek_s`` its seconds so far and
    ``peek_kinds`` that share per kind of work, largest first.
    """

    images_per_s: float | None = None
    eta_s: float | None = None
    device: str = ""
    memory: int | None = None  # bytes in use on the device
    peek_cost: float = 0.0
    peek_s: float = 0.0
    peek_kinds: tuple[tuple[str, float], ...] = ()
    phase: str = ""  # a curriculum's stage ("growing: 16 px stable"), "" when none

    @classmethod
    def read(cls, info: Mapping[str, Any]) -> TrainStatus:
        memory = _number(info.get("memory"))
        return cls(
            images_per_s=_number(info.get("images_per_s")),
            eta_s=_number(info.get("eta_s")),
            device=str(info.get("device") or ""),
            memory=int(memory) if memory else None,
            peek_cost=_number(info.get("peek_cost")) or 0.0,
            peek_s=_number(info.get("peek_s")) or 0.0,
            peek_kinds=_kinds(info.get("peek_kinds")),
            phase=str(info.get("phase") or ""),
        )


def _kinds(value: Any) -> tuple[tuple[str, float], ...]:
    """``{"Explore": 0.15, "Canvas": 0.09}`` as ``(("Explore", 0.15), ("Canvas", 0.09))``,
    largest first; anything malformed left out."""
    if not isinstance(value, Mapping):
        return ()
    pairs = [(str(k), _number(v)) for k, v in value.items()]
    kept = [(k, v) for k, v in pairs if v is not None and v >= 0]
    return tuple(sorted(kept, key=lambda kv: (-kv[1], kv[0])))


class CancelToken:
    """Shared between a job and whoever asked for it; safe to use from any thread.

    ``cancel()`` aborts at the next yield, and the job returns nothing that looks like a
    result. ``stop()`` asks a job that can end gracefully (training) to finish early and keep
    its work (a final checkpoint). ``pause()``/``resume()`` hold a job between steps.
    """

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    # -- asked by the owner --------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()  # a paused job must wake up to notice

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        if not self._cancel.is_set() and not self._stop.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    # -- read by the job -----------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set() or self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled."""
        if self._cancel.is_set():
            raise Cancelled()

    def wait_while_paused(self, poll: float = 0.1) -> None:
        """Block while paused; return on resume, stop or cancel (then raise if cancelled)."""
        while not self._running.wait(poll):
            pass
        self.check()


class Status(enum.Enum):
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """How a job ended. ``result`` is set only when it finished; ``error`` is for the user."""

    status: Status
    result: R | None = None
    error: str | None = None
    details: str | None = None  # the traceback of an unexpected failure

    @property
    def ok(self) -> bool:
        return self.status is Status.FINISHED


Job = Generator[Progress, None, R]
ProgressCallback = Callable[[Progress], None]


def run_sync(
    job: Job[R], token: CancelToken | None = None, on_progress: ProgressCallback | None = None
) -> Outcome[R]:
    """Drive ``job`` to its end on the calling thread. The one way any job runs."""
    token = token or CancelToken()
    try:
        token.check()
        while True:
            progress = next(job)
            token.check()
            if on_progress is not None:
                on_progress(progress)
    except StopIteration as done:
        if token.cancelled:
            return Outcome(Status.CANCELLED)
        return Outcome(Status.FINISHED, result=done.value)
    except Cancelled:
        return Outcome(Status.CANCELLED)
    except StudioError as err:
        return Outcome(Status.FAILED, error=str(err))
    except MemoryError:
        return Outcome(
            Status.FAILED, error="Out of memory. Try a smaller batch size or resolution."
        )
    except Exception as err:  # noqa: BLE001 - a job must never take the engine thread down
        return Outcome(
            Status.FAILED,
            error=f"{type(err).__name__}: {err}",
            details=traceback.format_exc(),
        )
    finally:
        job.close()


class ProgressMailbox:
    """Coalesces progress between a fast producer and a slower consumer (newest wins).

    The producer calls :meth:`put` for every report; it returns True when the consumer must be
    woken (the box was empty), so at most one wake-up is ever queued. The consumer calls
    :meth:`take`, which returns the newest report and every metrics point since the last take,
    so a plot loses no points even when reports are dropped. The points buffer is bounded.
    """

    def __init__(self, max_points: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._latest: Progress | None = None
        self._image: Any = None
        self._points: list[tuple[int, Mapping[str, float]]] = []
        self._max_points = max_points

    def put(self, progress: Progress) -> bool:
        with self._lock:
            wake = self._latest is None
            self._latest = progress
            if progress.image is not None:
                self._image = progress.image
            if progress.metrics:
                self._points.append((progress.step, dict(progress.metrics)))
                if len(self._points) > self._max_points:
                    del self._points[: len(self._points) - self._max_points]
            return wake

    def take(self) -> tuple[Progress | None, Any, list[tuple[int, Mapping[str, float]]]]:
        """Return ``(latest, newest image since last take or None, metrics points)``."""
        with self._lock:
            latest, image, points = self._latest, self._image, self._points
            self._latest, self._image, self._points = None, None, []
            return latest, image, points
