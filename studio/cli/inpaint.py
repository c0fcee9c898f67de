"""``studio inpaint``: regenerate the masked part of an image with a trained run.

The mask is an image file: white = regenerate, black = keep, grey = partly (any mode; it is
converted to greyscale, transparent pixels count as black). A mask whose size differs from the
image's is resized to the image (bilinear), with a note on stderr. With ``--variations N`` > 1
the results go to ``OUT_0.png``, ``OUT_1.png``, ...

Heavy imports (torch, the engine) happen inside :func:`cmd_inpaint`, so building the parser
stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

EXAMPLE = """example:
  studio inpaint --run runs/faces --image photo.jpg --mask hole.png --out fixed.png \\
      --variations 4 --preset quality
"""


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``inpaint`` command to ``subparsers`` (``common`` carries ``--device``)."""
    p = subparsers.add_parser(
        "inpaint",
        parents=[common],
        help="regenerate the masked part of an image",
        description="Regenerate the white part of a mask in an image with a trained run "
        "(diffusion: RePaint or masked sampling; VAE, flow, GAN: latent optimisation).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--image", required=True, help="the image to edit")
    p.add_argument("--mask", required=True, help="mask image: white = regenerate, black = keep")
    p.add_argument("--out", required=True, help="OUT.png (OUT_0.png, OUT_1.png ... with -N > 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variations", "-N", type=int, default=1, help="how many results")
    p.add_argument("--feather", type=float, default=4.0, help="blend radius in pixels")
    p.add_argument(
        "--mode",
        choices=("masked-only", "whole"),
        default="masked-only",
        help="masked-only: inpaint a window around the mask (sharp on big images); "
        "whole: resize the whole image to the model's size and back (blurry on big images)",
    )
    p.add_argument("--padding", type=int, default=32, help="context pixels around the mask")
    p.add_argument("--preset", choices=("fast", "quality"), default="fast")
    p.add_argument(
        "--method",
        default="",
        help="for a family with several ways to inpaint (see `studio families`); diffusion: "
        "repaint (resampling, better seams, the default) or masked (DDIM/DPM++, one pass)",
    )
    p.add_argument("--steps", type=int, help="override the preset's step count")
    p.add_argument("--prior-weight", type=float, help="latent models: weight of the prior term")
    p.add_argument("--class", dest="label", help="class name or index (conditional models)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (diffusion)")
    return p


def read_mask(path: str | Path, size: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """The mask file as float32 H x W in [0, 1] at ``size`` (width, height), and a note when
    it had to be resized."""
    from PIL import Image

    from studio.core.errors import StudioError
    from studio.engine.images import ImageRejected, open_image

    try:
        img = open_image(path, background=(0, 0, 0)).convert("L")
    except ImageRejected as err:
        raise StudioError(f"cannot read the mask {path}: {err}") from None
    note = None
    if img.size != size:
        note = (
            f"note: the mask is {img.size[0]}x{img.size[1]} but the image {size[0]}x{size[1]}; "
            "resizing the mask to the image"
        )
        img = img.resize(size, Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0, note


def output_paths(out: str | Path, n: int) -> list[Path]:
    """``OUT.png`` for one result, ``OUT_0.png`` ... ``OUT_{n-1}.png`` for several."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}.png") for i in range(n)]


def cmd_inpaint(args: argparse.Namespace) -> int:
    """Run ``studio inpaint``; returns the exit code (errors raise StudioError)."""
    from studio.cli.running import class_index, run_job
    from studio.core.errors import StudioError
    from studio.engine.device import resolve_device
    from studio.engine.images import ImageRejected, open_image
    from studio.engine.inpaint import InpaintRequest, describe_plan, inpaint_job
    from studio.engine.sample import load_run_model
    from studio.engine.train import save_png

    try:
        image = open_image(args.image)
    except ImageRejected as err:
        raise StudioError(f"cannot read the image {args.image}: {err}") from None
    mask, note = read_mask(args.mask, image.size)
    if note:
        print(note, file=sys.stderr)
    request = InpaintRequest(
        image=np.asarray(image, dtype=np.uint8),
        mask=mask,
        seed=args.seed,
        variations=args.variations,
        feather=args.feather,
        mode=args.mode.replace("-", "_"),
        padding=args.padding,
        preset=args.preset,
        method=args.method,
        steps=args.steps,
        prior_weight=args.prior_weight,
        conditions={"label": class_index(Path(args.run), args.label), "guidance": args.guidance},
    )
    model = load_run_model(args.run, resolve_device(args.device))
    print(describe_plan(model, request))
    results = run_job(inpaint_job(model, request))
    paths = output_paths(args.out, len(results))
    for path, result in zip(paths, results):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(path, result)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
