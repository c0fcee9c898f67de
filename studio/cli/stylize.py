"""``studio stylize``: repaint an image in the style of another (neural style transfer, Gatys et
al.), with a VGG-19 weights file the user downloaded once. No training run is needed.

Ctrl-C once stops after the current iteration and writes the image so far to ``--out``; twice
aborts and writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = """example:
  studio stylize --content photo.jpg --style starry_night.jpg --vgg ~/models/vgg19-dcbb9e9d.pth \\
      --out painted.png --steps 300 --size 512

The VGG-19 weights are torchvision's file, downloaded once by you (Studio downloads nothing):
  {url}
or a .safetensors copy of it. Ctrl-C once stops after the current iteration and writes the image
so far; Ctrl-C twice aborts without writing.
"""


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``stylize`` command to ``subparsers`` (``common`` carries ``--device``)."""
    from studio.core.stylize import INITS, WEIGHTS_URL, StyleSettings

    d = StyleSettings()
    p = subparsers.add_parser(
        "stylize",
        parents=[common],
        help="repaint an image in the style of another (neural style transfer)",
        description="Optimise an image so its VGG-19 features match the content image and its "
        "Gram matrices match the style image (Gatys et al.).",
        epilog=EXAMPLE.format(url=WEIGHTS_URL),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--content", required=True, help="the image to repaint")
    p.add_argument("--style", required=True, help="the image whose style to take")
    p.add_argument(
        "--vgg", required=True, help="VGG-19 weights: torchvision's .pth or a .safetensors copy"
    )
    p.add_argument("--out", required=True, help="OUT.png")
    p.add_argument("--steps", type=int, default=d.steps, help=f"L-BFGS iterations ({d.steps})")
    p.add_argument("--content-weight", type=float, default=d.content_weight)
    p.add_argument("--style-weight", type=float, default=d.style_weight)
    p.add_argument("--tv-weight", type=float, default=d.tv_weight, help="smoothness")
    p.add_argument(
        "--size", type=int, default=d.size, help=f"working size, longer side in px ({d.size})"
    )
    p.add_argument("--init", choices=INITS, default=d.init, help="the starting image")
    p.add_argument("--seed", type=int, default=0, help="the noise of --init noise")
    return p


def cmd_stylize(args: argparse.Namespace) -> int:
    """Run ``studio stylize``; returns the exit code (errors raise StudioError)."""
    import numpy as np

    from studio.cli.running import run_job
    from studio.core.errors import StudioError
    from studio.core.jobs import CancelToken
    from studio.core.stylize import WHERE_TO_GET, StyleSettings
    from studio.engine.images import ImageRejected, open_image
    from studio.engine.monitor import save_png
    from studio.engine.stylize import StyleRequest, stylize_job

    def read(path: str, what: str) -> np.ndarray:
        if not Path(path).exists():
            raise StudioError(f"There is no {what} image at {path}.")
        try:
            return np.asarray(open_image(path), dtype=np.uint8)
        except ImageRejected as err:
            raise StudioError(f"cannot read the {what} image {path}: {err}") from None

    settings = StyleSettings(
        steps=args.steps,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        size=args.size,
        init=args.init,
        seed=args.seed,
    )
    settings.check()  # before any image or weights load
    if not Path(args.vgg).expanduser().exists():
        raise StudioError(f"There is no VGG-19 weights file at {args.vgg}. {WHERE_TO_GET}")
    request = StyleRequest(read(args.content, "content"), read(args.style, "style"), settings)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    for given, what in ((args.content, "content image"), (args.style, "style image")):
        if out.exists() and out.resolve() == Path(given).resolve():
            raise StudioError(f"--out {out} is the {what}: choose another file to write.")
    token = CancelToken()
    result = run_job(stylize_job(request, args.vgg, args.device, token), token, graceful=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png(out, result.image)
    h, w = result.image.shape[:2]
    state = (
        f"stopped at iteration {result.steps_done} of {settings.steps}"
        if result.stopped_early
        else f"{result.steps_done} iterations"
    )
    print(f"wrote {out} ({w}x{h}, {state})")
    return 0
