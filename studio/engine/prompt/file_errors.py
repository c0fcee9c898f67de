"""The errors of reading model files, and the one way a model file is opened."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from studio.core import safefiles
from studio.core.errors import StudioError


class ModelFileError(StudioError):
    """A model file cannot be read: truncated, corrupt, of an unknown type, or unsafe."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class CorruptModelFile(ModelFileError):
    """The file is truncated or damaged."""


class PickleConsentRequired(ModelFileError):
    """A pickled checkpoint: ask the user, then retry with ``allow_pickle=True``.

    ``path`` names the file. The GUI asks "this is a pickled checkpoint; load it in restricted
    weights-only mode?" and the CLI suggests ``--allow-pickle``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        name = Path(path).name
        super().__init__(
            f"{name} is a pickled checkpoint (not safetensors). Pickles can run code when they "
            "are loaded, so Studio reads one only if you agree, and then only in restricted "
            "weights-only mode, which refuses anything but tensors. Prefer a .safetensors "
            "version of this model if there is one.",
            path,
        )


class UnsafeModelError(ModelFileError):
    """The file or folder needs code to load; it is refused."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``open(path, "rb")`` for a regular file only; anything else is a :class:`ModelFileError`.

    :func:`studio.core.safefiles.open_regular` opens without blocking and checks the open
    descriptor, so a FIFO (which would wait forever for a writer), a socket or a device is
    refused, never read.
    """
    try:
        return safefiles.open_regular(path)
    except safefiles.NotRegularFile as err:
        raise ModelFileError(
            f"{Path(path).name} is {err.what}, not a regular file, so Studio does not read it.",
            path,
        ) from None
