"""The engine's readers of the files a family's settings name (:mod:`studio.models.file_inputs`),
registered on import: ``"image"`` (decoded by :func:`studio.engine.images.open_image`, with its
guards, as a ``3 x H x W`` float tensor in [0, 1]) and ``"vgg19"`` (the VGG-19 feature stack,
read weights-only by :func:`studio.engine.vgg.load_vgg19`, on the CPU, frozen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio.core.errors import StudioError
from studio.models.file_inputs import set_file_reader


def read_image(path: Path) -> Any:
    import numpy as np
    import torch

    from studio.engine.images import ImageRejected, open_image

    if not path.exists():
        raise StudioError(f"There is no image at {path}.")
    try:
        pixels = np.asarray(open_image(path), dtype=np.uint8)
    except ImageRejected as err:
        raise StudioError(f"cannot read the image {path}: {err}") from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0


def read_vgg19(path: Path) -> Any:
    """A copy (the family moves it to its device) of the network read once per unchanged
    file (:func:`studio.engine.stylize.cached_vgg`): building a model several times (the
    automatic batch size) reads the 548 MB file once."""
    import copy

    from studio.engine.stylize import cached_vgg

    return copy.deepcopy(cached_vgg(path, "cpu"))


set_file_reader("image", read_image)
set_file_reader("vgg19", read_vgg19)
