"""What the image-to-image families share: the PatchGAN discriminator (Isola et al. 2017), the
GAN losses, seeded dropout, and the initialisation and normalisation helpers of their networks.

A PatchGAN is a small convolutional network whose every output logit judges one patch of its
input: 70x70 pixels with the default three downsampling layers (34 with two, 16 with one).
Small images get fewer layers, since the map would otherwise vanish: at 16 px it has two
(34 px patches, wider than the image), at 8 px one. Pix2Pix feeds it the (input, output) pair
stacked as channels; CycleGAN one image.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def patch_layers(resolution: int, wanted: int) -> int:
    """The PatchGAN's downsampling layers: ``wanted``, fewer when the map would vanish (it
    must keep at least 3 pixels before the two last 4x4 convolutions)."""
    fits = int(math.floor(math.log2(resolution / 3))) if resolution >= 3 else 0
    layers = min(wanted, fits)
    if layers < 1:
        raise ValueError(f"the PatchGAN needs images of at least 6 px, not {resolution}")
    return layers


def receptive_field(layers: int) -> int:
    """Pixels one PatchGAN logit sees: two 4x4 stride-1 convolutions, then ``layers`` 4x4
    stride-2 ones (16, 34, 70, 142)."""
    field = 7
    for _ in range(layers):
        field = 2 * field + 2
    return field


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``"instance"``: instance norm (per image, no learned scale); else batch norm."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.BatchNorm2d(channels)


class PatchDiscriminator(nn.Module):
    """Images stacked as channels (``channels`` in all) -> a map of logits, one per patch."""

    def __init__(self, channels: int, width: int, resolution: int, layers: int, norm: str):
        super().__init__()
        n = patch_layers(resolution, layers)
        self.layers = n
        bias = norm == "instance"
        seq: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for k in range(1, n + 1):
            nxt = width * min(2**k, 8)
            stride = 2 if k < n else 1  # the last one keeps the size
            seq += [nn.Conv2d(ch, nxt, 4, stride, 1, bias=bias), norm_layer(norm, nxt)]
            seq.append(nn.LeakyReLU(0.2))
            ch = nxt
        seq.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*seq)

    def forward(self, *images: Tensor) -> Tensor:
        """One image batch, or several stacked as channels (Pix2Pix: input and output)."""
        return self.net(images[0] if len(images) == 1 else torch.cat(images, 1))


def seeded_dropout(x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
    """Dropout whose mask comes from ``generator`` (None: no dropout), so training steps and
    samples are reproducible from their seeds."""
    if generator is None or p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=generator.device) >= p
    return x * keep.to(x.device, x.dtype) / (1.0 - p)


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) convolutions and N(1, 0.02) batch-norm scales, as in the papers."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def gan_loss(logits: Tensor, real: bool, kind: str = "lsgan") -> Tensor:
    """``"lsgan"``: least squares towards 1 (real) or 0 (fake); ``"vanilla"``: the
    non-saturating logistic loss."""
    if kind == "lsgan":
        return (logits - (1.0 if real else 0.0)).pow(2).mean()
    return torch.nn.functional.softplus(-logits if real else logits).mean()
