"""Hybrid families: models that combine two kinds (the VAE-GAN)."""
