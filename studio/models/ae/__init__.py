"""Autoencoders trained as the first stage of latent diffusion: an encoder to a small latent
grid and a decoder back, judged by their reconstructions."""
