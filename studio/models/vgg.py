"""The VGG-19 feature stack (torchvision's ``features`` layout, up to ``relu5_1``) and the
perceptual losses read through it: Gram matrices of features and total variation.

Only the network's definition lives here, so a family (the feed-forward style network,
``style.fast``) can use it; its weights come from a file the user chose, read weights-only by
the engine (:func:`studio.engine.vgg.load_vgg19`), which hands the loaded network to a family
through :mod:`studio.models.file_inputs`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# torchvision's ``cfgs["E"]``: conv widths, "M" for a 2x2 max-pool.
LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip
STANDARD_WIDTHS = (64, 128, 256, 512, 512)
# The named activations (after each ReLU) and their index in ``features``.
LAYERS = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8,
    "relu3_1": 11, "relu3_2": 13, "relu3_3": 15, "relu3_4": 17,
    "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26,
    "relu5_1": 29,
}  # fmt: skip
LAST_INDEX = max(LAYERS.values())
# ImageNet statistics the weights were trained with (inputs in [0, 1]).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def conv_indices() -> list[int]:
    """The ``features`` index of every convolution, in order (16 of them)."""
    out, i = [], 0
    for item in LAYOUT:
        if item == "M":
            i += 1
        else:
            out.append(i)
            i += 2  # the conv and its ReLU
    return out


def _block_of_conv() -> list[int]:
    """For each convolution, the block (0-4) it belongs to."""
    out, block = [], 0
    for item in LAYOUT:
        if item == "M":
            block += 1
        else:
            out.append(block)
    return out


class VGG19Features(nn.Module):
    """``features`` as in torchvision's VGG-19, up to ``relu5_1``, with widths per block."""

    def __init__(self, widths: tuple[int, ...] = STANDARD_WIDTHS) -> None:
        super().__init__()
        if len(widths) != 5 or any(w < 1 for w in widths):
            raise ValueError(f"VGG-19 has five blocks of positive width, not {widths}")
        self.widths = tuple(widths)
        layers: list[nn.Module] = []
        channels, block = 3, 0
        for item in LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                block += 1
            else:
                layers += [nn.Conv2d(channels, widths[block], 3, padding=1), nn.ReLU()]
                channels = widths[block]
        self.features = nn.Sequential(*layers[: LAST_INDEX + 1])
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor, names: list[str]) -> dict[str, Tensor]:
        """The named activations of ``x`` (``N x 3 x H x W`` in [0, 1]); stops at the deepest."""
        wanted = {LAYERS[n]: n for n in names}
        last = max(wanted)
        out: dict[str, Tensor] = {}
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
            if i == last:
                break
        return out


def gram(features: Tensor) -> Tensor:
    """The Gram matrix of ``N x C x H x W`` features, normalised by ``C * H * W``: ``N x C x C``."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def tv_loss(x: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels (down and right)."""
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(
        2
    ).mean()
