"""``studio score``: rank the images of a folder by how unusual a trained run finds them.

Writes a CSV (rank, path, then every score the run's family offers, the ranking one first)
and prints the most unusual images. Heavy imports happen inside :func:`cmd_score`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from studio.cli.running import run_job
from studio.core.errors import StudioError
from studio.core.safefiles import printable

EXAMPLE = """example:
  studio score --run runs/moths --data ~/Pictures/moths --out scores.csv --top 20
  studio score --run runs/moths-vae --data new_batch/ --out odd.csv --score neg_elbo

Scores (higher = more unusual), by family: VAE recon (default) and neg_elbo; VQ-VAE recon;
flow bits_per_dim; diffusion denoise; GAN projection (`studio families --settings` lists them).
"""

SHOWN = 10  # most unusual images printed when --top is not given


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``score`` command to ``subparsers`` (``common`` carries ``--device``)."""
    p = subparsers.add_parser(
        "score",
        parents=[common],
        help="rank a folder's images by how unusual a run finds them",
        description="Find the odd ones out: score every image of a folder with a trained run "
        "and write the ranked list (most unusual first) as CSV.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--data", required=True, help="image folder to score")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--score", help="which score ranks the images (default: the family's first)")
    p.add_argument("--top", type=int, help="keep only the K most unusual images in the CSV")
    p.add_argument("--seed", type=int, default=0, help="seed of the scores' random draws")
    p.add_argument("--batch-size", type=int, default=16, help="images scored at once")
    return p


def cmd_score(args: argparse.Namespace) -> int:
    from studio.engine.score import score_job, write_csv

    if args.top is not None and args.top < 1:
        raise StudioError("--top must be at least 1")
    if args.batch_size < 1:
        raise StudioError("--batch-size must be at least 1")
    out = Path(args.out)
    if out.is_dir():
        raise StudioError(
            f"--out {printable(out)} is a folder; give a file name such as scores.csv"
        )
    if not Path(args.run).is_dir():
        raise StudioError(f"There is no run folder at {printable(args.run)}.")
    report = run_job(
        score_job(
            args.run,
            args.data,
            score=args.score,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
        )
    )
    for skipped in report.skipped:
        print(f"skipped {printable(skipped.path)}: {skipped.reason}")
    write_csv(report, out, args.top)
    option = report.option()
    kept = len(report.images) if args.top is None else min(args.top, len(report.images))
    print(
        f"scored {len(report.images)} images with {report.family} ranked by {option.label} "
        f"({option.unit}); wrote {kept} rows to {printable(out)}"
    )
    for img in report.images[: args.top or SHOWN]:
        print(f"{img.rank:>5}  {img.scores[report.ranked_by]:.4g}  {printable(img.path)}")
    return 0
