"""``studio translate``: turn an image into another with a run of an image-to-image family
(trained with ``studio train --data A --data-b B``).

The image may have any size. Most families fit it as training images are (shorter side scaled
to the model's resolution, centre square cropped) and give an output of the model's
resolution; a fully convolutional one (CycleGAN) translates it at its own size. A run trained
on two unpaired folders translates both ways: ``--direction a2b`` (the default) or ``b2a``.
With ``-N`` > 1 the outputs (each with its own noise) go to ``OUT_0.png``, ``OUT_1.png``, ...
Each PNG carries its settings in its text chunks (run, family, input image, direction, seed),
as ``studio generate`` writes its images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from studio.core.schema import DIRECTIONS

EXAMPLE = """example:
  studio train --family i2i.pix2pix --data sketches --data-b paintings --out runs/paint
  studio translate --run runs/paint --image my_sketch.png --out painting.png
  studio train --family i2i.cyclegan --data photos --data-b paintings --out runs/style
  studio translate --run runs/style --image painting.jpg --out photo.png --direction b2a
"""


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``translate`` command to ``subparsers`` (``common`` carries ``--device``)."""
    p = subparsers.add_parser(
        "translate",
        parents=[common],
        help="turn an image into another with an image-to-image run",
        description="Translate an image (A) into its counterpart (B) with a run trained on "
        "pairs. The image is fitted to the model's resolution; the output has that size.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run folder of an image-to-image family")
    p.add_argument("--image", required=True, help="the input image (any size)")
    p.add_argument("--out", required=True, help="OUT.png (OUT_0.png, OUT_1.png ... with -N > 1)")
    p.add_argument("--seed", type=int, default=0, help="the noise of the outputs")
    p.add_argument("--variations", "-N", type=int, default=1, help="how many outputs")
    p.add_argument(
        "--direction",
        choices=DIRECTIONS,
        help="a2b (A to B, the default) or b2a, for a run trained on two unpaired folders",
    )
    return p


def cmd_translate(args: argparse.Namespace) -> int:
    """Run ``studio translate``; returns the exit code (errors raise StudioError)."""
    import numpy as np

    from studio.cli.inpaint import output_paths
    from studio.cli.running import run_job
    from studio.core.errors import StudioError
    from studio.engine.images import ImageRejected, open_image
    from studio.engine.prompt.pngmeta import write_png
    from studio.engine.runs import RunFolder
    from studio.engine.translate import check_translates, translate_job, translation_metadata

    if args.variations < 1:
        raise StudioError("-N must be at least 1")
    if not RunFolder(args.run).exists():
        raise StudioError(f"There is no run at {args.run} (no config.json).")
    check_translates(args.run, args.direction)
    if not Path(args.image).exists():
        raise StudioError(f"There is no image at {args.image}.")
    try:
        image = open_image(args.image)
    except ImageRejected as err:
        raise StudioError(f"cannot read the image {args.image}: {err}") from None
    results = run_job(
        translate_job(
            args.run,
            np.asarray(image, dtype=np.uint8),
            seed=args.seed,
            device=args.device,
            n=args.variations,
            direction=args.direction,
        )
    )
    paths = output_paths(args.out, len(results))
    for i, (path, result) in enumerate(zip(paths, results)):
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (result.shape[1], result.shape[0])
        meta = translation_metadata(args.run, args.image, args.seed, args.direction, i, size)
        write_png(path, result, meta)  # its settings in the PNG's text, as generate writes them
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
