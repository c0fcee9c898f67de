"""A VGG-19 feature stack (defined in :mod:`studio.models.vgg`), loaded from a weights file the
user downloaded once.

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
from studio.models.vgg import (  # noqa: F401 - the network is defined in the models layer
    LAST_INDEX,
    LAYERS,
    LAYOUT,
    MEAN,
    STANDARD_WIDTHS,
    STD,
    VGG19Features,
    _block_of_conv,
    conv_indices,
)


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
