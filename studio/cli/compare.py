"""``studio compare``: sample and score several runs of one dataset under identical conditions.

Writes ``report.json`` (every setting needed to reproduce it), ``report.csv`` (one row per run)
and ``sheet.png`` (the runs side by side) into ``--out``, and prints the table. Heavy imports
happen inside :func:`cmd_compare`, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from studio.core.options import DEFAULT_SAMPLER, SAMPLERS

EXAMPLE = """example:
  studio compare --runs runs/gan runs/vae runs/ddpm --n 64 --seed 0 --out compare/ \\
      --sampler ddim --steps 50

All runs must be trained on the same dataset at the same resolution. FD is biased at small n:
compare numbers only between panels of one report (same n, seed and reference images).
"""


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the ``compare`` command to ``subparsers`` (``common`` carries ``--device``)."""
    p = subparsers.add_parser(
        "compare",
        parents=[common],
        help="compare runs side by side (samples, FD, KID, precision/recall, memorisation)",
        description="Sample every run with one seed and score all of them against the same "
        "held-out images with the same feature extractor.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run folders (max 6)")
    p.add_argument("--n", "-n", type=int, default=64, help="samples per run (same for every run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for report.json, report.csv, sheet.png")
    p.add_argument(
        "--sampler",
        default=DEFAULT_SAMPLER,
        help=f"diffusion runs: {', '.join(SAMPLERS)} (default {DEFAULT_SAMPLER})",
    )
    p.add_argument("--steps", type=int, help="diffusion runs: sampler steps (default per sampler)")
    p.add_argument(
        "--with",
        dest="with_",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a sampling option for every run whose family declares it "
        "(e.g. temperature=0.7; see 'studio families')",
    )
    p.add_argument(
        "--extractor-steps",
        type=int,
        default=600,
        help="training steps of the dataset's feature extractor (cached once trained)",
    )
    return p


def settings_from_args(args: argparse.Namespace):  # -> CompareSettings (imported lazily)
    """The engine settings ``args`` ask for."""
    from studio.engine.compare import CompareSettings

    return CompareSettings(
        runs=[Path(r) for r in args.runs],
        n=args.n,
        seed=args.seed,
        diffusion_sampler=args.sampler,
        diffusion_steps=args.steps,
        overrides=with_overrides(args.runs, getattr(args, "with_", [])),
        device=args.device,
        extractor_steps=args.extractor_steps,
    )


def with_overrides(runs: list[str], pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``--with NAME=VALUE`` as per-run sampling values, for the runs whose family declares
    NAME (studio.models.capabilities.SamplingOption); a NAME no run declares is refused."""
    if not pairs:
        return {}
    from studio.core.errors import StudioError
    from studio.engine.runs import RunFolder
    from studio.models.capabilities import parse_sampling
    from studio.models.registry import get_family

    names = {pair.partition("=")[0].strip() for pair in pairs}
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        try:
            family = get_family(str(RunFolder(run).read_config().get("family", "")))
        except KeyError:
            continue  # the compare job names the unknown family
        options = tuple(o for o in family.sampling_options if o.name in names)
        mine = [p for p in pairs if p.partition("=")[0].strip() in {o.name for o in options}]
        if mine:
            try:
                out[str(run)] = parse_sampling(options, mine)
            except ValueError as err:
                raise StudioError(str(err)) from None
    unused = names - {name for values in out.values() for name in values}
    if unused:
        raise StudioError(f"--with {', '.join(sorted(unused))}: no run's family takes it")
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    """Run ``studio compare``; returns the exit code (errors raise StudioError)."""
    from studio.cli.running import run_job
    from studio.engine.compare import compare_job, report_table, write_report

    report = run_job(compare_job(settings_from_args(args)))
    paths = write_report(report, args.out)
    print(report_table(report))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
