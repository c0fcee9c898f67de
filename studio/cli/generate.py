"""``studio generate``: text-to-image, image-to-image and inpainting with a model on disk.

The mode follows from the inputs: ``--image`` alone is image-to-image, ``--image`` with
``--mask`` is inpainting (white = repaint, black = keep), neither is text-to-image. Every PNG
written carries its full settings (see :mod:`studio.engine.prompt.pngmeta`); with ``--batch N``
> 1 the images go to ``OUT-1.png`` ... ``OUT-N.png``. Heavy imports happen inside
:func:`cmd_generate`, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLE = """examples:
  studio generate --model ~/models/sd15 --prompt "a red fox in the snow" --out fox.png
  studio generate --model sd15.safetensors --prompt "oil painting" --image photo.jpg \\
      --strength 0.6 --out painting.png
  studio generate --model ~/models/sd15-inpainting --prompt "a wooden door" --image house.png \\
      --mask door.png --out door.png --batch 4 --seed 7
"""


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``generate`` command to ``subparsers`` (``common`` carries ``--device``)."""
    from studio.engine.prompt.request import MEMORY_MODES, SCHEDULERS

    p = subparsers.add_parser(
        "generate",
        parents=[common],
        help="make images from a prompt with a Stable Diffusion model (or a prompt-trained run)",
        description="Text-to-image, image-to-image (--image) and inpainting (--image and --mask) "
        "with a Stable Diffusion model on disk (a diffusers folder or a .safetensors file), a "
        "model-library id, or a Studio run trained with prompts. Nothing is downloaded.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="model folder or file, or a library id")
    p.add_argument("--prompt", help="what to draw")
    p.add_argument(
        "--settings-from",
        metavar="PNG",
        help="take the model, prompts, steps, guidance, sampler, seed and size from a "
        "PNG's settings (Studio's or AUTOMATIC1111's); options given here win",
    )
    p.add_argument("--negative", help="what to avoid (negative prompt)")
    p.add_argument("--steps", type=int, help="sampler steps (default 30)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 7.5)")
    p.add_argument("--scheduler", choices=tuple(SCHEDULERS), help="sampler (default dpmpp_2m)")
    p.add_argument("--seed", type=int, help="seed of the first image (then +1, ...; default 0)")
    p.add_argument("--width", type=int, help="multiple of 8 (default 512, or the image's size)")
    p.add_argument("--height", type=int, help="multiple of 8 (default 512, or the image's size)")
    p.add_argument("--batch", type=int, default=1, help="how many images (seeds seed, seed+1, ...)")
    p.add_argument("--image", help="start from this image (image-to-image / inpainting)")
    p.add_argument("--mask", help="inpainting mask: white = repaint, black = keep")
    p.add_argument(
        "--strength",
        type=float,
        default=0.75,
        help="how much of the image to change, 0..1 (image-to-image, inpainting)",
    )
    p.add_argument("--mask-blur", type=int, default=4, help="seam blend radius in pixels")
    p.add_argument(
        "--only-masked",
        action="store_true",
        help="inpaint a window around the mask at full resolution and paste it back",
    )
    p.add_argument(
        "--padding", type=int, default=32, help="context pixels around the mask (--only-masked)"
    )
    p.add_argument(
        "--memory",
        choices=MEMORY_MODES,
        default="auto",
        help="auto picks from free GPU memory; low = slicing, tiling and CPU offload",
    )
    p.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the UNet (GPU; slow first image)"
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="agree to read a pickled .ckpt/.bin checkpoint (weights-only mode)",
    )
    p.add_argument(
        "--out", required=True, help="OUT.png (OUT-1.png, OUT-2.png ... with --batch > 1)"
    )
    return p


