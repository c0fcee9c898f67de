"""Copy or move flagged images to a folder the user names, safely, and undo a move.

The guarantees, which ``tests/test_flagged.py`` checks:

* nothing is ever deleted and no existing file is ever overwritten: a name already taken in
  the target gets a free one (``cat (2).png``); a file keeps its path below the scored folder
  (``cats/a.png`` -> ``TARGET/cats/a.png``), so two ``a.png`` from two classes stay apart;
* a move that fails leaves the source where it was (a copy that was half written is removed;
  the source is removed only after its copy is complete and flushed to disk);
* moves are undoable until the app closes: :class:`MoveLog` keeps, in memory, where each file
  went, and :meth:`MoveLog.undo` moves the last batch back (to a free name if the original
  one was taken meanwhile);
* the target must not lie inside the scored folder (nor be it): moved there, the images would
  still belong to the dataset, and a subfolder would become a new class.

A move within one file system is a hard link then an unlink of the source (the link fails if
the name exists, so there is no window where a file could be overwritten); across file
systems, or where links are not supported, an exclusive-create copy, fsync, then the unlink.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import shutil
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from studio.core.errors import StudioError
from studio.core.jobs import Progress

_CHUNK = 1 << 20


class Transfer(str, enum.Enum):
    COPY = "copy"
    MOVE = "move"


@dataclass(frozen=True)
class Placed:
    """One file handled: from ``source`` to ``target`` (both absolute)."""

    source: Path
    target: Path


@dataclass(frozen=True)
class TransferResult:
    """What a copy or move did: the files ``done`` and those ``failed`` (path, why), each
    failed one still at its source."""

    action: Transfer
    done: tuple[Placed, ...] = ()
    failed: tuple[tuple[Path, str], ...] = ()

    def summary(self) -> str:
        verb = "Copied" if self.action is Transfer.COPY else "Moved"
        text = f"{verb} {len(self.done)} file{'s' if len(self.done) != 1 else ''}"
        if self.failed:
            text += f"; {len(self.failed)} failed and were left where they were"
        return text + "."


def check_target(target: str | os.PathLike[str], scored_root: str | os.PathLike[str]) -> Path:
    """``target`` resolved, refused (StudioError) when it is the scored folder or inside it,
    or exists and is not a folder."""
    folder = Path(os.path.realpath(Path(target).expanduser()))
    root = Path(os.path.realpath(Path(scored_root).expanduser()))
    if folder == root or folder.is_relative_to(root):
        raise StudioError(
            f"Choose a folder outside {root}: inside it, the images would still be part of "
            "the scored folder (and a subfolder would become a new class)."
        )
    if folder.exists() and not folder.is_dir():
        raise StudioError(f"{folder} is a file, not a folder.")
    return folder


def free_name(path: Path) -> Path:
    """``path`` if nothing is there, else ``stem (2).ext``, ``stem (3).ext``, ..."""
    if not os.path.lexists(path):
        return path
    for n in range(2, 100_000):
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise FileExistsError(errno.EEXIST, "no free name", str(path))


def transfer(
    files: Iterable[str],
    scored_root: str | os.PathLike[str],
    target: str | os.PathLike[str],
    action: Transfer,
) -> TransferResult:
    """Copy or move ``files`` (paths relative to ``scored_root``, ``/``-separated, as a score
    report lists them) into ``target``, keeping their relative paths. Each file that fails is
    reported and left in place; the others go on."""
    job = transfer_job(list(files), scored_root, target, action)
    while True:
        try:
            next(job)
        except StopIteration as done:
            return done.value


def transfer_job(
    files: Sequence[str],
    scored_root: str | os.PathLike[str],
    target: str | os.PathLike[str],
    action: Transfer,
    placed: list[Placed] | None = None,
) -> Generator[Progress, None, TransferResult]:
    """:func:`transfer` as a job, one report per file. Each file handled is also appended to
    ``placed`` as it goes, so a caller can record (and later undo) the moves made even when
    the job is cancelled midway."""
    root = Path(scored_root)
    folder = check_target(target, root)
    done: list[Placed] = [] if placed is None else placed
    failed: list[tuple[Path, str]] = []
    verb = "Copying" if action is Transfer.COPY else "Moving"
    for count, rel in enumerate(files, start=1):
        path = PurePosixPath(rel)
        source = root.joinpath(*path.parts)
        if not path.parts or ".." in path.parts or path.is_absolute():
            failed.append((source, "not a path inside the scored folder"))
        else:
            try:
                done.append(place(source, folder.joinpath(*path.parts), action))
            except OSError as err:
                failed.append((source, err.strerror or str(err)))
        yield Progress("export", count, len(files), f"{verb} files: {count}/{len(files)}")
    return TransferResult(action, tuple(done), tuple(failed))


def place(source: Path, wanted: Path, action: Transfer) -> Placed:
    """Copy or move one file to ``wanted`` or, if that name is taken, a free name beside it.
    Raises OSError with the source untouched when it cannot."""
    if not source.is_file():
        raise FileNotFoundError(errno.ENOENT, "no longer there", str(source))
    wanted.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(20):  # another writer may take the free name between the check and the write
        dest = free_name(wanted)
        try:
            if action is Transfer.COPY:
                _copy_exclusive(source, dest)
            else:
                _move_exclusive(source, dest)
        except FileExistsError:
            continue
        return Placed(source, dest)
    raise FileExistsError(errno.EEXIST, "no free name in the target folder", str(wanted))


def _move_exclusive(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)  # fails if dest exists: never overwrites
    except FileExistsError:
        raise
    except OSError:  # another file system, or no hard links: copy, then remove the source
        _copy_exclusive(source, dest)
    try:
        _remove_source(source)
    except OSError:
        _discard(dest)  # the source is still whole: take back the new name
        raise


def _remove_source(source: Path) -> None:
    os.unlink(source)


def _copy_exclusive(source: Path, dest: Path) -> None:
    """Copy bytes and times into a new file ``dest`` (exclusive create), flushed to disk; on
    failure the partial ``dest`` is removed."""
    with open(source, "rb") as src:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_bytes(src, out)
                out.flush()
                os.fsync(out.fileno())
            shutil.copystat(source, dest)
            if os.path.getsize(dest) != os.path.getsize(source):
                raise OSError(errno.EIO, "the copy is incomplete", str(dest))
        except BaseException:
            _discard(dest)
            raise


def _copy_bytes(src, out) -> None:  # noqa: ANN001 - binary file objects
    shutil.copyfileobj(src, out, _CHUNK)


def _discard(path: Path) -> None:
    """Remove a file this module just created (never a user's file)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


@dataclass
class MoveLog:
    """The moves made since the app started, newest last, so they can be undone (in memory
    only: closing the app forgets them, and the moved files simply stay where they are)."""

    batches: list[TransferResult] = field(default_factory=list)

    def record(self, result: TransferResult) -> None:
        if result.action is Transfer.MOVE and result.done:
            self.batches.append(result)

    @property
    def can_undo(self) -> bool:
        return bool(self.batches)

    def undo(self) -> TransferResult:
        """Move the last batch back where each file came from (a free name beside it if
        that was taken meanwhile). A file that cannot go back stays where it was moved and is
        listed as failed; the batch then stays undoable for those files."""
        if not self.batches:
            raise StudioError("There is no move to undo.")
        batch = self.batches.pop()
        back: list[Placed] = []
        failed: list[tuple[Path, str]] = []
        left: list[Placed] = []
        for item in batch.done:
            try:
                back.append(place(item.target, item.source, Transfer.MOVE))
            except OSError as err:
                failed.append((item.target, err.strerror or str(err)))
                left.append(item)
        if left:
            self.batches.append(TransferResult(Transfer.MOVE, tuple(left)))
        return TransferResult(Transfer.MOVE, tuple(back), tuple(failed))
