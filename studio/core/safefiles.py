"""Reading files a user (or someone else) put in a folder, without being led astray.

* :func:`open_regular` opens a file only when it is a regular file: a FIFO would block the
  reader forever, and a device or socket is never something the studio should read.
* :func:`inside` tells whether a path, with every symlink resolved, stays inside a folder, so a
  link in a dataset cannot pull ``/etc/passwd`` into a run's files.
* :func:`printable` makes a file name safe to print on any console (names that are not valid
  UTF-8 come from the file system as lone surrogates, which a strict console refuses).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the check opens without blocking
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class NotRegularFile(OSError):
    """The path is a FIFO, a device, a socket or a folder, not a regular file."""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        super().__init__(f"{printable(path)} is {what}, not a regular file")
        self.what = what


def kind_of(mode: int) -> str:
    """What a ``st_mode`` is, in words ("a FIFO", "a device", ...)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a file"


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading if (and only if) it is a regular file.

    Symlinks are followed (check containment with :func:`inside` first where it matters).
    Raises :class:`NotRegularFile` for a FIFO, device, socket or folder without ever blocking
    on it, and the usual :class:`OSError` when the file cannot be opened.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(path, kind_of(st.st_mode))
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the stat and the open
            raise NotRegularFile(path, kind_of(mode))
        if getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """True when ``path`` with every symlink resolved is ``root`` (resolved) or below it.

    A link loop or a path that cannot be resolved counts as outside.
    """
    try:
        real_root = Path(os.path.realpath(root, strict=False))
        try:
            real = Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:  # a dangling link: where it points decides
            real = Path(os.path.realpath(path, strict=False))
    except (OSError, RuntimeError, ValueError):  # a link loop, among others
        return False
    return real == real_root or real.is_relative_to(real_root)


def printable(value: object) -> str:
    """``value`` as text that every console can print: bytes that were not valid UTF-8 in a
    file name (lone surrogates) become ``\\xff``-style escapes."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _only_escapes(text) else None
        if raw is not None:
            return raw.decode("utf-8", "backslashreplace")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _only_escapes(text: str) -> bool:
    """True when every surrogate in ``text`` is one ``surrogateescape`` made (U+DC80..U+DCFF)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)
