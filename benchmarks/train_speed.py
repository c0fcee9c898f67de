"""Training images/s: the studio trainer against a plain reference loop, in one run.

For DCGAN and DDPM (diffusers UNet2DModel; the ddpm-cifar10 shape at 32x32 on a GPU, a small
UNet with ``--quick``) on the same networks, batch and data:

* reference: a folder dataset decoded with Pillow in ``__getitem__``, a DataLoader with
  workers, fp32, eager, AdamW for DDPM (diffusers' ``train_unconditional`` example) and Adam for
  DCGAN (pytorch/examples), torch's default optimizer kernels, ``.item()`` on the loss every
  step as both examples log; it runs in a fresh child process, as a script of its own would
  (the studio trainer tunes process-wide settings - threads, the allocator - that it must not
  inherit);
* studio: ``studio.engine.train.train_job`` with its defaults (decoded uint8 cache, batches on
  the device, one host sync per log interval, fused AdamW; on the CPU freed memory kept for
  reuse; on CUDA bf16, TF32 and channels_last), then on CUDA with ``torch.compile`` too;
* on CUDA, each option alone on top of the studio loop with every option off (fp32 eager);
* FLOPs per image (forward + backward of one eager training step, FlopCounterMode), and on a
  GPU the model FLOPs utilisation against a measured bf16 matmul ceiling.

The loops take turns (reference, studio, reference, ...); each repeat's img/s comes from its
median step time and each row is the median of its repeats. Ratios are what to compare; absolute numbers depend on the machine and its load.

    python benchmarks/train_speed.py --device cpu --quick      # < 2 minutes on 2 cores
    python benchmarks/train_speed.py --device cuda             # the full GPU table
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from machine_info import cpu_name  # noqa: E402 - a sibling script's module
from PIL import Image

from studio.core.jobs import CancelToken, run_sync
from studio.engine.demo import make_demo_dataset
from studio.engine.device import device_name, resolve_device, step_generator
from studio.engine.runs import TrainConfig
from studio.engine.train import build_model, train_job
from studio.models.base import Batch, StepContext

OFF = dict(
    precision="fp32",
    tf32="off",
    channels_last="off",
    fused_adamw="off",
    compile="off",
    cuda_graphs=False,
    reuse_cpu_memory="off",
    fast_dropout="off",
    lean_unet="off",
)
#: The studio trainer's CPU settings before fused AdamW, memory reuse and fast dropout became
#: its defaults.
CPU_BEFORE = dict(fused_adamw="off", reuse_cpu_memory="off", fast_dropout="off", lean_unet="off")


@dataclasses.dataclass
class Case:
    name: str
    family: str
    resolution: int
    batch: int
    model: dict[str, Any]


def cases(quick: bool, cuda: bool) -> list[Case]:
    if cuda and not quick:
        return [
            Case("DCGAN 64x64 (nz 100, ngf = ndf = 64)", "gan.dcgan", 64, 128, {"latent_dim": 100, "width": 64}),
            Case(
                "DDPM 32x32 (ddpm-cifar10 UNet shape: 128 x 1,2,2,2, 2 layers, attention <= 16 px)",
                "diffusion.ddpm", 32, 128,
                {"width": 128, "channel_mults": "1,2,2,2", "layers_per_block": 2, "attention_res": 16},
            ),
        ]  # fmt: skip
    return [
        Case("DCGAN 32x32 (nz 100, width 32)", "gan.dcgan", 32, 32, {"latent_dim": 100, "width": 32}),
        Case(
            "DDPM 32x32, small UNet (16 x 1,2,2, 1 layer, attention <= 8 px)",
            "diffusion.ddpm", 32, 16,
            {"width": 16, "channel_mults": "1,2,2", "layers_per_block": 1, "attention_res": 8},
        ),
    ]  # fmt: skip


# -- the reference loop -------------------------------------------------------------------------


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


def reference_step(model: Any, device: torch.device) -> Callable[[torch.Tensor], None]:
    """One update written the way the public examples write it, on the family's networks."""
    if model.info.kind == "gan":
        opt_g, opt_d = model.optimizers["g"], model.optimizers["d"]

        def gan(real: torch.Tensor) -> None:
            n = real.shape[0]
            z = torch.randn(n, model.config.latent_dim, device=device)
            fake = model.generator(z)
            ones, zeros = torch.ones(n, device=device), torch.zeros(n, device=device)
            loss_d = F.binary_cross_entropy_with_logits(model.discriminator(real), ones)
            loss_d = loss_d + F.binary_cross_entropy_with_logits(
                model.discriminator(fake.detach()), zeros
            )
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = F.binary_cross_entropy_with_logits(model.discriminator(fake), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            _ = loss_d.item(), loss_g.item()

        return gan
    unet, sched = model.unet, model.scheduler
    opt = torch.optim.AdamW(unet.parameters(), lr=model.config.lr)  # torch's default kernels

    def ddpm(x0: torch.Tensor) -> None:
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), device=device)
        pred = unet(sched.add_noise(x0, noise, t), t).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _ = loss.item()

    return ddpm


