"""Sample quality of every model family after the same fixed training budget.

Each registered family trains on the built-in demo dataset (or ``--data``) at 32 x 32 through
the real ``train_job``, into ``--out/runs/<family>``. Then, per model: the last logged training
losses, held-out bits/dim where the family has a likelihood, samples per second with the
family's default sampler, and FD / KID / precision / recall of ``--samples`` samples against
the held-out images in the feature space of a CNN trained on the dataset itself (see
``studio.engine.metrics``), plus the memorisation share. Writes ``quality.md`` and one sample
grid per model (``images/quality/<family>.png``) under ``--docs-dir``, and ``results.json``
under ``--out``. Run it by hand on an idle machine; the tests never do.

    python benchmarks/quality.py                                  # ~20-30 min on 2 cores
    python benchmarks/quality.py --quick --docs-dir /tmp/quality  # ~3 min smoke run
    python benchmarks/quality.py --families gan.dcgan,diffusion.ddpm --steps 3000
    python benchmarks/quality.py --families gan.dcgan --set progressive=true --set grow_steps=50

Numbers are comparable within one run only: the same dataset, held-out split, extractor and
sample count. They are not FID values and say nothing about other datasets.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine_info import cpu_name  # noqa: E402 - a sibling script's module

from studio.cli.main import parse_settings
from studio.core.atomic import write_json, write_text
from studio.core.imaging import make_grid
from studio.core.jobs import CancelToken, Progress, run_sync
from studio.core.paths import cache_dir
from studio.engine.data import ImageDataset, split_holdout
from studio.engine.demo import ensure_demo_dataset
from studio.engine.device import cpu_generator, resolve_device
from studio.engine.metrics import FeatureExtractor, evaluate_samples, get_feature_extractor
from studio.engine.runs import RunFolder, TrainConfig
from studio.engine.sample import load_run_model, sample_job
from studio.engine.train import prepare_dataset, save_png, train_job
from studio.models.base import Capability, GenerativeModel, images_to_uint8
from studio.models.registry import family_keys, get_family

RESOLUTION = 32
HOLDOUT = 0.1  # 300 of the demo's 3000 images: the reference set of every metric
SEED = 0
DEFAULT_STEPS = 400
QUICK_STEPS = 40


@dataclass(frozen=True)
class Plan:
    """How one family trains in the benchmark: batch size, model overrides, and why."""

    batch_size: int = 64
    model: dict[str, Any] = field(default_factory=dict)
    why: str = "family defaults"
    # A family that builds on another run (a run setting): the base family, trained first
    # with its own plan and budget (once per invocation), and the setting it goes into.
    base: str = ""
    base_setting: str = "base_run"


# Chosen so every family gets the same number of optimizer steps at batch 32 and a similar
# share of the CPU: the expensive networks (DDPM's UNet, Glow, VQ-VAE, WGAN-GP's critic
# passes) are slimmed, and warm-ups are cut to fit the budget (see _model_overrides).
PLANS: dict[str, Plan] = {
    "gan.dcgan": Plan(32, {}, "Adam 2e-4, beta1 0.5 (the DCGAN paper's)"),
    "gan.cgan": Plan(32, {}, "as DCGAN, with class conditioning"),
    "gan.wgan_gp": Plan(
        32, {"n_critic": 3}, "Adam 1e-4, betas (0, 0.9); 3 critic steps per step (paper: 5)"
    ),
    "vae.conv": Plan(32, {}, "Adam 1e-3, learned pixel noise"),
    "vae.beta": Plan(32, {}, "beta 4, fixed pixel noise"),
    "vae.cvae": Plan(32, {}, "as the conv VAE, with class conditioning"),
    "vae.vqvae": Plan(32, {"width": 32}, "Adam 5e-4, 256 codes, width 32 (default 64)"),
    "flow.nice": Plan(32, {}, "Adam 1e-3"),
    "flow.realnvp": Plan(32, {}, "Adam 1e-3, 3 scales"),
    "flow.glow": Plan(32, {"steps": 4, "hidden": 64}, "3 levels x 4 steps (default 8), width 64"),
    "flow.flowpp": Plan(
        32,
        {"blocks": 1},
        "Adam 1e-3, 3 scales, width 32, 1 gated block per coupling net (default 2), attention "
        "at 16 px and below",
    ),
    "vae.hierarchical": Plan(32, {}, "3 levels, KL warm-up cut to the budget"),
    "gan.stylegan": Plan(32, {}, "Adam 2e-3, betas (0, 0.99), lazy R1, style mixing 0.9"),
    "ar.pixelcnn": Plan(
        32,
        {"width": 32, "layers": 6},
        "width 32 (default 64), 6 layers (default 8): sampling is pixel by pixel",
    ),
    "ebm.rbm": Plan(32, {}, "CD-1, 256 hidden units, grey binarised images"),
    "ar.vq_prior": Plan(
        32,
        {"architecture": "pixelcnn", "width": 32},
        "gated PixelCNN, width 32 (default 64), over the codes of the VQ-VAE row's run "
        "(trained first, same budget)",
        base="vae.vqvae",
    ),
    "hybrid.vaegan": Plan(32, {}, "Adam 2e-4, gamma and KL weight at their defaults"),
    "diffusion.ddpm": Plan(
        32,
        {
            "width": 32,
            "layers_per_block": 1,
            "attention_res": 8,
            "dropout": 0.0,
            "beta_schedule": "squaredcos_cap_v2",
            "lr": 5e-4,
        },
        "UNet width 32 (default 64), 1 layer per level, attention at 8 px, no dropout, "
        "cosine schedule, AdamW 5e-4",
    ),
}
# Warm-ups longer than the budget would leave a family at a fraction of its learning rate
# (or KL weight) for the whole run: each is capped at this share of the steps.
WARMUP_SHARE = {"warmup_steps": 0.1, "kl_warmup_steps": 0.25}


def _model_overrides(key: str, plan: Plan, steps: int) -> tuple[dict[str, Any], list[str]]:
    """The plan's overrides that this family's Config has (families are still changing), and
    warm-ups capped to the budget. Returns the overrides and the names left out."""
    defaults = {f.name: f.default for f in fields(get_family(key).Config)}
    kept = {k: v for k, v in plan.model.items() if k in defaults}
    dropped = sorted(set(plan.model) - set(defaults))
    for name, share in WARMUP_SHARE.items():
        default = defaults.get(name)
        if isinstance(default, int) and name not in kept:
            kept[name] = min(default, max(1, int(steps * share)))
    return kept, dropped


# -- the steps of one family -----------------------------------------------------------------


def _headline(values: Any) -> dict[str, float]:
    """The values worth a table cell: no gradient norms, no per-dimension series (kl_dim_07);
    results.json keeps them all."""
    return {
        k: v
        for k, v in sorted(values.items())
        if not k.startswith("grad_norm") and not re.search(r"_\d+$", k)
    }


def _printer(key: str) -> Any:
    last = [0.0]

    def show(p: Progress) -> None:
        now = time.monotonic()
        if p.message and not p.step:  # status lines ("Reading images", "Loaded ... (cache)")
            print(f"  [{key}] {p.message}", flush=True)
        elif now - last[0] > 15 or (p.total and p.step == p.total and p.metrics):
            last[0] = now
            vals = ", ".join(f"{k} {v:.4g}" for k, v in _headline(p.metrics).items())
            print(f"  [{key}] {p.stage} {p.step}/{p.total} {vals}", flush=True)

    return show


def _call_with(fn: Any, *args: Any, **maybe: Any) -> Any:
    """Call ``fn`` with the keyword arguments of ``maybe`` that its signature takes."""
    params = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in maybe.items() if k in params})


@torch.no_grad()
def heldout_bits_per_dim(model: GenerativeModel, images: np.ndarray, labels: Any) -> float | None:
    """Mean bits/dim over the held-out images, or None for families without a likelihood."""
    if Capability.LIKELIHOOD not in model.info.capabilities:
        return None
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(labels) if labels is not None else None
    gen = cpu_generator(SEED)
    values = []
    for i in range(0, len(x), 64):
        chunk = x[i : i + 64].to(model.device)
        extra: dict[str, Any] = {"generator": gen}
        if y is not None and Capability.CONDITIONAL in model.info.capabilities:
            extra["labels"] = y[i : i + 64].to(model.device)
        values.append(_call_with(model.bits_per_dim, chunk, **extra).float().cpu())
    return float(torch.cat(values).mean())


def settings_for(key: str, pairs: list[str]) -> list[str]:
    """The ``--set`` pairs for family ``key``: unscoped ones (NAME=VALUE) apply to every family,
    scoped ones (FAMILY:NAME=VALUE) only to that family (so a base run trained first does not
    get its dependant's settings)."""
    out = []
    for pair in pairs:
        name = pair.partition("=")[0]
        scope, colon, rest = name.partition(":")
        if not colon:
            out.append(pair)
        elif scope.strip() == key:
            out.append(rest + pair[len(name) :])
    return out


def plan_for(key: str, pairs: list[str]) -> Plan:
    """The family's plan with the command line's settings for it on top (its base kept)."""
    plan = PLANS.get(key, Plan())
    mine = settings_for(key, pairs)
    if not mine:
        return plan
    extra = parse_settings(key, mine)
    return replace(
        plan,
        model={**plan.model, **extra},
        why=plan.why + "; set: " + ", ".join(f"{k}={v}" for k, v in extra.items()),
    )


def run_family(
    key: str,
    args: argparse.Namespace,
    dataset: ImageDataset,
    data_path: Path,
    split: tuple[np.ndarray, np.ndarray],
    extractor: FeatureExtractor,
) -> dict[str, Any]:
    plan = plan_for(key, args.set)
    if getattr(args, "batch", None):
        plan = replace(plan, batch_size=args.batch)
    overrides, dropped = _model_overrides(key, plan, args.steps)
    row: dict[str, Any] = {"family": key, "batch_size": plan.batch_size, "model": overrides}
    base_run = None
    if plan.base:
        base_run = _base_run(plan.base, args, dataset, data_path, split, extractor)
        if base_run is None:
            row["error"] = f"its base run ({plan.base}) failed"
            return row
        overrides = {**overrides, plan.base_setting: str(base_run)}
    row["settings"] = plan.why + (f" (not applied: {', '.join(dropped)})" if dropped else "")
    run = args.out / "runs" / key
    if RunFolder(run).exists():  # this benchmark's own earlier run: start again
        shutil.rmtree(run)
    cfg = TrainConfig(
        family=key,
        data=str(data_path),
        resolution=RESOLUTION,
        batch_size=plan.batch_size,
        steps=args.steps,
        seed=SEED,
        sample_every=args.steps,  # one grid at the end: the benchmark measures, not watches
        checkpoint_every=args.steps,
        checkpoint_minutes=1e6,
        log_every=max(1, min(50, args.steps // 4)),
        samples=8,  # the trainer's own grids: kept small, DDPM samples are slow on a CPU
        holdout_fraction=HOLDOUT,
        device=args.device,
        model=overrides,
    )
    token = CancelToken()
    t0 = time.perf_counter()
    outcome = run_sync(train_job(run, token, cfg, dataset=dataset), token, _printer(key))
    row["train_s"] = time.perf_counter() - t0
    if not outcome.ok:
        row["error"] = outcome.error or outcome.status.value
        print(f"  [{key}] FAILED: {row['error']}\n{outcome.details or ''}", flush=True)
        return row
    row["losses"] = dict(outcome.result.metrics)

    device = resolve_device(args.device)
    model = load_run_model(run, device)
    train_idx, held_idx = split
    labels = dataset.labels[held_idx] if dataset.labels is not None else None
    row["heldout_bpd"] = heldout_bits_per_dim(model, dataset.images[held_idx], labels)

    t0 = time.perf_counter()
    sampled = run_sync(sample_job(run, args.samples, seed=SEED, model=model))
    elapsed = time.perf_counter() - t0
    if not sampled.ok:
        row["error"] = f"sampling: {sampled.error}"
        print(f"  [{key}] FAILED: {row['error']}\n{sampled.details or ''}", flush=True)
        return row
    samples = sampled.result
    row["samples_per_s"] = args.samples / elapsed
    grid_path = args.docs_dir / "images" / "quality" / f"{key}.png"
    save_png(grid_path, make_grid(samples[:64]))
    row["grid"] = grid_path.relative_to(args.docs_dir).as_posix()

    report = evaluate_samples(
        samples, dataset.images[train_idx], dataset.images[held_idx], extractor, seed=SEED
    )
    row["quality"] = report.to_dict()
    if base_run is not None and hasattr(model, "vq"):  # the VQ-VAE prior: against chance codes
        uniform = uniform_code_samples(load_run_model(base_run, device), args.samples)
        save_png(grid_path.with_name(f"{key}-uniform-codes.png"), make_grid(uniform[:64]))
        row["uniform_codes_quality"] = evaluate_samples(
            uniform, dataset.images[train_idx], dataset.images[held_idx], extractor, seed=SEED
        ).to_dict()
    return row


def _base_run(
    key: str,
    args: argparse.Namespace,
    dataset: ImageDataset,
    data_path: Path,
    split: tuple[np.ndarray, np.ndarray],
    extractor: FeatureExtractor,
) -> Path | None:
    """The base family's run of this invocation: the one its own row trained, else trained
    now (and reported as a row of its own)."""
    run = args.out / "runs" / key
    done = getattr(args, "trained", {})
    if key not in done:
        print(f"{key}: training {args.steps} steps (the base of a later family)", flush=True)
        row = run_family(key, args, dataset, data_path, split, extractor)
        done[key] = row
        args.trained = done
        args.extra_rows = [*getattr(args, "extra_rows", []), row]
    return None if "error" in done[key] else run


@torch.no_grad()
def uniform_code_samples(vq: GenerativeModel, n: int) -> np.ndarray:
    """A VQ-VAE's decoder on code grids drawn uniformly from its codebook (seed SEED)."""
    c = vq.config
    side = c.resolution // c.downsample  # type: ignore[attr-defined]
    codes = torch.randint(
        0, int(vq.codebook.shape[0]), (n, side, side), generator=cpu_generator(SEED)
    )
    images = torch.cat([vq.decode(codes[i : i + 64]).cpu() for i in range(0, n, 64)])  # type: ignore[operator]
    return images_to_uint8(images).numpy()


# -- the report --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _losses(losses: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in _headline(losses).items()) or "–"


def render_markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    m = meta["machine"]
    lines = [
        "# Sample quality after a fixed budget",
        "",
        f"Generated by `benchmarks/quality.py{meta['argv']}` on {meta['date']}.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
        f"device {meta['device']}; torch {m['torch']}, Python {m['python']}, {m['os']}.",
        f"- Data: {meta['data']} at {RESOLUTION} x {RESOLUTION}: {meta['train_images']} training "
        f"and {meta['heldout_images']} held-out images (seed {SEED}).",
        f"- Budget: {meta['steps']} optimizer steps per family (batch sizes below).",
        f"- Feature extractor: {meta['extractor']} ({meta['extractor_steps']} steps; never saw "
        "the held-out images).",
        f"- Each model drew n = {meta['samples']} samples (seed {SEED}, default sampler: "
        "DPM-Solver++ 20 steps for DDPM); FD, KID, precision and recall compare them with the "
        "held-out images. FD is biased at this n: compare rows, not with published FIDs.",
        "",
        "| Family | Final losses | Held-out bits/dim | Samples/s | FD ↓ | KID ↓ | "
        "Precision ↑ | Recall ↑ | Memorisation share | Train time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | failed: {r['error']} | | | | | | | | |")
            continue
        q = r["quality"]
        kid = f"{q['kid_mean']:.3f} ± {q['kid_std']:.3f}"
        memo = f"{q['memorisation_share']:.2f} (rank {q['memorisation_rank_share']:.2f})"
        lines.append(
            f"| {r['family']} | {_losses(r['losses'])} | {_num(r['heldout_bpd'], '.3f')} | "
            f"{r['samples_per_s']:.1f} | {q['fd']:.2f} | {kid} | {q['precision']:.2f} | "
            f"{q['recall']:.2f} | {memo} | {r['train_s'] / 60:.1f} min |"
        )
        if "uniform_codes_quality" in r:
            u = r["uniform_codes_quality"]
            lines.append(
                f"| ({r['family']}'s VQ-VAE on uniform random codes) | – | – | – | "
                f"{u['fd']:.2f} | {u['kid_mean']:.3f} ± {u['kid_std']:.3f} | "
                f"{u['precision']:.2f} | {u['recall']:.2f} | – | – |"
            )
    lines += [
        "",
        "How to read it: FD and KID measure the distance between the sample and held-out "
        "feature distributions (0 is indistinguishable); precision is the share of samples "
        "that look like some real image, recall the share of real images some sample looks "
        "like. The memorisation share is the share of samples nearer (in pixels, mirror images "
        "included) to a training image than to any held-out one, with equal-size reference "
        "sets: about 0.5 is healthy, 1.0 means copies; the rank share compares each sample's "
        "nearest-training distance with how near real held-out images come, using every "
        "training image. Bits/dim is exact for flows and an upper bound (negative ELBO) for "
        "VAEs.",
        "",
        "## Settings",
        "",
        "| Family | Batch | Overrides | Why |",
        "|---|---|---|---|",
    ]
    for r in rows:
        over = ", ".join(f"{k}={v}" for k, v in r["model"].items()) or "–"
        lines.append(f"| {r['family']} | {r['batch_size']} | {over} | {r['settings']} |")
    lines += ["", "## Samples", ""]
    for r in rows:
        if "grid" in r:
            lines += [f"### {r['family']}", "", f"![{r['family']} samples]({r['grid']})", ""]
    return "\n".join(lines).rstrip() + "\n"


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, help=f"steps per family (default {DEFAULT_STEPS})")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few steps and samples")
    ap.add_argument("--families", help="comma-separated keys (default: every registered one)")
    ap.add_argument("--data", help="an image folder (default: the built-in demo dataset)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/quality"))
    ap.add_argument("--docs-dir", type=Path, default=Path("docs"))
    ap.add_argument("--samples", type=int, help="samples per model (default 256, quick 64)")
    ap.add_argument("--extractor-steps", type=int, help="default 600, quick 100")
    ap.add_argument("--batch", type=int, help="batch size for every family (default: its plan's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a model setting for every family measured (as `studio train --set`), or for "
        "one family with FAMILY:NAME=VALUE (ar.vq_prior:architecture=gpt)",
    )
    args = ap.parse_args(argv)
    args.steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    args.samples = args.samples or (64 if args.quick else 256)
    args.extractor_steps = args.extractor_steps or (100 if args.quick else 600)
    keys = family_keys()
    if args.families:
        wanted = [k.strip() for k in args.families.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in keys]
        if unknown:
            ap.error(f"unknown families: {', '.join(unknown)}; registered: {', '.join(keys)}")
        keys = wanted
    args.keys = keys
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.data:
        data_path, data_name = Path(args.data), f"`{args.data}`"
    else:
        data_path = run_sync(ensure_demo_dataset(), None, _printer("data")).result
        data_name = "the built-in demo dataset (3000 shapes, 6 classes)"
    loaded = run_sync(
        prepare_dataset(str(data_path), RESOLUTION, cache_dir()), None, _printer("data")
    )
    if not loaded.ok:
        print(f"Cannot read the dataset: {loaded.error}", file=sys.stderr)
        return 1
    dataset = loaded.result
    split = split_holdout(len(dataset), HOLDOUT, SEED)  # the split train_job makes
    print(f"Feature extractor ({args.extractor_steps} steps, cached after the first run)...")
    fitted = run_sync(
        get_feature_extractor(
            dataset,
            RESOLUTION,
            cache_dir(),
            exclude=split[1],
            steps=args.extractor_steps,
            seed=SEED,
            device=args.device,
        ),
        None,
        _printer("features"),
    )
    if not fitted.ok:
        print(f"Feature extractor failed: {fitted.error}\n{fitted.details}", file=sys.stderr)
        return 1
    extractor = fitted.result
    print(f"  {extractor.describe()}")

    meta = {
        "argv": "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv)),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "device": str(resolve_device(args.device)),
        "data": data_name,
        "train_images": int(len(split[0])),
        "heldout_images": int(len(split[1])),
        "steps": args.steps,
        "samples": args.samples,
        "extractor": extractor.describe(),
        "extractor_steps": args.extractor_steps,
    }
    rows: list[dict[str, Any]] = []
    args.trained = {}
    for key in args.keys:
        if key in args.trained:  # already trained as another family's base
            continue
        print(f"{key}: training {args.steps} steps", flush=True)
        args.extra_rows = []
        row = run_family(key, args, dataset, data_path, split, extractor)
        rows.extend(args.extra_rows)  # base runs trained for it first
        rows.append(row)
        args.trained[key] = row
        print(f"  [{key}] {json.dumps(rows[-1], default=str)}", flush=True)
        write_json(args.out / "results.json", {"meta": meta, "rows": rows})  # after each family
    meta["total_s"] = time.perf_counter() - started
    write_json(args.out / "results.json", {"meta": meta, "rows": rows})
    write_text(args.docs_dir / "quality.md", render_markdown(meta, rows))
    print(f"Wrote {args.docs_dir / 'quality.md'} in {meta['total_s'] / 60:.1f} min")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
