"""Feature maps pooled to a bounded size, for finding latent directions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

MAX_FEATURES = 4096  # activations and pixels are pooled down to at most this many per latent


def pooled(maps: Tensor, limit: int = MAX_FEATURES) -> Tensor:
    """N x C x H x W maps, average-pooled to at most ``limit`` numbers each, flattened."""
    while maps[0].numel() > limit and maps.shape[-1] > 1:
        maps = F.avg_pool2d(maps, 2)
    return maps.flatten(1).float()
