"""``studio`` subcommands. Each runs an engine job through :func:`studio.core.jobs.run_sync`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from studio import __version__
from studio.cli import augment as augment_cli
from studio.cli import compare as compare_cli
from studio.cli import compress as compress_cli
from studio.cli import export as export_cli
from studio.cli import generate as generate_cli
from studio.cli import inpaint as inpaint_cli
from studio.cli import score as score_cli
from studio.cli import stylize as stylize_cli
from studio.cli import translate as translate_cli
from studio.cli import upscale as upscale_cli
from studio.cli.running import class_index, run_job  # noqa: F401 - class_index re-exported
from studio.core import continual, options
from studio.core.errors import StudioError
from studio.core.jobs import CancelToken
from studio.core.paths import demo_dir, runs_dir

EPILOG = """examples:
  studio demo                                   make the built-in demo dataset
  studio data scan ~/Pictures/moths             list usable and skipped images
  studio train --family gan.dcgan --data demo --resolution 32 --steps 2000 --out runs/first
  studio train --resume runs/first --steps 5000 continue the same run to 5000 steps
  studio train --resume runs/first --continue-on ~/Pictures/new --replay 0.3 --ewc 100
  studio sample --run runs/first -n 64 --seed 7 --out grid.png
  studio sample --run runs/first -n 16 --out samples/   (one PNG per sample)
  studio compare --runs runs/gan runs/vae runs/ddpm --n 64 --seed 0 --out compare/
  studio inpaint --run runs/first --image photo.png --mask mask.png --out filled.png -N 4
  studio train --family i2i.pix2pix --data sketches --data-b paintings --out runs/paint
  studio translate --run runs/paint --image sketch.png --out painting.png
  studio upscale --run runs/sr --image small.png --out large.png
  studio generate --model ~/models/sd15 --prompt "a red fox" --seed 7 --out fox.png
  studio score --run runs/first --data ~/Pictures/moths --out scores.csv --top 20
  studio augment --run runs/moths-cgan --fill --out moths-more/
  studio stylize --content photo.png --style painting.png --vgg vgg19.pth --out styled.png
  studio compress --run runs/photos-vq --image photo.jpg --out photo.svq
  studio decompress --run runs/photos-vq photo.svq --out decoded.png
  studio export runs/first --format diffusers exported/first   (use it without Studio)

