"""``studio compress`` and ``studio decompress``: a run with discrete codes (a VQ-VAE) used
as an image codec. See :mod:`studio.engine.compress`; heavy imports happen inside the
commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from studio.cli.running import run_job
from studio.core.errors import StudioError
from studio.core.safefiles import printable

EXAMPLE = """example:
  studio compress --run runs/photos-vq --image holiday.jpg --out holiday.svq
  studio decompress --run runs/photos-vq holiday.svq --out holiday-decoded.png

The image may have any size: it is coded in squares of the run's resolution (edges padded,
the size kept). The codes are arithmetic-coded with their frequencies measured on the run's
training images (measured once, kept in RUN/codec/). A file decodes only with the run, and
the weights, that made it. Existing files are never replaced unless --force is given.
"""


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add ``compress`` and ``decompress`` to ``subparsers`` (``common`` carries ``--device``)."""
    p = subparsers.add_parser(
        "compress",
        parents=[common],
        help="compress an image with a VQ-VAE run (a learned codec)",
        description="Compress an image into a small .svq file with a run that has discrete "
        "codes (a VQ-VAE), and print its bits per pixel, PSNR and SSIM.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run folder of a family with discrete codes")
    p.add_argument("--image", required=True, help="the image to compress (any size)")
    p.add_argument("--out", required=True, help="the compressed file to write (FILE.svq)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    q = subparsers.add_parser(
        "decompress",
        parents=[common],
        help="decode a .svq file made by 'studio compress'",
        description="Decode a compressed image with the run that made it; write it as PNG.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--run", required=True, help="the run folder the file was made with")
    q.add_argument("file", help="the compressed file (.svq)")
    q.add_argument("--out", required=True, help="the PNG to write")
    q.add_argument("--force", action="store_true", help="replace --out if it exists")
    return p


def _check_run(run: str) -> None:
    from studio.engine.compress import check_codes

    if not Path(run).is_dir():
        raise StudioError(f"There is no run folder at {printable(run)}.")
    check_codes(run)


def _check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise StudioError(f"--out {printable(out)} is a folder; give a file name.")
    if (out.exists() or out.is_symlink()) and not force:
        raise StudioError(
            f"{printable(out)} already exists; choose another name, or pass --force to replace it."
        )


def cmd_compress(args: argparse.Namespace) -> int:
    import numpy as np

    from studio.engine.compress import compress_job
    from studio.engine.images import ImageRejected, open_image

    out = Path(args.out)
    _check_out(out, args.force)
    _check_run(args.run)
    if not Path(args.image).is_file():
        raise StudioError(f"There is no image at {printable(args.image)}.")
    try:
        image = np.asarray(open_image(args.image), dtype=np.uint8)
    except ImageRejected as err:
        raise StudioError(f"cannot read the image {printable(args.image)}: {err}") from None
    report = run_job(compress_job(args.run, image, out, force=args.force, device=args.device))
    h, w = report.original.shape[:2]
    down, across = report.tiles
    print(
        f"wrote {printable(out)}: {report.file_bytes} bytes for {w} x {h} pixels, "
        f"{report.bits_per_pixel:.3f} bits/pixel; PSNR {report.psnr:.2f} dB, "
        f"SSIM {report.ssim:.4f} ({across} x {down} tiles, {report.codes} codes; "
        f"code frequencies {report.table_source})"
    )
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from studio.engine.compress import decompress_job, write_image

    out = Path(args.out)
    _check_out(out, args.force)
    _check_run(args.run)
    if not Path(args.file).is_file():
        raise StudioError(f"There is no compressed file at {printable(args.file)}.")
    image = run_job(decompress_job(args.run, args.file, device=args.device))
    write_image(out, image, force=args.force)
    h, w = image.shape[:2]
    print(f"wrote {printable(out)} ({w} x {h} pixels)")
    return 0
