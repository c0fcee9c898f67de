"""Atomic file writes: a temp file in the destination folder, fsync, rename, fsync the folder.

A reader never sees a half-written file, and a crash or an exception during the write leaves
the previous file byte-identical. The temp file is created with mode 0666 and the process's
umask applied by the kernel, as an ordinary ``open(path, "w")`` would, and keeps that mode
whatever wrote it (``tempfile.mkstemp``, and safetensors' own ``save_file``, leave 0600: readable
by its owner only). :func:`give_ordinary_mode` does the same for files a library wrote in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # folders cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` atomically.

    The caller writes the temp file by any means (a library's ``save_file`` for instance). If
    the block raises, the temp file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temp(target)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            if os.name != "nt" and os.fstat(fh.fileno()).st_mode & 0o7777 != mode:
                os.fchmod(fh.fileno(), mode)  # the writer replaced our file with a 0600 one
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _create_temp(target: Path) -> tuple[Path, int]:
    """A new empty file beside ``target`` with the permissions an ordinary write gives, and
    that mode."""
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_EXCL
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_BINARY", 0)
    )
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask (and default ACLs)
        except FileExistsError:
            continue
        try:
            mode = os.fstat(fd).st_mode & 0o7777
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(f"Could not create a temporary file beside {target}")


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore; a file created meanwhile gets 0077, never more
        old = os.umask(0o077)
        os.umask(old)
    return old


def give_ordinary_mode(path: str | os.PathLike[str]) -> None:
    """Give a file a library wrote (safetensors writes 0600) the mode an ordinary write gives:
    0666 & ~umask (folders 0777 & ~umask)."""
    if os.name == "nt":
        return
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def create_new_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Create ``path`` holding ``data``, whole or not at all, and never replace a file that is
    there (or appears meanwhile): a temp file beside it, fsynced, then hard-linked into place.
    Raises ``FileExistsError`` when ``path`` exists (a symlink, even a dangling one, counts)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, _mode = _create_temp(target)
    try:
        with open(tmp, "rb+") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: exclusive create, then write
            with open(target, "xb") as fh:
                try:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                except BaseException:
                    target.unlink()  # ours: created just above
                    raise
        fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
