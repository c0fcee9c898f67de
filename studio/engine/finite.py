"""Weights that are not finite numbers, found when a model is loaded.

A NaN or infinity in any weight makes a model draw black or noise, and nothing downstream tells
why. :func:`non_finite` names the tensors, one ``torch.isfinite(t).all()`` per floating-point
tensor (parameters and buffers alike), so the check costs one read of the weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from studio.core.errors import StudioError

SHOWN = 4  # tensors named in a message; the rest are counted


def non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of floating-point tensors holding a NaN or an infinity (meta tensors skipped)."""
    bad = []
    with torch.no_grad():
        for name, t in named:
            if t.is_floating_point() and not t.is_meta and not bool(torch.isfinite(t).all()):
                bad.append(name)
    return bad


def module_tensors(modules: Mapping[str, Any]) -> Iterable[tuple[str, torch.Tensor]]:
    """``(component.name, tensor)`` for every parameter and buffer of the modules given."""
    for part, module in modules.items():
        if isinstance(module, torch.nn.Module):
            prefix = f"{part}." if part else ""
            for name, t in [*module.named_parameters(), *module.named_buffers()]:
                yield prefix + name, t


def describe(names: list[str]) -> str:
    """ "unet.conv_in.weight, vae.decoder.conv_out.bias and 3 more"."""
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def check_finite(modules: Mapping[str, Any], what: str, remedy: str) -> None:
    """Raise :class:`StudioError` naming the tensors of ``modules`` that are not finite.

    ``what`` names the model ("sd15.safetensors"); ``remedy`` says what to do about it.
    """
    bad = non_finite(module_tensors(modules))
    if bad:
        raise StudioError(
            f"{what} has weights that are not finite numbers (NaN or infinity) in "
            f"{len(bad)} tensor{'s' if len(bad) != 1 else ''} ({describe(bad)}), so it could only "
            f"draw black or noise; {remedy}"
        )
