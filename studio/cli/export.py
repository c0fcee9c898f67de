"""``studio export``: a clean copy of a run for use outside the studio (see
:mod:`studio.engine.export`; heavy imports happen inside the command)."""

from __future__ import annotations

import argparse

from studio.cli.running import run_job
from studio.core.safefiles import printable

EXAMPLE = """examples:
  studio export runs/moths-ddpm --format diffusers exported/moths
  studio export runs/moths-ddpm --format safetensors exported/moths-single

diffusers writes the diffusers folder layout (unet/ or transformer/, scheduler/,
model_index.json; class_names.json for a class-conditional run; the text encoder's weights
and vocabulary for a caption run); safetensors one model.safetensors and its config.json.
Both add a model card README.md (training settings, dataset fingerprint, step, sample grid,
the Python that uses the files without Studio). OUT must be new, empty, or an earlier export.
"""


def add_parser(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add ``export`` to ``subparsers`` (``common`` carries ``--device``)."""
    from studio.core.schema import EXPORT_FORMATS

    p = subparsers.add_parser(
        "export",
        parents=[common],
        help="export a run for use outside the studio (diffusers or safetensors)",
        description="Write a clean copy of a run: the weights samples come from (the EMA "
        "weights where the family keeps them), their configs and a model card README.md.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="the run folder")
    p.add_argument(
        "--format", required=True, choices=EXPORT_FORMATS, dest="fmt", help="the layout to write"
    )
    p.add_argument("out", help="the folder to write (new, empty, or an earlier export)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the card's samples when the run has no grid"
    )
    return p


def cmd_export(args: argparse.Namespace) -> int:
    from studio.engine.export import export_job

    result = run_job(export_job(args.run, args.fmt, args.out, args.device, args.seed))
    verb = "replaced the earlier export in" if result.replaced else "wrote"
    step = f" (step {result.step})" if result.step is not None else ""
    print(f"{verb} {printable(result.out)}: {len(result.files)} files, {args.fmt}{step}")
    print(f"  see {printable(result.out / 'README.md')} for how to use it without Studio")
    return 0
