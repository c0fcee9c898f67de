"""Diffusion models: diffusers UNets trained to denoise, sampled with diffusers schedulers."""
