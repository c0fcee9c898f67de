"""The feed-forward style network (``style.fast``): seconds per training step (the network and
its perceptual losses through a full-size VGG-19 of random weights; the cost does not depend
on the weights) and seconds to stylise one image, at the default width and residual blocks.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/fast_style_speed.py \\
        --train-sizes 64 128 --apply-sizes 256 512 1024

CPU seconds (``process_time``) are printed beside wall seconds: on a shared machine the wall
clock counts other people's work too. The first step of each size (warm-up) is left out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    t, c = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats, (time.process_time() - c) / repeats


def main() -> None:
    import torch

    import studio.engine.file_inputs  # noqa: F401 - the readers the family uses
    from studio.engine.vgg import random_vgg19
    from studio.models.base import Batch, StepContext
    from studio.models.registry import get_family

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-sizes", type=int, nargs="*", default=[64, 128])
    parser.add_argument("--apply-sizes", type=int, nargs="*", default=[256, 512, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    family = get_family("style.fast")
    vgg = random_vgg19().eval().requires_grad_(False).to(device)
    for size in args.train_sizes:
        model = family(family.Config.from_dict({"resolution": size})).to(device)
        model.configure_optimizers()
        style = torch.rand(1, 3, size, size, device=device)
        with torch.no_grad():
            from studio.models.style.fast import STYLE_LAYERS
            from studio.models.vgg import gram

            grams = {k: gram(v) for k, v in vgg(style, list(STYLE_LAYERS)).items()}
        model._frozen = {"vgg": vgg, "grams": grams}  # as prepare_for_data leaves it
        images = torch.rand(args.batch, 3, size, size, device=device) * 2 - 1
        ctx = StepContext(0, torch.Generator(device), lr_scale=1.0)
        wall, cpu = _timed(lambda m=model, x=images, c=ctx: m.train_step(Batch(x), c), args.repeats)
        print(json.dumps({"train_size": size, "batch": args.batch, "threads":
                          torch.get_num_threads(), "step_s": round(wall, 3),
                          "cpu_step_s": round(cpu, 3)}), flush=True)  # fmt: skip
    model = family(family.Config.from_dict({"resolution": 128})).to(device).eval()
    for size in args.apply_sizes:
        x = torch.rand(1, 3, size * 3 // 4, size, device=device) * 2 - 1
        wall, cpu = _timed(
            lambda m=model, x=x: m.sample(1, torch.Generator(), image=x), args.repeats
        )
        print(json.dumps({"apply_size": f"{size}x{size * 3 // 4}", "seconds": round(wall, 3),
                          "cpu_seconds": round(cpu, 3)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
