"""Files of the latent explorer: named sliders kept with a run, and exported strips.

Named sliders live in the run folder, so they travel with the model they belong to:

```
<run>/latent/sliders.json         names, spreads, accuracies, ids, in slider order
<run>/latent/sliders.safetensors  one unit direction per slider, keyed by its id
```

Both files are written atomically, tensors first. A crash between the two writes leaves the
old JSON with the new tensors, which still holds every direction the old JSON names (ids are
never reused), so the old set loads intact; a slider whose tensor is missing is skipped.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio.core import atomic
from studio.core.errors import StudioError
from studio.core.imaging import make_grid

LATENT_DIR = "latent"
SLIDERS_JSON = "sliders.json"
SLIDERS_TENSORS = "sliders.safetensors"
FORMAT_VERSION = 1
ANIMATION_SUFFIXES = (".gif", ".webp")


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class NamedSlider:
    """A direction the user made (or named): a unit ``direction`` (dim) and the ``std`` of
    latents along it, which sets the slider's range. ``accuracy`` is the classifier's training
    accuracy when it was fitted from marked samples; ``label`` the class it was fitted for."""

    name: str
    direction: np.ndarray
    std: float = 1.0
    accuracy: float | None = None
    label: int | None = None
    created: float = field(default_factory=time.time)
    id: str = field(default_factory=_new_id)

    @property
    def dim(self) -> int:
        return int(np.asarray(self.direction).size)


def sliders_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / LATENT_DIR


def load_sliders(run_dir: str | Path, dim: int | None = None) -> list[NamedSlider]:
    """The run's named sliders, in order ([] when it has none). With ``dim``, sliders of
    another size (from an older model in the same folder) are left out."""
    from safetensors.numpy import load_file

    folder = sliders_dir(run_dir)
    meta_path, tensor_path = folder / SLIDERS_JSON, folder / SLIDERS_TENSORS
    if not meta_path.is_file():
        return []
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_path)) if tensor_path.is_file() else {}
    except (OSError, ValueError) as err:
        raise StudioError(f"The run's saved sliders could not be read: {err}") from None
    out = []
    for entry in meta.get("sliders", []):
        vec = tensors.get(str(entry.get("id")))
        if vec is None or (dim is not None and vec.size != dim):
            continue
        out.append(
            NamedSlider(
                name=str(entry["name"]),
                direction=vec.astype(np.float32).reshape(-1),
                std=float(entry.get("std", 1.0)),
                accuracy=None if entry.get("accuracy") is None else float(entry["accuracy"]),
                label=None if entry.get("label") is None else int(entry["label"]),
                created=float(entry.get("created", 0.0)),
                id=str(entry["id"]),
            )
        )
    return out


def save_sliders(run_dir: str | Path, sliders: Sequence[NamedSlider], family: str = "") -> None:
    """Replace the run's named sliders with ``sliders`` (atomic; tensors first)."""
    from safetensors.numpy import save_file

    names = [s.name.strip() for s in sliders]
    if any(not n for n in names):
        raise StudioError("Every slider needs a name.")
    if len(set(names)) != len(names):
        raise StudioError("Two sliders have the same name.")
    folder = sliders_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {s.id: np.ascontiguousarray(s.direction, np.float32).reshape(-1) for s in sliders}
    with atomic.atomic_path(folder / SLIDERS_TENSORS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": str(FORMAT_VERSION)})
    entries = [
        {
            "id": s.id,
            "name": s.name.strip(),
            "std": float(s.std),
            "accuracy": s.accuracy,
            "label": s.label,
            "created": s.created,
            "dim": s.dim,
        }
        for s in sliders
    ]
    atomic.write_json(
        folder / SLIDERS_JSON, {"version": FORMAT_VERSION, "family": family, "sliders": entries}
    )


def add_slider(run_dir: str | Path, slider: NamedSlider, family: str = "") -> list[NamedSlider]:
    """Append ``slider`` to the run's sliders (replacing one of the same name); return all."""
    kept = [s for s in load_sliders(run_dir) if s.name != slider.name.strip()]
    sliders = [*kept, slider]
    save_sliders(run_dir, sliders, family)
    return sliders


def remove_slider(run_dir: str | Path, name: str, family: str = "") -> list[NamedSlider]:
    """Drop the slider called ``name``; return the rest."""
    sliders = [s for s in load_sliders(run_dir) if s.name != name]
    save_sliders(run_dir, sliders, family)
    return sliders


# -- exporting interpolation strips ---------------------------------------------------------------


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement: a 32 px frame stays crisp in a viewer."""
    if scale <= 1:
        return frames
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def strip_image(frames: np.ndarray, scale: int = 1, pad: int = 2) -> np.ndarray:
    """N x H x W x 3 frames side by side in one row (H' x W' x 3 uint8)."""
    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or len(frames) == 0:
        raise StudioError("There are no frames to export.")
    return make_grid(_upscale(frames, scale), nrow=len(frames), pad=pad * max(1, scale))


def export_strip_png(frames: np.ndarray, path: str | Path, scale: int = 4) -> Path:
    """Save the frames as one PNG strip; returns the path."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    strip = Image.fromarray(strip_image(frames, scale))
    with atomic.atomic_path(path) as tmp:
        strip.save(tmp, format="PNG")
    return path


def export_animation(
    frames: np.ndarray,
    path: str | Path,
    fps: float = 10.0,
    scale: int = 4,
    boomerang: bool = True,
) -> Path:
    """Save the frames as a looping animated GIF or WebP (by ``path``'s suffix). With
    ``boomerang`` the animation plays forth and back, so the loop has no jump."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise StudioError(
            f"Animations are saved as {' or '.join(ANIMATION_SUFFIXES)}, not {suffix or 'no suffix'}."
        )
    frames = _upscale(np.asarray(frames, np.uint8), scale)
    if frames.ndim != 4 or len(frames) == 0:
        raise StudioError("There are no frames to export.")
    order = list(range(len(frames)))
    if boomerang and len(frames) > 2:
        order += order[-2:0:-1]
    images = [Image.fromarray(frames[i]) for i in order]
    duration = max(20, int(round(1000 / max(fps, 0.1))))
    options: dict = {"save_all": True, "append_images": images[1:], "duration": duration, "loop": 0}
    if suffix == ".webp":
        options.update(lossless=True, format="WEBP")
    else:
        options.update(format="GIF", disposal=2)
    with atomic.atomic_path(path) as tmp:
        images[0].save(tmp, **options)
    return path
