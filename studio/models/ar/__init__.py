"""Autoregressive models: an image is a sequence of pixels, each drawn given the ones before it.

Likelihoods are exact (a product of per-pixel probabilities), training is one teacher-forced
pass over whole images, and sampling takes one network pass per pixel.
"""
