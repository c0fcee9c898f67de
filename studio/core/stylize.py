"""Neural style transfer's settings and where its VGG-19 weights come from, declared once.

The engine (:mod:`studio.engine.stylize`), ``studio stylize``'s flags and the Canvas's
*Stylize…* dialog all read :class:`StyleSettings`; this module imports neither torch nor Qt,
so building the command line's parser stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from studio.core.errors import StudioError

INITS = ("content", "noise")
MIN_SIZE, MAX_SIZE = 16, 4096
MAX_STEPS = 100_000
WEIGHTS_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
WHERE_TO_GET = (
    f"Download torchvision's VGG-19 weights once from {WEIGHTS_URL} (548 MB; Studio downloads "
    "nothing) and choose that file, or a .safetensors copy of it."
)


@dataclass(frozen=True)
class StyleSettings:
    """Everything about a style transfer but its two images.

    ``size``: the working size (longer side, pixels) of both images; the result has the content
    image's aspect ratio at that size. ``init``: start from the content image or from noise
    (``seed``). ``preview_every``: iterations between live previews.
    """

    steps: int = 300
    content_weight: float = 1.0
    style_weight: float = 1e6
    tv_weight: float = 1.0
    size: int = 512
    init: str = "content"
    seed: int = 0
    preview_every: int = 5

    def check(self) -> None:
        """Refuse, in one sentence, settings that cannot work (before anything loads)."""
        if not 1 <= self.steps <= MAX_STEPS:
            raise StudioError(f"Steps must be between 1 and {MAX_STEPS:,}.")
        if self.preview_every < 1:
            raise StudioError("The preview interval must be at least 1 iteration.")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise StudioError(f"The size must be between {MIN_SIZE} and {MAX_SIZE} pixels.")
        weights = (self.content_weight, self.style_weight, self.tv_weight)
        if any(not math.isfinite(w) or w < 0 for w in weights):
            raise StudioError("The content, style and TV weights must be finite and 0 or more.")
        if self.content_weight == 0 and self.style_weight == 0:
            raise StudioError("Give the content or the style a weight above 0.")
        if self.init not in INITS:
            raise StudioError(f"The start image must be one of: {', '.join(INITS)}.")