def output_paths(out: str | Path, n: int) -> list[Path]:
    """``OUT.png`` for one image, ``OUT-1.png`` ... ``OUT-n.png`` for several."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}.png") for i in range(1, n + 1)]


def cmd_generate(args: argparse.Namespace) -> int:
    """Run ``studio generate``; returns the exit code (errors raise StudioError)."""
    import numpy as np

    from studio.cli.inpaint import read_mask
    from studio.cli.running import run_job
    from studio.core.errors import StudioError
    from studio.core.jobs import CancelToken
    from studio.engine.images import ImageRejected, open_image
    from studio.engine.prompt.generate import generate_job
    from studio.engine.prompt.pngmeta import write_png
    from studio.engine.prompt.request import GenerateRequest, snap8

    recalled = _settings_from(args.settings_from)
    _fill(args, recalled)
    image = mask = None
    if args.mask and not args.image:
        raise StudioError("--mask needs --image: the picture the mask belongs to.")
    if args.image:
        try:
            image = np.asarray(open_image(args.image), dtype=np.uint8)
        except ImageRejected as err:
            raise StudioError(f"cannot read the image {args.image}: {err}") from None
    if args.mask:
        soft, note = read_mask(args.mask, (image.shape[1], image.shape[0]))
        if note:
            print(note, file=sys.stderr)
        mask = (soft >= 0.5).astype(np.uint8) * 255
    mode = "inpaint" if mask is not None else "img2img" if image is not None else "txt2img"
    default_w = snap8(image.shape[1]) if image is not None else recalled.get("width", 512)
    default_h = snap8(image.shape[0]) if image is not None else recalled.get("height", 512)
    run_size = _run_resolution(args.model)
    if image is None and run_size:  # a model trained here draws at its own size
        default_w = default_h = snap8(run_size)
    request = GenerateRequest(
        model=args.model,
        mode=mode,
        prompt=args.prompt,
        negative_prompt=args.negative,
        steps=args.steps,
        guidance=args.guidance,
        scheduler=args.scheduler,
        seed=args.seed,
        width=args.width if args.width is not None else default_w,
        height=args.height if args.height is not None else default_h,
        batch_count=args.batch,
        strength=args.strength,
        image=image,
        mask=mask,
        mask_blur=args.mask_blur,
        only_masked=args.only_masked,
        only_masked_padding=args.padding,
        memory=args.memory,
        compile=args.compile,
        device=args.device,
        dtype=args.dtype,
        preview_every=0,  # nobody looks at previews in a terminal
    )
    request.require_inputs()
    token = CancelToken()
    try:
        result = run_job(generate_job(request, token, allow_pickle=args.allow_pickle), token)
    except StudioError as err:
        if "pickled checkpoint" in str(err) and not args.allow_pickle:
            raise StudioError(f"{err} To agree, run again with --allow-pickle.") from None
        raise
    paths = output_paths(args.out, len(result.images))
    for path, img, meta in zip(paths, result.images, result.metadata):
        write_png(path, img, meta)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


_DEFAULTS = {"negative": "", "steps": 30, "guidance": 7.5, "scheduler": "dpmpp_2m", "seed": 0}
#: ``studio generate`` option -> the metadata key a PNG's settings hold it under.
_RECALLED = {
    "model": "model",
    "prompt": "prompt",
    "negative": "negative_prompt",
    "steps": "steps",
    "guidance": "guidance",
    "scheduler": "scheduler",
    "seed": "seed",
}


def _settings_from(png: str | None) -> dict:
    """The settings a PNG carries ({} without ``--settings-from``); what they hold that cannot
    be used here is printed, one line each."""
    if png is None:
        return {}
    from studio.core.errors import StudioError
    from studio.core.safefiles import printable
    from studio.engine.prompt.pngmeta import read_png_metadata

    if not Path(png).is_file():
        raise StudioError(f"--settings-from {printable(png)}: no such file.")
    meta = read_png_metadata(png)
    if not meta:
        raise StudioError(
            f"{printable(png)} carries no generation settings (only PNGs saved by Studio or "
            "by tools that write a 'parameters' text do)."
        )
    for line in meta.get("unrestored") or ():
        print(f"not restored from {printable(Path(png).name)}: {line}", file=sys.stderr)
    return meta


def _fill(args: argparse.Namespace, recalled: dict) -> None:
    """Options not given take the recalled value, else their default; --model and --prompt
    are needed from one or the other."""
    from studio.core.errors import StudioError

    for option, key in _RECALLED.items():
        if getattr(args, option) is None and key in recalled:
            setattr(args, option, recalled[key])
    for option, default in _DEFAULTS.items():
        if getattr(args, option) is None:
            setattr(args, option, default)
    missing = [f"--{name}" for name in ("model", "prompt") if getattr(args, name) is None]
    if missing:
        raise StudioError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} needed "
            "(or --settings-from a PNG that holds them)."
        )


def _run_resolution(model: str) -> int | None:
    """The training resolution of a Studio run folder, else None (a Stable Diffusion model)."""
    from studio.engine.prompt.library import run_resolution
    from studio.engine.runs import RunFolder

    run = RunFolder(model)
    return (run_resolution(run) or None) if run.config_path.is_file() else None
