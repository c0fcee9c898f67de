"""``studio augment``: make more images of every class (or of a rare one) with a trained run.

Writes ``OUT/<class>/gen_00001.png`` ... and ``OUT/augment.json`` (the manifest); see
:mod:`studio.engine.augment`. Heavy imports happen inside :func:`cmd_augment`.
"""

from __future__ import annotations

import argparse

from studio.cli.running import run_job
from studio.core.errors import StudioError
from studio.core.safefiles import printable

EXAMPLE = """example:
  studio augment --run runs/moths-cgan --per-class 200 --out moths-more/
  studio augment --run runs/moths-cgan --fill --out moths-more/ --check-class
  studio augment --run runs/rare-vae --class luna --per-class 50 --out moths-more/

A class-conditional run draws every class (--class NAME: only that one). An unconditional run
draws one class, --class NAME, and only when it was trained on that class's images alone.
Samples closer than --min-distance (RMS pixel distance, 0..1) to a training image or its
mirror are dropped; by default the distance is the 5th percentile of how close the run's
held-out images come to the training images; 0 turns the filter off. Giving an earlier
export's folder again adds to it; any other non-empty folder is refused.
"""


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``augment`` command to ``subparsers`` (``common`` carries ``--device``)."""
    p = subparsers.add_parser(
        "augment",
        parents=[common],
        help="generate more images per class into a folder with the same class layout",
        description="Make more of a rare class: generate images per class with a trained run, "
        "drop those too close to a training image, and write them with a manifest.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run folder")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--per-class", type=int, metavar="N", help="images to make per class")
    how.add_argument(
        "--fill", action="store_true", help="make each class as large as the largest one"
    )
    p.add_argument("--out", required=True, help="new or empty folder (or an earlier export's)")
    p.add_argument("--class", dest="class_name", metavar="NAME", help="only this class")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument(
        "--min-distance",
        type=float,
        metavar="D",
        help="drop samples nearer a training image than D (0..1; 0 = keep all)",
    )
    p.add_argument(
        "--check-class",
        action="store_true",
        help="also drop samples the feature extractor gives to another class",
    )
    p.add_argument(
        "--max-attempts",
        type=float,
        default=4.0,
        metavar="F",
        help="stop a class after F x its count of draws (default 4)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="samples drawn at once")
    p.add_argument(
        "--with",
        dest="with_",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any sampling option the run's family declares (see 'studio families')",
    )
    return p


def cmd_augment(args: argparse.Namespace) -> int:
    from pathlib import Path

    from studio.engine.augment import augment_job

    if args.per_class is not None and args.per_class < 1:
        raise StudioError("--per-class must be at least 1")
    if args.min_distance is not None and not 0 <= args.min_distance <= 1:
        raise StudioError("--min-distance must be between 0 and 1")
    if not args.max_attempts >= 1:
        raise StudioError("--max-attempts must be at least 1")
    if args.batch_size < 1:
        raise StudioError("--batch-size must be at least 1")
    if not Path(args.run).is_dir():
        raise StudioError(f"There is no run folder at {printable(args.run)}.")
    sampling = _sampling(args.run, args.with_)
    report = run_job(
        augment_job(
            args.run,
            args.out,
            per_class=args.per_class,
            fill=args.fill,
            class_name=args.class_name,
            seed=args.seed,
            min_distance=args.min_distance,
            check_class=args.check_class,
            max_attempts=args.max_attempts,
            batch_size=args.batch_size,
            sampling=sampling,
            device=args.device,
        )
    )
    if report.min_distance > 0:
        print(f"minimum distance {report.min_distance:.4f} ({report.distance_source})")
    for note in report.notes:
        print(f"note: {note}")
    for cls, asked in report.asked.items():
        made, drawn = report.made[cls], report.drawn[cls]
        print(f"{printable(cls)}: made {made} of {asked} ({drawn} drawn)")
    dropped = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in report.dropped.items())
    print(f"dropped: {dropped}")
    print(f"wrote {len(report.files)} images to {printable(report.out)}")
    short = report.short
    if short:
        missing = ", ".join(f"{printable(c)} {n}" for c, n in short.items())
        print(
            f"not enough samples passed the filters within --max-attempts (missing: {missing}); "
            "raise --max-attempts or lower --min-distance"
        )
        return 2
    return 0


def _sampling(run: str, pairs: list[str]) -> dict:
    if not pairs:
        return {}
    from studio.engine.runs import RunFolder
    from studio.models.capabilities import parse_sampling
    from studio.models.registry import get_family

    family = get_family(RunFolder(run).read_config().get("family", ""))
    try:
        return parse_sampling(tuple(family.sampling_options), pairs)
    except ValueError as err:
        raise StudioError(str(err)) from None
