"""Time per L-BFGS iteration of neural style transfer (``studio stylize``) with a full-size
VGG-19 of random weights (the cost does not depend on the weights), and the peak memory.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/stylize_speed.py --sizes 256 512 --steps 4

Each size runs in a fresh child process, so its peak resident memory (``ru_maxrss``) is its
own. CPU seconds (``process_time``) are printed beside wall seconds: on a shared machine the
wall clock counts other people's work too. The first iteration (allocator and kernel warm-up, torch's optimizer import) is timed
apart from the rest; "per iteration" and "per evaluation" are the mean over the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(size: int, steps: int, device: str) -> dict:
    import numpy as np
    import torch

    from studio.core.jobs import CancelToken
    from studio.core.stylize import StyleSettings
    from studio.engine.stylize import StyleRequest, stylize_job
    from studio.engine.vgg import random_vgg19

    rng = np.random.default_rng(0)
    content = rng.integers(0, 256, (size * 3 // 4, size, 3), dtype=np.uint8)  # 4:3
    style = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    settings = StyleSettings(steps=steps + 1, size=size, preview_every=10_000)
    vgg = random_vgg19()
    job = stylize_job(StyleRequest(content, style, settings), device=device, token=CancelToken(),
                      vgg=vgg)  # fmt: skip
    times, cpu, evals = [], [], []
    t, c = time.perf_counter(), time.process_time()
    for progress in job:
        now, now_cpu = time.perf_counter(), time.process_time()
        times.append(now - t)
        cpu.append(now_cpu - c)
        evals.append(int(progress.info.get("evaluations", 0)))
        t, c = now, now_cpu
    rest_evals = evals[-1] - evals[0]
    return {
        "size": size,
        "working": f"{size}x{size * 3 // 4}",
        "threads": torch.get_num_threads(),
        "first_s": round(times[0], 2),
        "per_iteration_s": round(sum(times[1:]) / len(times[1:]), 3),
        "per_evaluation_s": round(sum(times[1:]) / max(1, rest_evals), 3),
        "cpu_per_iteration_s": round(sum(cpu[1:]) / len(cpu[1:]), 3),
        "cpu_per_evaluation_s": round(sum(cpu[1:]) / max(1, rest_evals), 3),
        "evaluations": rest_evals,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=4, help="timed iterations after the first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.device)))
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--steps", str(args.steps),
               "--device", args.device]  # fmt: skip
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
