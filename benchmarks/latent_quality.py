"""Latent against pixel text-to-image diffusion at the same wall-clock budget, on real icons.

Builds a captioned collection from the GNOME Adwaita icon theme installed on this machine
(``build_icon_collection``: the full-colour 48 px PNGs, one per icon name, each with a sidecar
caption made of its name and category folder), holds out 10% (seed 0), then:

1. trains the first stage (``--ae-family``, default ``vae.vqvae``) on the training icons for
   ``--ae-steps`` steps, timed on its own;
2. trains ``diffusion.text`` (pixels) and ``diffusion.latent_text`` (on that first stage) with
   the same UNet settings, each stopped after ``--budget-min`` minutes of wall-clock time
   (``token.stop()``: the run keeps a final checkpoint), and counts the images each saw;
3. draws ``--samples`` images from each (prompts: the held-out captions in turn, seed 0, the
   family's default sampler), timed, and scores them with FD / KID / precision / recall
   against the held-out icons in the feature space of a CNN trained on the training icons.

Writes ``results.json`` under ``--out`` and the sample grids under
``--docs-dir/images/quality/latent/``; prints a markdown table. CPU numbers on a shared machine
are noisy: run it under ``nice`` and say what else ran.

    PYTHONPATH=. python benchmarks/latent_quality.py --resolution 64 --budget-min 6 --threads 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from studio.core.atomic import write_json
from studio.core.imaging import make_grid
from studio.core.jobs import CancelToken, run_sync
from studio.core.paths import cache_dir
from studio.engine.data import split_holdout
from studio.engine.metrics import evaluate_samples, get_feature_extractor
from studio.engine.runs import TrainConfig
from studio.engine.sample import load_run_model, sample_job
from studio.engine.train import prepare_dataset, save_png, train_job
from studio.models.registry import family_keys

ICONS = Path("/usr/share/icons/Adwaita/48x48")
HOLDOUT = 0.1
SEED = 0


def build_icon_collection(dest: Path, source: Path = ICONS) -> list[tuple[str, str]]:
    """Copy every full-colour (not ``*symbolic*``) PNG under ``source``'s category folders into
    ``dest``, one per icon name (a name in a category folder wins over its ``legacy/`` copy),
    with a caption sidecar: the name with '-' and '_' as spaces, then the category folder
    ("folder music places"; ``legacy`` icons get no category word). Returns (file, caption)."""
    chosen: dict[str, Path] = {}
    for png in sorted(source.glob("*/*.png")):
        if "symbolic" in png.name:
            continue
        name = png.stem
        if name not in chosen or chosen[name].parent.name == "legacy":
            chosen[name] = png
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name, png in sorted(chosen.items()):
        words = name.replace("-", " ").replace("_", " ")
        category = png.parent.name
        caption = words if category == "legacy" else f"{words} {category}"
        shutil.copyfile(png, dest / f"{name}.png")
        (dest / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
        out.append((str(png), caption))
    return out


def train_for(run: Path, cfg: TrainConfig, seconds: float | None) -> tuple[Any, float]:
    """Train ``cfg`` into ``run``; with ``seconds``, stop (keeping the work) after that long."""
    if run.exists():
        shutil.rmtree(run)
    token = CancelToken()
    timer = threading.Timer(seconds, token.stop) if seconds else None
    began = time.perf_counter()
    if timer:
        timer.start()
    try:
        outcome = run_sync(train_job(run, token, cfg))
    finally:
        if timer:
            timer.cancel()
    elapsed = time.perf_counter() - began
    if not outcome.ok:
        raise SystemExit(f"{cfg.family} failed: {outcome.error}\n{outcome.details or ''}")
    return outcome.result, elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--budget-min", type=float, default=6.0, help="wall clock per diffusion run")
    ap.add_argument("--ae-family", default="ae.kl" if "ae.kl" in family_keys() else "vae.vqvae")
    ap.add_argument("--ae-steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--extractor-steps", type=int, default=300)
    ap.add_argument("--families", default="diffusion.latent_text,diffusion.text")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/latent_quality"))
    ap.add_argument("--docs-dir", type=Path, default=Path("docs"))
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = args.resolution
    out = args.out / f"{res}px"
    data = args.out / "icons"
    files = build_icon_collection(data)
    print(f"{len(files)} icons from {ICONS}", flush=True)
    dataset = run_sync(prepare_dataset(str(data), res, cache_dir())).result
    train_idx, held_idx = split_holdout(len(dataset), HOLDOUT, SEED)  # train_job's split
    held_captions = [dataset.captions[i] for i in held_idx]
    fitted = run_sync(
        get_feature_extractor(
            dataset, res, cache_dir(), exclude=held_idx, steps=args.extractor_steps, seed=SEED
        )
    )
    extractor = fitted.result
    print(f"extractor: {extractor.describe()}", flush=True)
    results: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "icons": files,
        "train_images": len(train_idx),
        "heldout_images": len(held_idx),
        "heldout_captions": held_captions,
        "extractor": extractor.describe(),
        "rows": [],
    }
    common = dict(
        data=str(data), resolution=res, batch_size=args.batch, seed=SEED,
        sample_every=10**6, checkpoint_every=10**6, checkpoint_minutes=1e6, log_every=10,
        samples=4, holdout_fraction=HOLDOUT, device="cpu",
    )  # fmt: skip

    ae_model = {"width": 32, "embedding_dim": 4, "downsample": 4}
    if args.ae_family != "vae.vqvae":
        ae_model = {"downsample": 4}
    ae_cfg = TrainConfig(family=args.ae_family, steps=args.ae_steps, model=ae_model, **common)
    ae_result, ae_s = train_for(out / "runs" / "ae", ae_cfg, None)
    results["first_stage"] = {
        "family": args.ae_family,
        "model": ae_model,
        "steps": ae_result.step,
        "train_s": ae_s,
        "metrics": dict(ae_result.metrics),
    }
    print(f"first stage: {json.dumps(results['first_stage'])}", flush=True)

    diffusion = {
        "width": args.width, "lr": 5e-4, "warmup_steps": 20, "ema_decay": 0.99,
        "beta_schedule": "squaredcos_cap_v2",
    }  # fmt: skip
    for key in [k.strip() for k in args.families.split(",") if k.strip()]:
        model = dict(diffusion)
        if key == "diffusion.latent_text":
            model["autoencoder"] = str(out / "runs" / "ae")
        cfg = TrainConfig(family=key, steps=10**6, model=model, **common)
        run = out / "runs" / key
        result, train_s = train_for(run, cfg, args.budget_min * 60)
        net = load_run_model(run, torch.device("cpu"))
        params = sum(p.numel() for p in net.unet.parameters()) / 1e6
        prompts = [held_captions[i % len(held_captions)] for i in range(args.samples)]
        began = time.perf_counter()
        sampled = run_sync(sample_job(run, args.samples, seed=SEED, model=net, prompt=prompts))
        sample_s = time.perf_counter() - began
        samples = sampled.result
        grid = args.docs_dir / "images" / "quality" / "latent" / f"{key}-{res}px.png"
        save_png(grid, make_grid(samples[:64]))
        report = evaluate_samples(
            samples, dataset.images[train_idx], dataset.images[held_idx], extractor, seed=SEED
        )
        row = {
            "family": key,
            "model": {k: v for k, v in model.items() if k != "autoencoder"},
            "unet_params_m": params,
            "steps": result.step,
            "images_seen": result.step * args.batch,
            "train_s": train_s,
            "train_images_per_s": result.step * args.batch / train_s,
            "metrics": dict(result.metrics),  # the last logged: images_per_s of the steps alone
            "sample_s": sample_s,
            "samples_per_s": args.samples / sample_s,
            "quality": report.to_dict(),
            "grid": grid.relative_to(args.docs_dir).as_posix(),
        }
        results["rows"].append(row)
        print(f"{key}: {json.dumps(row, default=str)}", flush=True)
        write_json(out / "results.json", results)

    print("\n| Model | UNet params | Steps (images) | Train images/s | Samples/s | FD | KID |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        q = r["quality"]
        print(
            f"| {r['family']} | {r['unet_params_m']:.2f} M | {r['steps']} ({r['images_seen']}) | "
            f"{r['train_images_per_s']:.1f} | {r['samples_per_s']:.2f} | {q['fd']:.2f} | "
            f"{q['kid_mean']:.3f} ± {q['kid_std']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