Run folders default to {runs}. Ctrl-C during training stops at the next step and keeps a
checkpoint; press it twice to abort at once.
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
    )
    parser = argparse.ArgumentParser(
        prog="studio",
        description="Studio: train, sample and explore small generative models on your images. "
        "With no command, opens the window; `studio open PROJECT` opens it with a project.",
        epilog=EPILOG.format(runs=runs_dir()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        parents=[common],
        help="train a model, or resume a run",
        description="Train a new run from an image folder, or resume one.",
    )
    add_train_flags(p)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a model setting, e.g. --set latent_dim=64 --set lr_g=1e-4",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a training option, e.g. --option compile=on --option accumulate=2 "
        "(see the README's training options)",
    )
    p.add_argument("--out", help="new run folder (default: a fresh folder under the runs folder)")
    p.add_argument(
        "--resume", "--run", dest="resume", metavar="RUN", help="continue this run folder"
    )
    p.add_argument(
        "--continue-on",
        dest="continue_on",
        metavar="DIR",
        help="with --resume: go on training the run on this other folder, without forgetting "
        "the first (see docs/continual.md); --steps is then the total to reach (default: as "
        "many steps again as the run's steps setting)",
    )
    p.add_argument(
        "--replay",
        type=float,
        metavar="SHARE",
        help=f"with --continue-on: the {continual.REPLAY_HELP} (0 to {continual.MAX_REPLAY:g}; "
        "default 0)",
    )
    p.add_argument(
        "--ewc",
        type=float,
        metavar="LAMBDA",
        help=f"with --continue-on: the {continual.EWC_HELP} (default 0)",
    )

    p = sub.add_parser(
        "sample",
        parents=[common],
        help="draw samples from a run",
        description="Draw samples from a trained run.",
    )
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="grid.png, or DIR/ for one PNG per sample")
    p.add_argument(
        "--class",
        dest="label",
        help="class name or index, for conditional models (default: cycle through all classes)",
    )
    p.add_argument("--steps", type=int, help="sampler steps (diffusion)")
    p.add_argument(
        "--sampler",
        help=f"diffusion: {', '.join(options.SAMPLERS)} (default {options.DEFAULT_SAMPLER})",
    )
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (diffusion)")
    p.add_argument("--temperature", type=float, help="sampling temperature (flows)")
    p.add_argument(
        "--truncation",
        type=float,
        metavar="PSI",
        help="truncation psi, 0 to 1, for families with a truncation option (style-based "
        "GANs): lower is tamer; the same as --with truncation=PSI",
    )
    p.add_argument(
        "--with",
        dest="with_",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any sampling option the run's family declares (see 'studio families')",
    )

    p = sub.add_parser("data", parents=[common], help="inspect an image folder")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = dsub.add_parser("scan", parents=[common], help="list usable and skipped images")
    q.add_argument("folder", nargs="?", help="image folder ('demo' = the built-in demo dataset)")
    q.add_argument(
        "--pairs",
        nargs="+",
        metavar="FOLDER",
        help="paired images: folders A and B (matched by relative path and name), or one "
        "folder of side-by-side files (A left, B right)",
    )

    p = sub.add_parser("demo", parents=[common], help="make the built-in demo dataset")
    p.add_argument(
        "--out", help=f"an empty or new folder, or an earlier demo made here (default {demo_dir()})"
    )
    p.add_argument("--count", type=int, default=3000)

    p = sub.add_parser("families", parents=[common], help="list the model families")
    p.add_argument("--settings", action="store_true", help="also list each model's settings")
    inpaint_cli.add_parser(sub, common)
    translate_cli.add_parser(sub, common)
    upscale_cli.add_parser(sub, common)
    compare_cli.add_parser(sub, common)
    generate_cli.add_parser(sub, common)
    score_cli.add_parser(sub, common)
    augment_cli.add_parser(sub, common)
    stylize_cli.add_parser(sub, common)
    compress_cli.add_parser(sub, common)
    export_cli.add_parser(sub, common)

    p = sub.add_parser("runs", parents=[common], help="list run folders")
    p.add_argument("--dir", help=f"runs folder (default {runs_dir()})")
    return parser


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """``studio train``'s own flags, from the options declared in :mod:`studio.core.options`.

    Every flag defaults to None, so a resume can tell what was given; the declared defaults
    fill in a new run's config."""
    spec = options.BY_NAME
    p.add_argument("--family", help=f"{spec['family'].help} (default {spec['family'].default})")
    p.add_argument("--data", help=spec["data"].help)
    p.add_argument("--data-b", dest="data_b", metavar="DIR", help=spec["data_b"].help)
    p.add_argument(
        "--resolution",
        type=int,
        choices=options.RESOLUTIONS,
        help=f"{spec['resolution'].help} (default {spec['resolution'].default})",
    )
    p.add_argument(
        "--steps",
        type=int,
        help=f"total steps to reach (default {spec['steps'].default} for a new run)",
    )
    for opt in options.FLAG_OPTIONS:
        if opt.type is bool:
            p.add_argument(
                opt.flag,
                dest=opt.name,
                action="store_const",
                const=not opt.default,
                help=f"{'no ' if opt.default else ''}{opt.help}",
            )
        else:
            p.add_argument(
                opt.flag, dest=opt.name, type=opt.type, help=f"{opt.help} (default {opt.default})"
            )


def main(argv: list[str] | None = None) -> int:
    from studio.cli.progress import safe_console

    safe_console()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler = {
        "train": cmd_train,
        "sample": cmd_sample,
        "data": cmd_data,
        "demo": cmd_demo,
        "families": cmd_families,
        "runs": cmd_runs,
        "inpaint": inpaint_cli.cmd_inpaint,
        "translate": translate_cli.cmd_translate,
        "upscale": upscale_cli.cmd_upscale,
        "compare": compare_cli.cmd_compare,
        "generate": generate_cli.cmd_generate,
        "score": score_cli.cmd_score,
        "augment": augment_cli.cmd_augment,
        "stylize": stylize_cli.cmd_stylize,
        "compress": compress_cli.cmd_compress,
        "decompress": compress_cli.cmd_decompress,
        "export": export_cli.cmd_export,
    }[args.command]
    try:
        return handler(args)
    except StudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head, say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# -- running jobs -----------------------------------------------------------------------------


def resolve_data(value: str) -> str:
    if value == "demo":
        from studio.engine.demo import ensure_demo_dataset, find_demo

        found = find_demo()  # any complete demo, whatever its size
        return str(found if found is not None else run_job(ensure_demo_dataset()))
    return value


