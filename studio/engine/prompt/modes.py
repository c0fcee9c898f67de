"""Which generation modes a model supports, decided in one place for the GUI, the CLI and the loader.

A mode is "txt2img", "img2img" or "inpaint". Every Stable Diffusion architecture the library
knows does all three (an inpainting checkpoint too: its pipeline takes the mask, and without
one the loader blends), and so do prompt models trained here and models of an unknown type
(they are tried, and diffusers says what fails). The SDXL refiner alone has no text to image:
it refines an existing image.

:func:`modes_for` answers for a library entry or an architecture string, with a one-line reason
for each refused mode (the tooltip of a greyed-out choice); :func:`check_mode` raises
:class:`ModeRefused`, a :class:`StudioError` whose message says what to do instead and which
carries the architecture it was decided on (a load that read a pickled file for the first time
says what the file turned out to be). No torch, no Qt: the GUI calls this on its own thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from studio.core.errors import StudioError

MODES = ("txt2img", "img2img", "inpaint")
MODE_NAMES = {"txt2img": "Text to image", "img2img": "Image to image", "inpaint": "Inpaint"}
# arch -> mode -> (why, one line for a greyed-out choice; the error's message, with {name})
_REFUSED: dict[str, dict[str, tuple[str, str]]] = {
    "sdxl-refiner": {
        "txt2img": (
            "An SDXL refiner refines an existing image: use Image to image or Inpaint, or "
            "choose a base model for Text to image.",
            "{name} is an SDXL refiner: it refines an existing image and cannot make one from a "
            "prompt alone. Use Image to image (or Inpaint) with a picture to refine (--image on "
            "the command line), or pick a base model (SD 1.x, SD 2.x, SDXL) for Text to image.",
        ),
    },
}
# Architectures that only refine an existing image (image to image, inpaint): no text to image.
IMAGE_ONLY_ARCHS = frozenset(arch for arch, refused in _REFUSED.items() if "txt2img" in refused)


class ModeRefused(StudioError):
    """A model cannot run in a mode (the SDXL refiner asked for text to image).

    ``arch`` and ``inpainting`` are what the refusal was decided on: for a pickled file read
    for the first time, what its tensors tell.
    """

    def __init__(
        self, message: str, *, name: str, mode: str, arch: str, inpainting: bool = False
    ) -> None:
        super().__init__(message)
        self.name, self.mode, self.arch, self.inpainting = name, mode, arch, inpainting


@dataclass(frozen=True)
class ModeSupport:
    """The modes one architecture supports, and for each refused mode why (one line)."""

    arch: str
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(m for m in MODES if m not in self.refused)

    def allows(self, mode: str) -> bool:
        return mode not in self.refused

    def why_not(self, mode: str) -> str:
        """The reason ``mode`` is refused, "" when it is allowed."""
        return self.refused.get(mode, "")


def _arch_of(entry_or_arch: Any) -> str:
    if isinstance(entry_or_arch, str):
        return entry_or_arch
    return str(getattr(entry_or_arch, "arch", "") or "unknown")


def modes_for(entry_or_arch: Any) -> ModeSupport:
    """What a :class:`~studio.engine.prompt.library.ModelEntry` (or an arch string) can do.
    ``None`` (no model) and architectures Studio does not know allow every mode."""
    arch = _arch_of(entry_or_arch) if entry_or_arch is not None else "unknown"
    return ModeSupport(arch, {mode: why for mode, (why, _) in _REFUSED.get(arch, {}).items()})


def allows_txt2img(entry_or_arch: Any) -> bool:
    return modes_for(entry_or_arch).allows("txt2img")


def refusal(mode: str, arch: str, name: str, *, inpainting: bool = False) -> ModeRefused | None:
    """The error for running ``name`` (of ``arch``) in ``mode``, None when that is allowed."""
    refused = _REFUSED.get(arch, {}).get(mode)
    if refused is None:
        return None
    message = refused[1].format(name=name)
    return ModeRefused(message, name=name, mode=mode, arch=arch, inpainting=inpainting)


def check_mode(mode: str, arch: str, name: str, *, inpainting: bool = False) -> None:
    """Raise :class:`ModeRefused` when ``arch`` cannot run ``mode``."""
    error = refusal(mode, arch, name, inpainting=inpainting)
    if error is not None:
        raise error