def reference_rate(
    case: Case, data: Path, device: torch.device, steps: int, warmup: int, workers: int
) -> float:
    cfg = TrainConfig(family=case.family, resolution=case.resolution, model=case.model, seed=0)
    model = build_model(cfg, 0, device)
    model.train()
    step = reference_step(model, device)
    loader = torch.utils.data.DataLoader(
        FolderDataset(data, case.resolution), batch_size=case.batch, shuffle=True,
        num_workers=workers, drop_last=True, persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    times: list[float] = []
    while len(times) < steps:
        for real in loader:
            step(real.to(device))
            times.append(time.perf_counter())  # .item() above synchronised the device
            if len(times) >= steps:
                break
    return per_second(times[warmup:], case.batch)


def per_second(stamps: list[float], batch: int) -> float:
    """Images/s from the median time between consecutive steps: a step slowed by other work
    on a shared machine moves a mean, not the median."""
    return batch / statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def reference_threads() -> int:
    return torch.get_num_threads()


# -- the studio trainer ---------------------------------------------------------------------------


def studio_rate(
    case: Case, data: Path, run: Path, device: torch.device, steps: int, warmup: int, **options: Any
) -> float:
    cfg = TrainConfig(
        family=case.family, data=str(data), resolution=case.resolution, batch_size=case.batch,
        steps=steps, sample_every=10**6, checkpoint_every=10**7, checkpoint_minutes=1e6,
        log_every=25, samples=4, holdout_fraction=0.0, device=str(device), model=case.model,
        **options,
    )  # fmt: skip
    stamps: dict[int, float] = {}

    def on_progress(p) -> None:
        if p.stage == "train" and p.step not in stamps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps[p.step] = time.perf_counter()

    token = CancelToken()
    out = run_sync(train_job(run, token, cfg), token, on_progress)
    assert out.ok, out.error
    return per_second([stamps[s] for s in range(warmup + 1, steps + 1)], case.batch)


# -- FLOPs -------------------------------------------------------------------------------------


def flops_per_image(case: Case, device: torch.device) -> float:
    """Forward + backward FLOPs of one eager fp32 training step of the family, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = TrainConfig(family=case.family, resolution=case.resolution, model=case.model, seed=0)
    model = build_model(cfg, 0, device)
    model.train()
    batch = Batch(
        torch.rand(case.batch, 3, case.resolution, case.resolution, device=device) * 2 - 1
    )
    with FlopCounterMode(display=False) as counter:
        model.train_step(batch, StepContext(0, step_generator(device, 0, 0)))
    return counter.get_total_flops() / case.batch


def matmul_ceiling(device: torch.device) -> float:
    """bf16 8192^3 matmul FLOP/s: the practical ceiling MFU is measured against."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    reps, t = 20, time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


# -- main -------------------------------------------------------------------------------------


def machine(device: torch.device) -> str:
    return (
        f"{cpu_name()}, {os.cpu_count()} logical CPUs, {device_name(device)}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--quick", action="store_true", help="small models and few steps (CPU: < 2 min)"
    )
    ap.add_argument("--steps", type=int, default=None, help="measured steps per loop")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="reference DataLoader workers")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--only", choices=("dcgan", "ddpm"), default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (16 if args.quick else 60)
    warmup = 3 if args.quick else 10
    repeats = args.repeats or 3
    workers = args.workers if args.workers is not None else (1 if args.quick else 4)
    ceiling = matmul_ceiling(device) if cuda else None
    print(f"machine: {machine(device)}")
    if ceiling:
        print(f"bf16 matmul ceiling (8192^3): {ceiling / 1e12:.0f} TFLOP/s")
    # The reference runs in a child process of its own, started before the studio trainer
    # changes anything process-wide, and kept for every case and repeat.
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("STUDIO_HOME", str(Path(tmp) / "home"))  # the decode cache
        count = args.images or (256 if args.quick else 2048)
        data = run_sync(make_demo_dataset(Path(tmp) / "data", count=count, size=64)).result
        with ProcessPoolExecutor(1, mp_context=spawn) as ref:
            print(f"reference process: {ref.submit(reference_threads).result()} torch threads")
            for case in cases(args.quick, cuda):
                if args.only and not case.family.endswith(args.only):
                    continue
                run_case(
                    case, data, Path(tmp), device, steps, warmup, repeats, workers, ceiling, ref
                )


