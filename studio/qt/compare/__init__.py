"""The Compare workspace: runs of one dataset side by side, scored by the engine's compare job."""

from __future__ import annotations

from studio.qt.compare.workspace import CompareWorkspace

__all__ = ["CompareWorkspace"]
