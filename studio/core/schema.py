"""The vocabulary of the family contract, declared without torch or Qt: what a family can do
(:class:`Capability`), how it describes itself (:class:`FamilyInfo`), and how its settings are
declared (:func:`setting`, :class:`ModelConfig`: label, range, choices, whether shown first).

The window's settings forms, the command line's ``--set``, range checks of a run's saved
settings and ``docs/models.md`` all read these declarations. ``studio.models.base`` re-exports
them with the rest of the contract (which needs torch).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from studio.core.options import check_setting


class Capability(enum.Flag):
    """What a family can do, declared in its ``FamilyInfo`` so the window and the command line
    know before a model loads. Each capability beyond training and sampling comes with a
    protocol the family implements (:mod:`studio.models.capabilities`)."""

    NONE = 0
    TRAIN = enum.auto()
    SAMPLE = enum.auto()
    LATENT = enum.auto()  # a latent space: capabilities.LatentFamily
    LIKELIHOOD = enum.auto()  # bits/dim (exact or a bound): capabilities.LikelihoodFamily
    CONDITIONAL = enum.auto()  # class (or text) conditioning
    INPAINT = enum.auto()  # fills a masked region its own way: capabilities.InpaintFamily
    TEXT = enum.auto()  # prompt-conditioned: takes prompt / negative_prompt, learns from captions
    # Image to image on pairs: trains on (input A, target B) pairs (``Batch.sources`` holds A,
    # ``Batch.images`` B; folder B is the ``data_b`` training option) and translates the
    # ``image`` condition when sampling.
    PAIRED = enum.auto()
    # With PAIRED: folders A and B are two independent collections, not matched pairs (any two
    # folders, of any sizes). Batches draw from each folder on its own (``Batch.sources`` from
    # A, ``Batch.images`` from B), and the family translates both ways: its ``direction``
    # condition is ``"a2b"`` or ``"b2a"`` (DIRECTIONS).
    UNPAIRED = enum.auto()
    # With PAIRED: trains on ONE folder; the family makes each training image's input from the
    # image itself (``GenerativeModel.paired_inputs``: super-resolution's degraded copy), so
    # there is no folder B. Held-out grids show input (upsampled to the output's size) |
    # output | original, with PSNR/SSIM against the upsampled input's.
    SINGLE_FOLDER = enum.auto()
    # Images as grids of discrete codes and back (capabilities.CodeFamily): an image codec
    # (``studio compress``) and, later, a prior over the codes.
    CODES = enum.auto()
    # An image autoencoder whose continuous latent grid another run can model
    # (capabilities.AutoencoderFamily): the frozen first stage of latent diffusion.
    AUTOENCODER = enum.auto()


#: The directions an unpaired image-to-image family (Capability.UNPAIRED) translates in.
A2B, B2A = "a2b", "b2a"
DIRECTIONS = (A2B, B2A)
#: The layouts ``studio export`` writes (``GenerativeModel.export_formats`` names the ones a
#: family supports): diffusers' folder layout, or one safetensors file and its json.
EXPORT_FORMATS = ("diffusers", "safetensors")


@dataclass(frozen=True)
class FamilyInfo:
    key: str  # "gan.dcgan"
    kind: str  # "gan", "vae", "flow", "diffusion"
    display_name: str
    summary: str  # one line on the trade-offs, shown in the model picker
    capabilities: Capability
    loss_names: tuple[str, ...] = ()  # the components train_step returns, in legend order
    # The heading the model picker and docs/models.md group the family under; "" = the
    # built-in title of ``kind`` (KIND_TITLES), else the kind itself.
    kind_title: str = ""
    # A paragraph for docs/models.md: what the model is, how it generates, what it is good
    # at ("" = the summary alone).
    about: str = ""

    @property
    def group_title(self) -> str:
        return self.kind_title or KIND_TITLES.get(self.kind, self.kind)


KIND_TITLES = {
    "gan": "GANs",
    "vae": "Variational autoencoders",
    "flow": "Normalizing flows",
    "diffusion": "Diffusion models",
    "i2i": "Image-to-image models",
    "style": "Style transfer",
    "hybrid": "Hybrid models",
}


def setting(
    default: Any = dataclasses.MISSING,
    *,
    label: str,
    help: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[Any, ...] | None = None,
    main: bool = False,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A config field with what a settings form needs to show it (label, range, choices).

    ``main`` marks the settings shown first; the rest sit under "More".
    """
    meta = {
        "label": label,
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
        "main": main,
    }
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunRequirement:
    """What a run setting (:func:`run_setting`) accepts: a run folder of one of ``families``
    (keys; empty = any family) whose family has every flag of ``capabilities``. The family
    declaring the setting names its own base families; the engine and the window read this
    as data."""

    families: tuple[str, ...] = ()
    capabilities: Capability = Capability.NONE
    what: str = "run"  # in messages and the form: "a VQ-VAE run"

    def accepts(self, key: str, capabilities: Capability) -> bool:
        if self.families and key not in self.families:
            return False
        return (capabilities & self.capabilities) == self.capabilities


