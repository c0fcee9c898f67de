"""Studio: a desktop studio for training, comparing and exploring small generative models.

Importing ``studio`` is cheap: torch, diffusers and Qt load only when a layer that needs them
is imported.
"""

__version__ = "0.1.0"
