"""Variational autoencoders: a convolutional VAE, β-VAE, a class-conditional VAE and VQ-VAE."""