def parse_settings(family_key: str, pairs: list[str]) -> dict[str, Any]:
    from studio.models.registry import get_family

    config_cls = get_family(family_key).Config
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            known = ", ".join(sorted(fields))
            raise StudioError(f"--set {pair!r}: expected NAME=VALUE with NAME one of: {known}")
        default = fields[name].default
        try:
            if isinstance(default, bool):
                value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            else:
                value = raw
        except ValueError:
            raise StudioError(
                f"--set {pair!r}: {raw!r} is not a valid {type(default).__name__}"
            ) from None
        meta = fields[name].metadata
        try:
            options.check_setting(
                name,
                value,
                minimum=meta.get("minimum"),
                maximum=meta.get("maximum"),
                choices=meta.get("choices"),
            )
        except options.SettingError as err:
            raise StudioError(f"--set {pair!r}: {err}") from None
        out[name] = value
    return out


# -- commands ---------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from studio.core.paths import cache_dir
    from studio.engine.runs import RunFolder, TrainConfig, new_run_path
    from studio.engine.speed import parse_options
    from studio.engine.train import check_family_data, train_job

    token = CancelToken()
    if (args.replay is not None or args.ewc is not None) and not args.continue_on:
        raise StudioError("--replay and --ewc go with --continue-on DIR (and --resume RUN)")
    if args.continue_on and not args.resume:
        raise StudioError("--continue-on DIR continues a run: give it with --resume RUN")
    if args.continue_on and args.data:
        raise StudioError("--continue-on DIR names the new folder; leave out --data")
    if args.resume:
        if args.option:
            raise StudioError(
                "--option sets up a new run; a resumed run keeps the options it began with"
            )
        if args.data_b:
            raise StudioError("--data-b sets up a new run; a resumed run keeps its folders")
        if args.steps is not None:
            options.check_option(options.BY_NAME["steps"], args.steps)
        if args.continue_on:
            return _continue_on(args, token)
        job = train_job(
            args.resume,
            token,
            None,
            steps=args.steps,
            cache_dir=cache_dir(),
            device_override=None if args.device == "auto" else args.device,
        )
        out = Path(args.resume)
    else:
        if not args.data:
            raise StudioError("train needs --data DIR (or --data demo), or --resume RUN")
        from studio.models.registry import family_keys

        family = args.family or options.BY_NAME["family"].default
        if family not in family_keys():
            raise StudioError(f"unknown family {family!r}; see 'studio families'")
        given = {
            name: getattr(args, name)
            for name in ("resolution", "steps", *(o.name for o in options.FLAG_OPTIONS))
            if getattr(args, name) is not None
        }
        config = TrainConfig(
            family=family,
            data=args.data,
            data_b=args.data_b or "",
            device=args.device.strip().lower(),
            model=parse_settings(family, args.set),
            **given,
            **parse_options(args.option),
        )
        config.check()  # every option in range before anything is written
        check_family_data(config)  # folder B only for a paired family, before anything is made
        out = Path(args.out) if args.out else new_run_path(runs_dir(), family)
        RunFolder(out).check_new()  # before the demo dataset is made, say
        config = dataclasses.replace(
            config,
            data=str(Path(resolve_data(args.data)).expanduser().resolve()),
            data_b=str(Path(args.data_b).expanduser().resolve()) if args.data_b else "",
        )
        job = train_job(out, token, config, cache_dir=cache_dir())
    result = run_job(job, token, graceful=True)
    state = "stopped early" if result.stopped_early else "done"
    print(f"{state}: step {result.step}/{result.steps}; run folder {result.run}")  # rank 0 named it
    return 0


