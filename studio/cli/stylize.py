"""``studio stylize``: repaint an image in the style of another (neural style transfer, Gatys et
al.), with a VGG-19 weights file the user downloaded once. No training run is needed.

With ``--run RUN`` (a trained feed-forward style network, ``style.fast``) it applies the run
instead: one pass, the run's own style, no ``--style`` or ``--vgg`` (``studio translate``
does the same).

Ctrl-C once stops after the current iteration and writes the image so far to ``--out``; twice
aborts and writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = """example:
  studio stylize --content photo.jpg --style starry_night.jpg --vgg ~/models/vgg19-dcbb9e9d.pth \\
      --out painted.png --steps 300 --size 512
  studio stylize --run runs/starry --content photo.jpg --out painted.png   (a trained style network)

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
    p.add_argument("--style", help="the image whose style to take")
    p.add_argument("--vgg", help="VGG-19 weights: torchvision's .pth or a .safetensors copy")
    p.add_argument(
        "--run",
        help="a trained style network's run folder: apply it (one pass) instead of "
        "optimising; no --style or --vgg",
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

    if args.run:
        return _apply_run(args, read(args.content, "content"))
    if not args.style or not args.vgg:
        raise StudioError(
            "Give --style IMG and --vgg FILE (or --run RUN to apply a trained style network)."
        )

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


def _apply_run(args: argparse.Namespace, content: object) -> int:
    """``studio stylize --run RUN``: the trained style network applied to the content image,
    written with its settings in the PNG's text (as ``studio translate`` writes them)."""
    from studio.cli.running import run_job
    from studio.core.errors import StudioError
    from studio.engine.prompt.pngmeta import write_png
    from studio.engine.runs import RunFolder
    from studio.engine.translate import check_repaints, translate_job, translation_metadata

    if args.style or args.vgg:
        raise StudioError(
            "--run applies a trained style network, which keeps its own style: leave out "
            "--style and --vgg."
        )
    if not RunFolder(args.run).exists():
        raise StudioError(f"There is no run at {args.run} (no config.json).")
    check_repaints(args.run)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    if out.exists() and out.resolve() == Path(args.content).resolve():
        raise StudioError(f"--out {out} is the content image: choose another file to write.")
    result = run_job(translate_job(args.run, content, seed=0, device=args.device))[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    size = (result.shape[1], result.shape[0])
    write_png(out, result, translation_metadata(args.run, args.content, 0, None, 0, size))
    print(f"wrote {out} ({size[0]}x{size[1]}, by {Path(args.run).name})")
    return 0
