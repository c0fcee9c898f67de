"""Is the input pipeline ever the bottleneck? Trainer step time from a folder vs from memory.

Three runs of the same ``train_job`` (DCGAN, same settings and seed):

* folder, cold: the trainer scans the folder, decodes every image once and writes the uint8
  cache (what a first run does);
* folder, warm: the same with the decode cache present (every later run);
* in memory: the decoded ``ImageDataset`` handed to ``train_job`` directly.

In all three the images then sit on the device as one uint8 tensor and batches are cut there,
so the step time should not depend on where the images came from: the target is within 5%.
The one-off load time (start to first step) is reported apart. For contrast, the step time of
a per-step Pillow-decoding DataLoader (the reference loop's input) is shown too.

    python benchmarks/loader.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from studio.core.jobs import CancelToken, run_sync
from studio.core.paths import cache_dir
from studio.engine.demo import make_demo_dataset
from studio.engine.device import device_name, resolve_device
from studio.engine.runs import TrainConfig
from studio.engine.train import prepare_dataset, train_job


def trainer_times(
    cfg: TrainConfig, run: Path, device: torch.device, warmup: int, dataset=None
) -> tuple[float, float]:
    """(seconds from start to the first step, median seconds per step after ``warmup``)."""
    stamps: dict[int, float] = {}

    def on_progress(p) -> None:
        if p.stage == "train" and p.step not in stamps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps[p.step] = time.perf_counter()

    token = CancelToken()
    start = time.perf_counter()
    job = train_job(run, token, cfg, dataset=dataset, cache_dir=None if dataset else cache_dir())
    out = run_sync(job, token, on_progress)
    assert out.ok, out.error
    steps = sorted(stamps)
    gaps = [stamps[b] - stamps[a] for a, b in zip(steps, steps[1:]) if a > warmup]
    return stamps[steps[0]] - start, statistics.median(gaps)


def dataloader_step(
    data: Path, cfg: TrainConfig, device: torch.device, workers: int, steps: int
) -> float:
    """Median seconds per batch of a Pillow-decoding DataLoader alone (no model)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from train_speed import FolderDataset

    loader = torch.utils.data.DataLoader(
        FolderDataset(data, cfg.resolution), batch_size=cfg.batch_size, shuffle=True,
        num_workers=workers, drop_last=True,
    )  # fmt: skip
    times = []
    it = iter(loader)
    for _ in range(steps):
        t = time.perf_counter()
        next(it).to(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = resolve_device(args.device)
    steps = args.steps or (20 if args.quick else 200)
    count = args.images or (512 if args.quick else 4096)
    warmup = 5
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["STUDIO_HOME"] = str(tmp_path / "home")  # a fresh, empty decode cache
        data = run_sync(make_demo_dataset(tmp_path / "data", count=count, size=64)).result
        cfg = TrainConfig(
            family="gan.dcgan", data=str(data), resolution=32, batch_size=32, steps=steps,
            sample_every=10**6, checkpoint_every=10**7, checkpoint_minutes=1e6, log_every=10,
            samples=4, holdout_fraction=0.0, device=str(device), model={"latent_dim": 100, "width": 32},
        )  # fmt: skip
        dataset = run_sync(prepare_dataset(str(data), cfg.resolution)).result
        # The three inputs take turns, so a change in the machine's load hits each of them.
        colds, warms, memories = [], [], []
        for r in range(args.repeats):
            shutil.rmtree(cache_dir(), ignore_errors=True)
            colds.append(trainer_times(cfg, tmp_path / f"cold{r}", device, warmup))
            warms.append(trainer_times(cfg, tmp_path / f"warm{r}", device, warmup))
            memories.append(
                trainer_times(cfg, tmp_path / f"memory{r}", device, warmup, dataset=dataset)
            )
        cold, warm, memory = (
            (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
            for runs in (colds, warms, memories)
        )
        pil = dataloader_step(data, cfg, device, 0, 12)
    print(
        f"machine: {os.cpu_count()} logical CPUs, {device_name(device)}, torch {torch.__version__}"
    )
    print(
        f"DCGAN 32x32 (width 32), batch {cfg.batch_size}, {count} images of 64 px, {steps} steps; "
        f"the three inputs take turns, median of {args.repeats}"
    )
    print()
    print("| input | load before step 1 | step time (median) | vs in memory |")
    print("|---|---|---|---|")
    for label, (load, step) in (
        ("folder, cold (scan + decode + write cache)", cold),
        ("folder, warm (scan + read cache)", warm),
        ("decoded dataset in memory", memory),
    ):
        print(f"| {label} | {load:.2f} s | {1000 * step:.1f} ms | {step / memory[1]:.3f} |")
    print(
        f"| (contrast) Pillow DataLoader, 0 workers: one batch, no model | | {1000 * pil:.1f} ms | |"
    )


if __name__ == "__main__":
    main()
