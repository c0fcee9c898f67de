"""``studio upscale``: enlarge an image 2x or 4x with a super-resolution run
(:mod:`studio.engine.upscale`); heavy imports happen inside the command."""

from __future__ import annotations

import argparse
from pathlib import Path

from studio.cli.running import run_job
from studio.core.errors import StudioError
from studio.core.options import SAMPLERS, UPSCALE_TILE
from studio.core.safefiles import printable

EXAMPLE = """example:
  studio train --family i2i.superres --data photos --resolution 64 --out runs/sr
  studio upscale --run runs/sr --image small.png --out large.png
  studio upscale --run runs/sr --image big.jpg --out bigger.png --steps 10 --tile 96

The image may have any size: it is upscaled in overlapping tiles of --tile input pixels,
blended without seams (--tile 0: in one piece, for small images). Ctrl-C cancels. An existing
--out is never replaced unless --force is given.
"""


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add ``upscale`` to ``subparsers`` (``common`` carries ``--device``)."""
    p = subparsers.add_parser(
        "upscale",
        parents=[common],
        help="enlarge an image with a super-resolution run",
        description="Upscale an image 2x or 4x (the run's scale) with a diffusion "
        "super-resolution run, tile by tile.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run folder of a super-resolution family")
    p.add_argument("--image", required=True, help="the image to upscale (any size)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--steps", type=int, help="sampler steps (default: the sampler's own)")
    p.add_argument("--sampler", choices=SAMPLERS, help="dpm++ (default), ddim or ddpm")
    p.add_argument(
        "--tile",
        type=int,
        default=UPSCALE_TILE,
        help=f"tile size in input pixels (default {UPSCALE_TILE}; 0 = the whole image at once)",
    )
    p.add_argument("--seed", type=int, default=0, help="the noise of the output")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    return p


def cmd_upscale(args: argparse.Namespace) -> int:
    """Run ``studio upscale``; returns the exit code (errors raise StudioError)."""
    import numpy as np

    from studio.engine.compress import write_image
    from studio.engine.images import ImageRejected, open_image
    from studio.engine.upscale import check_upscales, upscale_job

    out = Path(args.out)
    if out.is_dir():
        raise StudioError(f"--out {printable(out)} is a folder; give a file name.")
    if (out.exists() or out.is_symlink()) and not args.force:
        raise StudioError(
            f"{printable(out)} already exists; choose another name, or pass --force to replace it."
        )
    if args.tile < 0:
        raise StudioError("--tile must be 0 (the whole image) or a size in pixels.")
    if args.steps is not None and args.steps < 1:
        raise StudioError("--steps must be at least 1.")
    check_upscales(args.run)
    if not Path(args.image).is_file():
        raise StudioError(f"There is no image at {printable(args.image)}.")
    try:
        image = np.asarray(open_image(args.image), dtype=np.uint8)
    except ImageRejected as err:
        raise StudioError(f"cannot read the image {printable(args.image)}: {err}") from None
    result = run_job(
        upscale_job(
            args.run,
            image,
            seed=args.seed,
            steps=args.steps,
            sampler=args.sampler,
            tile=args.tile,
            device=args.device,
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image(out, result, force=args.force)
    h, w = result.shape[:2]
    print(f"wrote {printable(out)} ({w} x {h} pixels)")
    return 0
