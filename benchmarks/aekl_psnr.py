"""ae.kl's reconstruction PSNR on held-out demo images, for 4x and 8x downsampling.

Each setting trains through the real ``train_job`` on the built-in demo dataset (drawn at
``--size`` px) at 32 px, then encodes each held-out image to its posterior mean, decodes it,
rounds to 8 bits and measures the PSNR against the image (peak 255). Prints a Markdown table
and writes ``results.json`` under ``--out``. Run it by hand (under ``nice``); the tests never
do.

    python benchmarks/aekl_psnr.py --steps 300 --batch 16     # ~10-15 min on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from studio.core.jobs import CancelToken, run_sync
from studio.engine.demo import make_demo_dataset
from studio.engine.run_data import read_data
from studio.engine.run_model import load_run_model
from studio.engine.runs import TrainConfig
from studio.engine.train import train_job


def psnr_of(model, images: np.ndarray) -> tuple[float, float]:
    """(mean per-image PSNR, PSNR of the mean squared error) in dB, 8-bit reconstructions."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    out = []
    for i in range(0, len(x), 64):
        rec = model.decode_from_grid(model.encode_to_grid(x[i : i + 64]))
        out.append(((rec.clamp(-1, 1) + 1) * 127.5).round())
    rec = torch.cat(out)
    err = (rec - torch.from_numpy(images).permute(0, 3, 1, 2).float()).square().flatten(1)
    per_image = 10 * torch.log10(255.0**2 / err.mean(1).clamp_min(1e-10))
    return float(per_image.mean()), float(10 * torch.log10(255.0**2 / err.mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/aekl-bench"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--count", type=int, default=600, help="demo images")
    parser.add_argument("--size", type=int, default=32, help="demo images' side")
    parser.add_argument("--downsample", default="4,8")
    parser.add_argument("--set", action="append", default=[], help="NAME=VALUE model setting")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = args.out / "demo"
    if not data.exists():
        done = run_sync(make_demo_dataset(data, count=args.count, size=args.size))
        assert done.ok, done.error
    extra = {}
    for pair in args.set:
        name, _, value = pair.partition("=")
        extra[name] = json.loads(value)
    results = []
    for d in (int(v) for v in args.downsample.split(",")):
        config = TrainConfig(
            family="ae.kl", data=str(data), resolution=32, batch_size=args.batch,
            steps=args.steps, seed=0, sample_every=100000, checkpoint_every=100000,
            log_every=10, device="cpu", model={"downsample": d, **extra},
        )  # fmt: skip
        run = args.out / f"runs/ds{d}-{'-'.join(args.set) or 'default'}"
        start = time.perf_counter()
        out = run_sync(train_job(run, CancelToken(), config))
        assert out.ok, out.error or out.details
        seconds = time.perf_counter() - start
        rd = run_sync(read_data(config, None, None)).result
        held = rd.dataset.images[rd.held_idx]
        model = load_run_model(run, "cpu")
        mean_psnr, pooled = psnr_of(model, held)
        train_psnr, _ = psnr_of(model, rd.dataset.images[rd.train_idx[: len(held)]])
        stats = [float(v) for v in model.latent_stats]
        row = {
            "downsample": d, "settings": extra, "steps": args.steps, "batch": args.batch,
            "held_out": len(held), "psnr_held_out": mean_psnr, "psnr_held_out_pooled": pooled,
            "psnr_train": train_psnr, "latent_mean": stats[0], "latent_std": stats[1],
            "train_seconds": seconds, "last": out.result.metrics,
        }  # fmt: skip
        results.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print("| downsampling | latent | held-out PSNR (dB) | training PSNR | latent std | time |")
    print("|---|---|---|---|---|---|")
    for r in results:
        side = 32 // r["downsample"]
        print(
            f"| {r['downsample']}x | 4 x {side} x {side} | {r['psnr_held_out']:.2f} | "
            f"{r['psnr_train']:.2f} | {r['latent_std']:.2f} | {r['train_seconds']:.0f} s |"
        )


if __name__ == "__main__":
    main()
