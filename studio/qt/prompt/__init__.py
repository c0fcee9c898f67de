"""The Prompt workspace: Stable Diffusion and prompt models trained here, from a prompt."""

from studio.qt.prompt.workspace import PromptWorkspace

__all__ = ["PromptWorkspace"]
