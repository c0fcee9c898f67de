"""Training and sampling speed of pixel against latent text-to-image diffusion, same settings.

Builds ``diffusion.text`` and ``diffusion.latent_text`` (on a VQ-VAE run trained for one step
here: the speed does not depend on how well it reconstructs) with the same UNet settings at
one resolution, times train steps on one batch of random images and a DDIM sampling run, and
prints images per second. The UNets differ in depth: each family picks its levels from the
side it denoises (the image, or the latent grid), as a user's run would.

    PYTHONPATH=. python benchmarks/latent_speed.py --resolution 64 --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from studio.core.jobs import CancelToken, run_sync
from studio.engine.runs import TrainConfig
from studio.engine.train import train_job
from studio.models.base import Batch, StepContext
from studio.models.registry import get_family


def autoencoder_run(root: Path, resolution: int, downsample: int) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / f"{i}.png")
    cfg = TrainConfig(
        family="vae.vqvae", data=str(data), resolution=resolution, batch_size=4, steps=1,
        sample_every=1000, checkpoint_every=1000, samples=4, holdout_fraction=0.0,
        device="cpu", model={"embedding_dim": 4, "downsample": downsample, "width": 16},
    )  # fmt: skip
    out = run_sync(train_job(root / "ae", CancelToken(), cfg))
    assert out.ok, out.error
    return root / "ae"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--downsample", type=int, default=4, choices=(2, 4, 8))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="train steps timed (first dropped)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = torch's")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        ae = autoencoder_run(Path(tmp), args.resolution, args.downsample)
        common = {"resolution": args.resolution, "width": args.width, "vocab": "a red square"}
        n = args.batch
        x = (torch.rand(n, 3, args.resolution, args.resolution) * 2 - 1).to(device)
        for key, extra in [("diffusion.text", {}), ("diffusion.latent_text", {"autoencoder": str(ae)})]:  # fmt: skip
            family = get_family(key)
            torch.manual_seed(0)
            model = family(family.Config.from_dict({**common, **extra})).to(device)
            model.configure_optimizers()
            model.remember_base_lrs()
            features = model.training_features(x)
            batch = Batch(images=x, captions=("a red square",) * n, features=features)
            times = []
            for step in range(args.steps):
                gen = torch.Generator(device).manual_seed(step)
                began = time.perf_counter()
                model.train_step(batch, StepContext(step=step, generator=gen))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - began)
            step_s = float(np.median(times[1:]))
            model.eval()
            began = time.perf_counter()
            with torch.no_grad():
                model.sample(n, torch.Generator().manual_seed(0), steps=10, sampler="ddim")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            sample_s = time.perf_counter() - began
            params = sum(p.numel() for p in model.unet.parameters()) / 1e6
            print(
                f"{key}: UNet {params:.2f}M parameters; training {n / step_s:.1f} images/s "
                f"({step_s * 1000:.0f} ms a step of {n}); sampling (10 DDIM steps) "
                f"{n / sample_s:.2f} images/s"
            )


if __name__ == "__main__":
    main()
