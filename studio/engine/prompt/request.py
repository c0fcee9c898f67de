"""What a prompt generation asks for (:class:`GenerateRequest`) and what it returns.

This module is light (numpy only, no torch, no diffusers), so the GUI can build and check
requests on its thread. The engine (:mod:`studio.engine.prompt.generate`) runs them.

Sizes: ``width`` x ``height`` is the size the model generates at (multiples of 8). In
text-to-image that is the output size. In image-to-image and inpainting the input image is
resized to it for the model and the result comes back at the input image's own size, so a
canvas image keeps its size; use :func:`snap8` to pick a generation size from an image size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from studio import __version__
from studio.core.errors import StudioError

MODES = ("txt2img", "img2img", "inpaint")
MODE_LABELS = {"txt2img": "Text to image", "img2img": "Image to image", "inpaint": "Inpaint"}

# Scheduler name -> diffusers class name. Each is built with ``from_config`` of the model's own
# scheduler config, so the model's training schedule (betas, prediction type) is kept.
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}
SCHEDULER_LABELS = {
    "ddim": "DDIM",
    "euler": "Euler",
    "euler_a": "Euler ancestral",
    "dpmpp_2m": "DPM++ 2M",
    "unipc": "UniPC",
}
MEMORY_MODES = ("auto", "full", "balanced", "low")
DTYPES = ("auto", "fp32", "fp16", "bf16")

MAX_SIDE = 4096
MAX_STEPS = 1000
MAX_BATCH = 64
MAX_SEED = 2**63 - 1

# Every scalar parameter, in the order the metadata and the human summary list them.
_SCALARS = (
    "model",
    "mode",
    "prompt",
    "negative_prompt",
    "steps",
    "guidance",
    "scheduler",
    "seed",
    "width",
    "height",
    "batch_count",
    "strength",
    "mask_blur",
    "only_masked",
    "only_masked_padding",
    "memory",
    "compile",
    "device",
    "dtype",
    "preview_every",
)


def snap8(n: int, minimum: int = 8) -> int:
    """The nearest multiple of 8 to ``n`` (at least ``minimum``)."""
    return max(minimum, int(n / 8 + 0.5) * 8)


@dataclass(frozen=True)
class GenerateRequest:
    """One prompt generation: ``batch_count`` images with seeds ``seed``, ``seed + 1``, ...

    ``model`` is a model-library entry id or a path (a diffusers folder, a single-file
    checkpoint, or a Studio run folder trained with a prompt-conditioned family). ``image``
    (H x W x 3 uint8) is needed by img2img and inpaint; ``mask`` (H x W, bool or uint8,
    nonzero = repaint; grey values count as repaint) by inpaint. ``mask_blur`` is the seam's
    blend radius in pixels. ``only_masked`` inpaints a window around the mask (its bounding
    box plus ``only_masked_padding`` px) at the full generation size, for detail, and pastes it
    back. ``memory``: "auto" picks from free GPU memory; "full", "balanced" and "low" force a
    rung (see :mod:`studio.engine.prompt.memory`). ``preview_every``: a latent preview every N
    steps (0 = none).

    Construction checks every value and raises :class:`StudioError` with a message that says
    what to change; :meth:`require_inputs` also checks that the mode's image and mask are there
    (a request restored from metadata has none until they are given).
    """

    model: str
    mode: str = "txt2img"
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 30
    guidance: float = 7.5
    scheduler: str = "dpmpp_2m"
    seed: int = 0
    width: int = 512
    height: int = 512
    batch_count: int = 1
    strength: float = 0.75
    image: Any = field(default=None, compare=False, repr=False)
    mask: Any = field(default=None, compare=False, repr=False)
    mask_blur: int = 4
    only_masked: bool = False
    only_masked_padding: int = 32
    memory: str = "auto"
    compile: bool = False
    device: str = "auto"
    dtype: str = "auto"
    preview_every: int = 1

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not str(self.model).strip():
            problems.append("choose a model (a library entry or a path)")
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.scheduler not in SCHEDULERS:
            problems.append(
                f"scheduler must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}"
            )
        if self.memory not in MEMORY_MODES:
            problems.append(f"memory must be one of {', '.join(MEMORY_MODES)}")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}")
        for name, value in (("width", self.width), ("height", self.height)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                problems.append(f"{name} must be a whole number of pixels")
            elif value < 8 or value > MAX_SIDE or value % 8:
                problems.append(
                    f"{name} must be a multiple of 8 between 8 and {MAX_SIDE} "
                    f"(got {value}; {snap8(min(max(int(value), 8), MAX_SIDE))} would do)"
                )
        checks = {
            f"steps must be 1..{MAX_STEPS}": not 1 <= self.steps <= MAX_STEPS,
            "guidance must be >= 0": not self.guidance >= 0,
            f"seed must be 0..{MAX_SEED}": not 0 <= self.seed <= MAX_SEED,
            f"batch count must be 1..{MAX_BATCH}": not 1 <= self.batch_count <= MAX_BATCH,
            "strength must be between 0 and 1": not 0.0 < self.strength <= 1.0,
            "mask blur must be >= 0 px": self.mask_blur < 0,
            "only-masked padding must be >= 0 px": self.only_masked_padding < 0,
            "preview every must be >= 0 steps (0 = no previews)": self.preview_every < 0,
        }
        problems += [message for message, bad in checks.items() if bad]
        if (
            self.mode != "txt2img"
            and self.steps >= 1
            and 0 < self.strength <= 1
            and int(self.steps * self.strength) < 1
        ):
            problems.append(
                f"steps x strength must be at least 1 (now {self.steps} x {self.strength:g}); "
                "raise the steps or the strength"
            )
        if self.image is not None:
            img = np.asarray(self.image)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
                problems.append(f"the image must be H x W x 3 uint8, not {img.shape} {img.dtype}")
            else:
                object.__setattr__(self, "image", img)
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.ndim != 2 or mask.dtype not in (np.uint8, np.bool_):
                problems.append(
                    f"the mask must be H x W bool or uint8, not {mask.shape} {mask.dtype}"
                )
            elif self.image is not None and mask.shape != np.shape(self.image)[:2]:
                h, w = np.shape(self.image)[:2]
                problems.append(
                    f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image {w}x{h}; "
                    "they must be the same size"
                )
            else:
                object.__setattr__(self, "mask", mask)
        if problems:
            raise StudioError("Generation settings: " + "; ".join(problems) + ".")

    # -- checks that need the inputs -----------------------------------------------------------

    def require_inputs(self) -> None:
        """Raise :class:`StudioError` unless the mode's image (and mask) are given."""
        if self.mode in ("img2img", "inpaint") and self.image is None:
            raise StudioError(
                f"{MODE_LABELS[self.mode]} needs an image: open one on the canvas "
                "(or pass --image)."
            )
        if self.mode == "inpaint":
            if self.mask is None:
                raise StudioError(
                    "Inpainting needs a mask: paint the area to repaint (or pass --mask)."
                )
            if not np.asarray(self.mask).any():
                raise StudioError("The mask is empty: paint the area to repaint first.")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.batch_count)]

    @property
    def denoising_steps(self) -> int:
        """The sampler steps each image actually runs (img2img/inpaint skip the first ones)."""
        if self.mode == "txt2img":
            return self.steps
        return min(int(self.steps * self.strength), self.steps)

    def with_inputs(self, image: Any = None, mask: Any = None) -> GenerateRequest:
        """A copy with the image and mask replaced (e.g. after :meth:`from_metadata`)."""
        return dataclasses.replace(self, image=image, mask=mask)

    # -- metadata ------------------------------------------------------------------------------

    def to_metadata(self) -> dict[str, Any]:
        """Every parameter as a JSON-able dict (no arrays: the image's and mask's sizes only)."""
        d: dict[str, Any] = {name: getattr(self, name) for name in _SCALARS}
        for name in (
            "steps",
            "seed",
            "width",
            "height",
            "batch_count",
            "mask_blur",
            "only_masked_padding",
            "preview_every",
        ):
            d[name] = int(d[name])
        d["guidance"] = float(self.guidance)
        d["strength"] = float(self.strength)
        d["scheduler_label"] = SCHEDULER_LABELS[self.scheduler]
        d["seeds"] = self.seeds
        if self.image is not None:
            d["image_size"] = [int(self.image.shape[1]), int(self.image.shape[0])]
        d["has_mask"] = self.mask is not None
        d["studio_version"] = __version__
        return d

    def image_metadata(
        self, source_name: str, seed: int, index: int, extra: dict[str, Any]
    ) -> dict[str, Any]:
        """One image's metadata: this request with that image's seed, as a batch of one."""
        meta = dataclasses.replace(self, seed=seed, batch_count=1).to_metadata()
        meta.update(
            model_name=source_name,
            batch={"index": index, "count": self.batch_count, "first_seed": self.seed},
            **extra,
        )
        return meta

    @classmethod
    def from_metadata(cls, d: dict[str, Any]) -> GenerateRequest:
        """The request that :meth:`to_metadata` described (image and mask not included).

        Unknown keys are ignored and missing ones take their defaults, so metadata from an
        older or newer Studio still loads; a value that is out of range raises StudioError.
        """
        if not isinstance(d, dict):
            raise StudioError("These generation settings are not a JSON object.")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name in _SCALARS:
            if name not in d:
                continue
            value, default = d[name], fields[name].default
            try:
                if isinstance(default, bool):
                    value = bool(value)
                elif isinstance(default, int):
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
                else:
                    value = str(value)
            except (TypeError, ValueError):
                raise StudioError(f"The saved setting {name}={value!r} is not valid.") from None
            kwargs[name] = value
        if "model" not in kwargs:
            raise StudioError("These generation settings do not name a model.")
        return cls(**kwargs)


@dataclass
class GenerateResult:
    """What :func:`~studio.engine.prompt.generate.generate_job` returns: one entry per image.

    ``images``: H x W x 3 uint8. ``metadata``: the image's full settings (``seed`` is that
    image's own seed and ``batch_count`` 1, so :meth:`GenerateRequest.from_metadata` redoes
    exactly that image; ``batch`` says where it sat in its batch). ``paths``: where the images
    were saved in the history, when the job was asked to save them.
    """

    images: list[np.ndarray]
    metadata: list[dict[str, Any]]
    seeds: list[int]
    paths: list[Any] = field(default_factory=list)
