"""Prompt-driven generation: Stable Diffusion models on disk and prompt-conditioned runs."""
