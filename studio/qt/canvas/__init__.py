"""The Canvas workspace: paint masks and inpaint with the models trained in Studio.

Import :class:`CanvasWorkspace` from here; the other modules are its parts.
"""

from studio.qt.canvas.workspace import CanvasWorkspace

__all__ = ["CanvasWorkspace"]
