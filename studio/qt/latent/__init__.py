"""The Explore workspace: a run's latent space under sliders (see :mod:`.workspace`)."""

from studio.qt.latent.workspace import LatentWorkspace

__all__ = ["LatentWorkspace"]
