"""The registry of model families: key -> lazy import string. Adding a family is one row.

Families come from three places, listed in this order:

* built in: :data:`FAMILIES`;
* plug-ins: installed packages that declare an entry point in the ``studio.families`` group,
  ``key = "module:Class"`` (``[project.entry-points."studio.families"]`` in their
  ``pyproject.toml``), read once, lazily; a plug-in that fails to import is listed by
  :func:`family_errors` with its error and breaks nothing else;
* run time: :func:`register_family` (tests, notebooks, a script that defines a family).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from studio.models.base import GenerativeModel

ENTRY_POINT_GROUP = "studio.families"
BUILT_IN = "built-in"
RUN_TIME = "registered at run time"

FAMILIES: dict[str, str] = {
    "gan.dcgan": "studio.models.gan.dcgan:DCGAN",
    "gan.cgan": "studio.models.gan.cgan:ConditionalGAN",
    "gan.wgan_gp": "studio.models.gan.wgan_gp:WGANGP",
    "gan.stylegan": "studio.models.gan.stylegan:StyleGAN",
    "hybrid.vaegan": "studio.models.hybrid.vaegan:VAEGAN",
    "vae.conv": "studio.models.vae.conv:ConvVAE",
    "vae.beta": "studio.models.vae.beta:BetaVAE",
    "vae.cvae": "studio.models.vae.cvae:ConditionalVAE",
    "vae.vqvae": "studio.models.vae.vqvae:VQVAE",
    "vae.hierarchical": "studio.models.vae.hierarchical:HierarchicalVAE",
    "ae.kl": "studio.models.ae.kl:AutoencoderKLFamily",
    "flow.nice": "studio.models.flow.nice:NICE",
    "flow.realnvp": "studio.models.flow.realnvp:RealNVP",
    "flow.glow": "studio.models.flow.glow:Glow",
    "flow.flowpp": "studio.models.flow.flowpp:FlowPlusPlus",
    "diffusion.ddpm": "studio.models.diffusion.ddpm:DDPM",
    "diffusion.text": "studio.models.diffusion.text:TextDiffusion",
    "diffusion.latent": "studio.models.diffusion.latent_ldm:LatentDiffusion",
    "diffusion.latent_text": "studio.models.diffusion.latent_ldm:LatentTextDiffusion",
    "i2i.pix2pix": "studio.models.i2i.pix2pix:Pix2Pix",
    "i2i.cyclegan": "studio.models.i2i.cyclegan:CycleGAN",
    "i2i.superres": "studio.models.i2i.superres:SuperRes",
    "style.fast": "studio.models.style.fast:FastStyle",
    "ar.pixelcnn": "studio.models.ar.pixelcnn:PixelCNN",
    "ar.vq_prior": "studio.models.ar.vq_prior:VQPrior",
    "ebm.rbm": "studio.models.ebm.rbm:RBM",
}


@dataclass(frozen=True)
class Source:
    """Where a family comes from: ``target`` ("module:Class") or the class itself, and
    ``origin`` (:data:`BUILT_IN`, a distribution's name, or :data:`RUN_TIME`)."""

    target: str | type
    origin: str


_registered: dict[str, Source] = {}
_plugins: dict[str, Source] | None = None  # read from the entry points on first use


def register_family(key: str, cls: type | str, origin: str = RUN_TIME) -> None:
    """Add a family at run time: ``cls`` is a GenerativeModel subclass (whose ``info.key`` is
    ``key``) or a lazy "module:Class" string. A built-in key cannot be replaced."""
    if key in FAMILIES:
        raise ValueError(f"{key!r} is a built-in family: pick another key")
    if isinstance(cls, type) and getattr(getattr(cls, "info", None), "key", key) != key:
        raise ValueError(f"{cls.__name__}.info.key is not {key!r}")
    _registered[key] = Source(cls, origin)


def unregister_family(key: str) -> None:
    """Forget a family added with :func:`register_family` (nothing if it was not)."""
    _registered.pop(key, None)


def refresh_plugins() -> None:
    """Read the ``studio.families`` entry points again on next use (after an install)."""
    global _plugins
    _plugins = None


def _plugin_sources() -> dict[str, Source]:
    global _plugins
    if _plugins is None:
        found: dict[str, Source] = {}
        try:
            points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        except Exception:  # noqa: BLE001 - broken metadata must not break the studio
            points = ()
        for point in points:
            if point.name in FAMILIES or point.name in found:
                continue  # a built-in key (or the first plug-in to claim one) wins
            dist = getattr(point, "dist", None)
            origin = str(getattr(dist, "name", "") or point.value.partition(":")[0])
            found[point.name] = Source(point.value, origin)
        _plugins = found
    return _plugins


def family_sources() -> dict[str, Source]:
    """Every family key with where it comes from: built-in, plug-ins, then run time."""
    sources = {key: Source(target, BUILT_IN) for key, target in FAMILIES.items()}
    for key, source in {**_plugin_sources(), **_registered}.items():
        sources.setdefault(key, source)
    return sources


def family_keys() -> list[str]:
    return list(family_sources())


def family_errors() -> dict[str, str]:
    """Key -> why the family cannot be imported, for every family that cannot (a plug-in
    with a missing dependency, say). Imports every family."""
    errors = {}
    for key in family_keys():
        try:
            get_family(key)
        except Exception as err:  # noqa: BLE001 - each family's failure is reported, not raised
            errors[key] = f"{type(err).__name__}: {err}"
    return errors


def get_family(key: str) -> type[GenerativeModel]:
    sources = family_sources()
    try:
        target = sources[key].target
    except KeyError:
        known = ", ".join(sorted(sources))
        raise KeyError(f"unknown model family {key!r}; known: {known}") from None
    if isinstance(target, type):
        return target
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if getattr(getattr(cls, "info", None), "key", None) != key:
        raise TypeError(f"{target} is not a Studio model family with the key {key!r}")
    return cls


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> GenerativeModel:
    """Load a saved model folder (``config.json`` names its family)."""
    from studio.models.base import MODEL_CONFIG

    meta = json.loads((Path(folder) / MODEL_CONFIG).read_text(encoding="utf-8"))
    family = meta.get("family") or meta.get("_studio_family")
    return get_family(family).load(folder, device=device)
