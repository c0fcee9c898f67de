"""Training images/s: the studio's loop against a plain reference loop, in one run.

The reference is the shape of pytorch/examples' DCGAN: a folder dataset decoded with Pillow in
``__getitem__``, a DataLoader, fp32 eager, the same networks, batch and optimizer settings. The
studio loop is ``studio.engine.train.train_job`` (decoded uint8 cache, batches on the device,
no per-step host syncs). Ratios are what to compare; absolute numbers depend on the machine.

    python benchmarks/train_speed.py --device cpu --steps 60 --resolution 32
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from studio.core.jobs import CancelToken, run_sync
from studio.engine.demo import make_demo_dataset
from studio.engine.device import device_name, resolve_device
from studio.engine.runs import TrainConfig
from studio.engine.train import train_job
from studio.models.gan.dcgan import DCGAN, DCGANConfig


class FolderDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, resolution: int) -> None:
        self.files = sorted(p for p in root.rglob("*.png"))
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = Image.open(self.files[i]).convert("RGB").resize((self.resolution,) * 2, Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        return x


def reference_rate(data: Path, cfg: TrainConfig, device: torch.device, warmup: int, workers: int) -> float:
    torch.manual_seed(cfg.seed)
    model = DCGAN(DCGANConfig(resolution=cfg.resolution, **cfg.model)).to(device)
    model.configure_optimizers()
    loader = torch.utils.data.DataLoader(
        FolderDataset(data, cfg.resolution), batch_size=cfg.batch_size, shuffle=True,
        num_workers=workers, drop_last=True, persistent_workers=workers > 0,
    )
    opt_g, opt_d = model.optimizers["g"], model.optimizers["d"]
    times, step = [], 0
    while step < cfg.steps:
        for real in loader:
            real = real.to(device)
            z = torch.randn(real.shape[0], model.config.latent_dim, device=device)
            fake = model.generator(z)
            loss_d = F.binary_cross_entropy_with_logits(
                model.discriminator(real), torch.ones(real.shape[0], device=device)
            ) + F.binary_cross_entropy_with_logits(
                model.discriminator(fake.detach()), torch.zeros(real.shape[0], device=device)
            )
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = F.binary_cross_entropy_with_logits(
                model.discriminator(fake), torch.ones(real.shape[0], device=device)
            )
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            _ = loss_d.item(), loss_g.item()  # the reference logs every step, as the example does
            times.append(time.perf_counter())
            step += 1
            if step >= cfg.steps:
                break
    return (len(times) - warmup - 1) * cfg.batch_size / (times[-1] - times[warmup])


def studio_rate(data: Path, run: Path, cfg: TrainConfig, warmup: int) -> float:
    stamps: dict[int, float] = {}

    def on_progress(p) -> None:
        if p.stage == "train" and p.step not in stamps:
            stamps[p.step] = time.perf_counter()

    token = CancelToken()
    out = run_sync(train_job(run, token, cfg), token, on_progress)
    assert out.ok, out.error
    first, last = warmup + 1, cfg.steps
    return (last - first) * cfg.batch_size / (stamps[last] - stamps[first])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = run_sync(make_demo_dataset(Path(tmp) / "data", count=args.images, size=64)).result
        cfg = TrainConfig(
            family="gan.dcgan", data=str(data), resolution=args.resolution, batch_size=args.batch_size,
            steps=args.steps, sample_every=10**9, checkpoint_every=10**9, checkpoint_minutes=1e9,
            log_every=20, holdout_fraction=0.0, device=str(device), model={"latent_dim": 100, "width": 64},
        )
        warmup = 5
        ref, ours = [], []
        for r in range(args.repeats):
            ref.append(reference_rate(data, cfg, device, warmup, args.workers))
            ours.append(studio_rate(data, Path(tmp) / f"run{r}", cfg, warmup))
    ref_med, ours_med = statistics.median(ref), statistics.median(ours)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"{device_name(device)}, torch {torch.__version__}")
    print(f"DCGAN {args.resolution}x{args.resolution}, batch {args.batch_size}, {args.steps} steps, "
          f"median of {args.repeats}")
    print(f"{'loop':<34}{'img/s':>10}{'ratio':>8}")
    print(f"{'reference (PIL DataLoader, fp32)':<34}{ref_med:>10.1f}{1.0:>8.2f}")
    print(f"{'studio train_job':<34}{ours_med:>10.1f}{ours_med / ref_med:>8.2f}")


if __name__ == "__main__":
    main()