def _continue_on(args: argparse.Namespace, token: CancelToken) -> int:
    """``train --resume RUN --continue-on DIR``: the run goes on to another folder."""
    from studio.core.paths import cache_dir
    from studio.engine.runs import RunFolder
    from studio.engine.switch import continue_job

    replay = 0.0 if args.replay is None else args.replay
    ewc = 0.0 if args.ewc is None else args.ewc
    continual.check_settings(replay, ewc)
    RunFolder(args.resume).read_config()  # not a run: one sentence, before the folder is read
    job = continue_job(
        args.resume,
        token,
        resolve_data(args.continue_on),
        replay=replay,
        ewc=ewc,
        steps=args.steps,
        cache_dir=cache_dir(),
        device_override=None if args.device == "auto" else args.device,
    )
    result = run_job(job, token, graceful=True)
    state = "stopped early" if result.stopped_early else "done"
    print(f"{state}: step {result.step}/{result.steps}; run folder {result.run}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from studio.engine.sample import sample_job
    from studio.engine.train import save_png

    if args.n < 1:
        raise StudioError("-n must be at least 1")
    args.label = class_index(Path(args.run), args.label)
    pairs = list(args.with_)
    if args.truncation is not None:  # a flag for a declared option, checked like --with
        pairs.append(f"truncation={args.truncation}")
    extra = sampling_values(Path(args.run), pairs)
    images = run_job(
        sample_job(
            args.run,
            args.n,
            args.seed,
            args.device,
            **{
                "label": args.label,
                "steps": args.steps,
                "sampler": args.sampler,
                "guidance": args.guidance,
                "temperature": args.temperature,
                **extra,
            },
        )
    )
    out = Path(args.out)
    if args.out.endswith(("/", "\\")) or out.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            save_png(out / f"sample_{args.seed}_{i:04d}.png", img)
        print(f"wrote {len(images)} images to {out}")
    else:
        from studio.core.imaging import make_grid

        if out.suffix.lower() != ".png":
            out = out.with_suffix(".png")
        save_png(out, make_grid(images))
        print(f"wrote a grid of {len(images)} samples to {out}")
    return 0


def sampling_values(run: Path, pairs: list[str]) -> dict[str, Any]:
    """``--with NAME=VALUE`` pairs checked against the sampling options the run's family
    declares (studio.models.capabilities.SamplingOption)."""
    if not pairs:
        return {}
    from studio.engine.runs import RunFolder
    from studio.models.capabilities import parse_sampling
    from studio.models.registry import get_family

    key = str(RunFolder(run).read_config().get("family", ""))
    try:
        family = get_family(key)
        return parse_sampling(tuple(family.sampling_options), pairs)
    except (KeyError, ValueError) as err:
        raise StudioError(str(err).strip("'\"")) from None


def cmd_data(args: argparse.Namespace) -> int:
    from studio.core.safefiles import printable
    from studio.engine.data import scan_folder

    if args.pairs:
        return _scan_pairs(args)
    if not args.folder:
        raise StudioError("Name the image folder to scan (or --pairs A B).")
    scan = run_job(scan_folder(Path(resolve_data(args.folder))))
    for line in scan.describe_skipped():
        print(f"skipped {line}")
    scan.require_usable()
    sizes = ", ".join(f"{w}x{h} ({c})" for w, h, c in scan.size_summary()[:8])
    root = printable(scan.root)  # names that are not UTF-8 print as escapes
    print(f"{len(scan.entries)} usable images in {root}; {len(scan.skipped)} skipped")
    print(f"sizes: {sizes}")
    if scan.class_names:
        print(f"classes: {', '.join(printable(name) for name in scan.class_names)}")
    return 0


def _scan_pairs(args: argparse.Namespace) -> int:
    from studio.core.safefiles import printable
    from studio.engine.pairs import scan_pairs

    if args.folder or len(args.pairs) > 2:
        raise StudioError("--pairs takes folder A and folder B, or one side-by-side folder.")
    scan = run_job(scan_pairs(*(Path(f) for f in args.pairs)))
    for line in scan.describe():
        print(f"left out {printable(line)}")
    scan.require_usable()
    n = len(scan.pairs)
    where = (
        f"side-by-side files in {printable(scan.root_a)}"
        if scan.side_by_side
        else f"{printable(scan.root_a)} (A) and {printable(scan.root_b)} (B)"
    )
    left_out = len(scan.problems) + len(scan.skipped_a) + len(scan.skipped_b)
    print(f"{n} pair{'s' if n != 1 else ''} in {where}; {left_out} files left out")
    if scan.class_names:
        print(f"classes: {', '.join(printable(name) for name in scan.class_names)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from studio.engine.demo import ensure_demo_dataset, make_demo_dataset

    if args.out:
        folder = run_job(make_demo_dataset(Path(args.out), count=args.count))
    else:
        folder = run_job(ensure_demo_dataset(count=args.count))
    print(f"demo dataset ready at {folder}")
    return 0


def cmd_families(args: argparse.Namespace) -> int:
    from studio.models.catalog import settings
    from studio.models.registry import BUILT_IN, family_sources, get_family

    for key, source in family_sources().items():
        origin = "" if source.origin == BUILT_IN else f"  (from {source.origin})"
        try:
            info = get_family(key).info
        except Exception as err:  # noqa: BLE001 - a broken plug-in is listed, not fatal
            print(f"{key:<18} unavailable{origin}: {type(err).__name__}: {err}")
            continue
        print(f"{key:<18} {info.display_name:<24} {info.summary}{origin}")
        if args.settings:
            for row in settings(key):
                allowed = f" [{row.allowed}]" if row.allowed else ""
                print(f"    --set {row.name}={row.default}{allowed}  {row.label}")
            scores = ", ".join(o.name for o in get_family(key).score_options())
            print(f"    scores (studio score --score): {scores or 'none'}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from studio.engine.runs import list_runs

    base = Path(args.dir) if args.dir else runs_dir()
    runs = list_runs(base)
    if not runs:
        print(f"no runs in {base}")
    for r in runs:
        print(f"{r.path}  {r.family}  step {r.step}/{r.steps}  data {r.data}")
    return 0
