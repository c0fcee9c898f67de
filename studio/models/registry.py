"""The registry of model families: key -> lazy import string. Adding a family is one row."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from studio.models.base import GenerativeModel

FAMILIES: dict[str, str] = {
    "gan.dcgan": "studio.models.gan.dcgan:DCGAN",
    "gan.cgan": "studio.models.gan.cgan:ConditionalGAN",
    "gan.wgan_gp": "studio.models.gan.wgan_gp:WGANGP",
    "vae.conv": "studio.models.vae.conv:ConvVAE",
    "vae.beta": "studio.models.vae.beta:BetaVAE",
    "vae.cvae": "studio.models.vae.cvae:ConditionalVAE",
    "vae.vqvae": "studio.models.vae.vqvae:VQVAE",
    "flow.nice": "studio.models.flow.nice:NICE",
    "flow.realnvp": "studio.models.flow.realnvp:RealNVP",
    "flow.glow": "studio.models.flow.glow:Glow",
    "diffusion.ddpm": "studio.models.diffusion.ddpm:DDPM",
    "diffusion.text": "studio.models.diffusion.text:TextDiffusion",
}


def family_keys() -> list[str]:
    return list(FAMILIES)


def get_family(key: str) -> type[GenerativeModel]:
    try:
        target = FAMILIES[key]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise KeyError(f"unknown model family {key!r}; known: {known}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> GenerativeModel:
    """Load a saved model folder (``config.json`` names its family)."""
    from studio.models.base import MODEL_CONFIG

    meta = json.loads((Path(folder) / MODEL_CONFIG).read_text(encoding="utf-8"))
    family = meta.get("family") or meta.get("_studio_family")
    return get_family(family).load(folder, device=device)
