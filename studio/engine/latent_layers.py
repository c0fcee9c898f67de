"""Layer mixing in a layered latent space (``LatentSpec.layers``: StyleGAN's w+), as a grid.

:func:`~studio.engine.latent_base.mix_layers` takes the layers below a crossover from one
latent and the rest from another. :func:`mix_grid` lays out every pair of a set of latents the
way the StyleGAN paper shows style mixing, which is how an artist reads it:

```
            B1     B2     B3        <- the latents the fine layers (colour, texture) come from
    A1   A1xB1  A1xB2  A1xB3
    A2   A2xB1  A2xB2  A2xB3        cell (i, j): A_i's coarse layers (below the crossover),
    A3   ...                        B_j's fine ones; on the diagonal A_i itself
```

The first row shows the B latents as drawn, the first column the A latents, the corner is
empty. :func:`save_png` writes the grid atomically and never over an existing file unless told.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from studio.core import atomic
from studio.core.errors import StudioError
from studio.core.imaging import make_grid
from studio.core.jobs import Progress
from studio.engine.latent_base import LatentSpace, mix_layers

MAX_LATENTS = 12  # a 13 x 13 grid: beyond that the tiles are too small to read
PAD = 4  # pixels between tiles (of the enlarged grid)
MIN_TILE = 128  # tiles are enlarged (nearest neighbour) to at least this many pixels


def tile_scale(resolution: int) -> int:
    """How much each tile is enlarged: a 16 px model's tiles become 128 px."""
    return max(1, MIN_TILE // max(1, int(resolution)))


def mix_grid_job(
    space: LatentSpace, latents: Sequence[np.ndarray], crossover: int
) -> Generator[Progress, None, np.ndarray]:
    """The grid of every mix of ``latents`` at ``crossover`` (see the module notes), as an
    H x W x 3 uint8 image; one progress report per row, cancellable between rows."""
    if not space.layered:
        raise StudioError(f"{space.display_name} takes one latent for all its layers: no mixing.")
    zs = [np.asarray(z, np.float32).reshape(-1) for z in latents]
    if not 2 <= len(zs) <= MAX_LATENTS:
        raise StudioError(f"Mix between 2 and {MAX_LATENTS} kept latents, not {len(zs)}.")
    if any(z.size != space.dim for z in zs):
        raise StudioError("A kept latent comes from another model: it cannot be mixed here.")
    n, r = len(zs), space.resolution
    originals = space.decode(np.stack(zs))
    blank = np.full((1, r, r, 3), 24, np.uint8)
    rows = [np.concatenate([blank, originals])]  # the corner, then the B latents
    for i, a in enumerate(zs):
        yield Progress("mix", i, n, f"Mixing row {i + 1} of {n}")
        mixes = np.stack([mix_layers(a, b, crossover, space.layers) for b in zs])
        rows.append(np.concatenate([originals[i : i + 1], space.decode(mixes)]))
    yield Progress("mix", n, n, "Laying out the grid")
    tiles = np.concatenate(rows)
    scale = tile_scale(r)
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    return make_grid(tiles, nrow=n + 1, pad=PAD)


def save_png(image: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``image`` (H x W x 3 uint8) as a PNG, atomically; an existing file is refused
    unless ``overwrite`` (the save dialog asked). A missing ``.png`` suffix is added."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    if not path.parent.is_dir():
        raise StudioError(f"There is no folder {path.parent} to save into.")
    if path.is_dir() or path.is_symlink() or (path.exists() and not overwrite):
        raise StudioError(f"{path.name} already exists: choose another name.")
    with atomic.atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")
    return path