def run_case(
    case: Case, data: Path, tmp: Path, device: torch.device, steps: int, warmup: int,
    repeats: int, workers: int, ceiling: float | None, ref_process: ProcessPoolExecutor,
) -> None:  # fmt: skip
    cuda = device.type == "cuda"
    flops = flops_per_image(case, device)
    runs = iter(range(10**6))

    def studio_once(**options: Any) -> float:
        run = tmp / f"{case.family}-{next(runs)}"
        return studio_rate(case, data, run, device, steps, warmup, **options)

    def studio(**options: Any) -> float:
        return statistics.median(studio_once(**options) for _ in range(repeats))

    # The loops take turns, so load from other work hits each of them. On the CPU the studio
    # loop without its two CPU defaults (fused AdamW, freed memory kept for reuse) runs too,
    # in the reference's process: reuse_cpu_memory=off leaves that process's allocator as is.
    rates: dict[str, list[float]] = {"reference": [], "studio": [], "before": []}
    for i in range(repeats):
        job = ref_process.submit(reference_rate, case, data, device, steps, warmup, workers)
        rates["reference"].append(job.result())
        if not cuda:
            run = tmp / f"{case.family}-before-{i}"
            job = ref_process.submit(
                studio_rate, case, data, run, device, steps, warmup, **CPU_BEFORE
            )
            rates["before"].append(job.result())
        rates["studio"].append(studio_once())
    ref, ours = statistics.median(rates["reference"]), statistics.median(rates["studio"])

    def paired(values: list[float]) -> float:
        """The median of each repeat's ratio to the reference run just before it: on a shared
        machine the load drifts between repeats, and a ratio of medians mixes repeats."""
        return statistics.median(v / r for v, r in zip(values, rates["reference"]))

    spread = "; ".join(
        f"{name} {', '.join(f'{r:.0f}' for r in values)}"
        for name, values in rates.items()
        if values
    )
    rows: list[tuple[str, float | None, float | None]] = [
        (
            f"reference (Pillow DataLoader, {workers} workers, fp32 eager, .item() each step)",
            ref,
            1.0,
        )
    ]
    rows.append(
        (
            "studio train_job, defaults"
            + (" (bf16, TF32, channels_last, fused AdamW)" if cuda else ""),
            ours,
            paired(rates["studio"]),
        )
    )
    if not cuda:
        before = statistics.median(rates["before"])
        rows.append(
            (
                "studio, without fused AdamW, memory reuse, fast dropout and lean UNet "
                "(the CPU defaults before issue 7's CPU work)",
                before,
                paired(rates["before"]),
            )
        )
    if cuda:
        rows.append(("studio, defaults + torch.compile", (c := studio(compile="on")), c / ref))
        base = studio(**OFF)
        rows.append(
            ("studio, every option off (fp32 eager; data on the GPU, no syncs)", base, base / ref)
        )
        for label, opt in (
            ("  + bf16 autocast alone", dict(precision="bf16")),
            ("  + TF32 alone", dict(tf32="on")),
            ("  + channels_last alone", dict(channels_last="on")),
            ("  + fused AdamW alone", dict(fused_adamw="on")),
            ("  + lean UNet blocks alone (diffusion)", dict(lean_unet="on")),
            ("  + torch.compile alone", dict(compile="on")),
            ("  + CUDA graphs alone (compile, reduce-overhead)", dict(cuda_graphs=True)),
        ):
            if "lean_unet" in opt and not case.family.startswith("diffusion"):
                continue  # no UNet to make lean
            rate = studio(**{**OFF, **opt})
            rows.append((label + f" (x{rate / base:.2f} over all-off)", rate, rate / ref))
    print()
    print(
        f"### {case.name}, batch {case.batch}, {steps} steps ({warmup} warm-up), median of {repeats}"
    )
    print(f"FLOPs per image (forward + backward, one eager step): {flops / 1e9:.3f} GFLOP")
    print(f"each repeat, img/s: {spread}")
    print()
    print("| loop | img/s | vs reference | " + ("MFU |" if cuda else "achieved |"))
    print("|---|---|---|---|")
    for label, rate, ratio in rows:
        if cuda and ceiling:
            extra = f"{100 * rate * flops / ceiling:.1f}%"
        else:
            extra = f"{rate * flops / 1e9:.1f} GFLOP/s"
        print(f"| {label} | {rate:.1f} | {ratio:.2f}x | {extra} |")
    if not cuda:
        print("| bf16, channels_last, compile, CUDA graphs | not CPU defaults (see docs) | | |")


if __name__ == "__main__":
    main()
