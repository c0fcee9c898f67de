"""Errors that carry a message meant for the user, not a traceback."""

from __future__ import annotations


class StudioError(Exception):
    """A failure the user can act on. ``str(err)`` is shown as is, in the window or the CLI."""


class NoUsableImages(StudioError):
    """A dataset folder holds no image that can be trained on."""


class CheckpointError(StudioError):
    """A run folder or checkpoint is missing, incomplete or corrupt."""


class NonFiniteLoss(StudioError):
    """Training produced NaN or Inf; the last good checkpoint is kept."""


class BaseRunError(StudioError):
    """A run this one builds on (a base run setting) is missing, of the wrong family, or its
    weights changed since this run was made."""