def run_setting(*, label: str, requires: RunRequirement, help: str = "", main: bool = True) -> Any:
    """A setting that holds the folder of another run this one builds on (a base run: the
    VQ-VAE under a prior over its codes). ``""`` = not chosen yet. The engine loads that run's
    weights frozen and records its path and a hash of its weights in the new run; the Train
    form offers the existing runs ``requires`` accepts; ``studio train --set NAME=PATH``."""
    meta = {
        "label": label,
        "help": help,
        "minimum": None,
        "maximum": None,
        "choices": None,
        "main": main,
        "run": requires,
    }
    return field(default="", metadata=meta)


@dataclass(frozen=True)
class FileInput:
    """What a file setting (:func:`file_setting`) holds: a file of ``kind`` (``"image"``, or a
    network's weights such as ``"vgg19"``) that the engine reads for the family
    (:mod:`studio.models.file_inputs`). ``patterns``: the file dialog's filter;
    ``remember``: the key under which the window keeps the last file chosen for this kind of
    file, shared with the tools that use it (the VGG-19 file of *Stylize*); ``where``: where
    to get such a file, for the form's tooltip."""

    kind: str
    what: str = "file"
    patterns: str = "All files (*)"
    remember: str = ""
    where: str = ""


def file_setting(*, label: str, accepts: FileInput, help: str = "", main: bool = True) -> Any:
    """A setting that holds a file's path (``""`` = not chosen yet): the style image of a style
    network, the VGG-19 weights its losses read. The Train form shows a file picker; ``studio
    train --set NAME=PATH``."""
    meta = {
        "label": label,
        "help": help,
        "minimum": None,
        "maximum": None,
        "choices": None,
        "main": main,
        "file": accepts,
    }
    return field(default="", metadata=meta)


def file_settings(config_cls: type) -> dict[str, FileInput]:
    """The file settings (:func:`file_setting`) of a config dataclass, by field name."""
    return {
        f.name: f.metadata["file"]
        for f in dataclasses.fields(config_cls)
        if isinstance(f.metadata.get("file"), FileInput)
    }


def run_settings(config_cls: type) -> dict[str, RunRequirement]:
    """The run settings (:func:`run_setting`) of a config dataclass, by field name."""
    return {
        f.name: f.metadata["run"]
        for f in dataclasses.fields(config_cls)
        if isinstance(f.metadata.get("run"), RunRequirement)
    }


@dataclass
class ModelConfig:
    """Fields every family shares. ``resolution`` and ``num_classes`` come from the dataset."""

    resolution: int = setting(32, label="Resolution", minimum=4, maximum=128, main=True)
    channels: int = setting(3, label="Channels", choices=(1, 3))
    num_classes: int = setting(0, label="Classes", help="0 = unconditional; set from subfolders")
    # Settings added after runs were saved without them, each with the value that keeps such
    # a run's old behaviour (a new run gets the field's default): see :meth:`from_saved`.
    legacy_defaults: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> ModelConfig:
        """A config read back from a saved run or checkpoint: a setting the saved dict lacks
        takes its :attr:`legacy_defaults` value (the behaviour the run was trained with), not
        today's default."""
        return cls.from_dict({**cls.legacy_defaults, **data})

    @classmethod
    def resumed(cls, overrides: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        """The settings to rebuild a resumed run with: ``overrides`` (what the run was started
        with), plus, for each setting of :attr:`legacy_defaults` not overridden, the value its
        saved config holds (the legacy one when it predates the setting)."""
        out = dict(overrides)
        for name, old in cls.legacy_defaults.items():
            out.setdefault(name, saved.get(name, old))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown settings for {cls.__name__}: {', '.join(sorted(unknown))}")
        config = cls(**data)
        config.check()
        return config

    def check(self) -> None:
        """Raise :class:`studio.core.options.SettingError` naming the first setting whose
        value is outside its declared type, range or choices (a hand-edited config.json,
        ``--set``)."""
        for f in dataclasses.fields(self):
            kind = type(f.default) if isinstance(f.default, (bool, int, float, str)) else None
            meta = f.metadata
            check_setting(
                f.name,
                getattr(self, f.name),
                kind=kind,
                minimum=meta.get("minimum"),
                maximum=meta.get("maximum"),
                choices=meta.get("choices"),
            )
