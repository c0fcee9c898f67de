"""A VGG-19 feature stack built here, loaded from a weights file the user downloaded once.

The layers sit at torchvision's indices, so torchvision's own file (``vgg19-dcbb9e9d.pth``, a
pickled state dict) or a safetensors copy of it loads by key (``features.N.weight``/``.bias``);
the classifier's keys are ignored. Nothing is downloaded: the user fetches the file from
:data:`studio.core.stylize.WEIGHTS_URL` and chooses it. A pickle is read only through ``torch.load(weights_only=True)``
(:func:`studio.engine.prompt.files.read_state_dict`), which refuses anything but tensors; it is
never retried with full unpickling.

The widths are read from the file, so every layer's shape is checked against the one before it
(the real file has 64, 128, 256 and 512 channels; the tests save a narrower network of the same
layout). Only the layers up to ``relu5_1`` are built: style transfer reads nothing deeper.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from studio.core.errors import StudioError
from studio.core.stylize import WHERE_TO_GET

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


def random_vgg19(widths: tuple[int, ...] = STANDARD_WIDTHS, seed: int = 0) -> VGG19Features:
    """A VGG-19 with random weights (for tests and timings: the cost does not depend on them)."""
    torch.manual_seed(seed)
    model = VGG19Features(widths)
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):  # torchvision's VGG initialisation
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return model


def full_state_dict(model: VGG19Features) -> dict[str, Tensor]:
    """``model``'s weights under torchvision's keys, with the three convolutions past
    ``relu5_1`` added (random), so the file has the layout of torchvision's own."""
    state = {f"features.{k}": v.detach().clone() for k, v in model.features.state_dict().items()}
    width = model.widths[4]
    for index in conv_indices()[-3:]:
        state[f"features.{index}.weight"] = torch.randn(width, width, 3, 3) * 0.01
        state[f"features.{index}.bias"] = torch.zeros(width)
    return state


# -- reading a weights file ---------------------------------------------------------------


class WrongWeightsFile(StudioError):
    """The file holds tensors, but not VGG-19's features."""


def _wrong(path: Path, why: str) -> WrongWeightsFile:
    return WrongWeightsFile(f"{path.name} is not a VGG-19 weights file: {why}. {WHERE_TO_GET}")


def _prefix(state: dict[str, Tensor]) -> str:
    """``"features."`` (torchvision's whole model) or ``""`` (a saved ``features`` alone)."""
    if "features.0.weight" in state:
        return "features."
    if "0.weight" in state:
        return ""
    return "features."


def check_state_dict(path: Path, state: dict[str, Tensor]) -> tuple[int, ...]:
    """The five block widths of a VGG-19 ``features`` state dict; a clear error otherwise."""
    p = _prefix(state)
    convs = conv_indices()
    if f"{p}17.weight" in state and f"{p}16.weight" not in state:
        raise _wrong(path, "it looks like VGG-16 (13 convolutions); style transfer needs VGG-19")
    widths: list[int] = [0] * 5
    channels = 3
    for index, block in zip(convs, _block_of_conv()):
        key_w, key_b = f"{p}{index}.weight", f"{p}{index}.bias"
        weight, bias = state.get(key_w), state.get(key_b)
        if weight is None or bias is None:
            found = ", ".join(sorted(state)[:3]) or "nothing"
            raise _wrong(path, f"{key_w if weight is None else key_b} is missing (found {found}…)")
        out = int(weight.shape[0]) if weight.ndim == 4 else -1
        expected = (out, channels, 3, 3)
        if weight.ndim != 4 or tuple(weight.shape) != expected or out < 1:
            raise _wrong(
                path,
                f"{key_w} has shape {tuple(weight.shape)}, expected {channels} input channels "
                "and 3x3 kernels",
            )
        if tuple(bias.shape) != (out,):
            raise _wrong(path, f"{key_b} has shape {tuple(bias.shape)}, expected ({out},)")
        if widths[block] and widths[block] != out:
            raise _wrong(path, f"{key_w} has {out} channels, its block has {widths[block]}")
        widths[block] = out
        if not (weight.is_floating_point() and bias.is_floating_point()):
            raise _wrong(path, f"{key_w} is not floating point")
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise _wrong(path, f"{key_w} holds NaN or infinite values (a damaged file)")
        channels = out
    return tuple(widths)


def load_vgg19(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> VGG19Features:
    """The VGG-19 feature stack from ``path`` (safetensors, or a pickled state dict read
    weights-only), in eval mode with gradients off for its weights."""
    from studio.engine.prompt.files import read_state_dict

    path = Path(path).expanduser()
    if not path.exists():
        raise StudioError(f"There is no VGG-19 weights file at {path}. {WHERE_TO_GET}")
    # Choosing the file is the consent: it is read weights-only, never unpickled in full.
    state = read_state_dict(path, allow_pickle=True)
    widths = check_state_dict(path, state)
    model = VGG19Features(widths)
    p = _prefix(state)
    own = {
        f"{k}": state[f"{p}{k}"].float() for k in model.features.state_dict()
    }  # (a key past relu5_1, or the classifier's, is not read)
    model.features.load_state_dict(own)
    model.eval().requires_grad_(False)
    return model.to(device)
