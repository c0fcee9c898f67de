"""Does prompting a text-to-image model trained here give what the prompt says?

Trains ``diffusion.text`` on the built-in demo dataset (coloured shapes captioned like
"small red circle on blue") at 32 px through the real ``train_job``, then for each prompt
("red circle", "blue square", ...) generates ``--n`` images and checks each with a simple
checker:

* colour: the background is the median of the border pixels; the foreground is every pixel
  far from it; the foreground's median colour must be nearest to the prompt's PALETTE colour;
* shape: the foreground mask is compared (IoU) with templates of every demo shape, drawn by
  the demo's own drawing code at the mask's centroid, with a radius from its area, at a few
  angles and one-pixel shifts; the best-matching shape must be the prompt's.

A baseline row runs the same checker on real demo images against their captions, which shows
how often the checker itself is right. Prints a table and writes ``results.json`` (and a sample
grid per prompt) under ``--out``. Stops training after ``--minutes`` if ``--steps`` are not
reached by then (the table says how many steps ran).

    OMP_NUM_THREADS=1 python benchmarks/prompt_accuracy.py --steps 3000 --minutes 14  # ~15 min
    python benchmarks/prompt_accuracy.py --quick          # a 1-minute smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from studio.core.imaging import make_grid
from studio.core.jobs import CancelToken, Progress, run_sync
from studio.engine.data import load_dataset, scan_folder
from studio.engine.demo import PALETTE, SHAPES, _polygon, ensure_demo_dataset
from studio.engine.device import cpu_generator
from studio.engine.runs import TrainConfig
from studio.engine.sample import load_run_model
from studio.engine.train import save_png, train_job
from studio.models.base import images_to_uint8

RESOLUTION = 32
PROMPTS = (
    "red circle",
    "blue square",
    "green triangle",
    "yellow star",
    "purple ring",
    "orange cross",
    "white square",
    "pink circle",
)
MODEL = {
    "width": 24,
    "channel_mults": "1,2,2",
    "layers_per_block": 1,
    "attention_res": 8,
    "lr": 1e-3,
    "warmup_steps": 30,
    "ema_decay": 0.995,
    "cond_drop_prob": 0.1,
    "word_dropout": 0.25,
    "text_dim": 64,
    "text_layers": 2,
}
FG_DISTANCE = 60.0  # RGB distance from the background that counts as foreground
_SS = 4  # template supersampling, as in the demo's drawing

# -- the checker -------------------------------------------------------------------------------


def _template(shape: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """Boolean coverage mask (> 50 %) of ``shape`` drawn like the demo draws it; cx, cy, r in
    pixels of the ``size`` image."""
    big = size * _SS
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    cx, cy, r = cx * _SS, cy * _SS, r * _SS
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "ring":
        draw.ellipse(box, outline=255, width=max(1, round(r * 0.35)))
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=255)
    return np.asarray(img.reduce(_SS)) > 127


def _area_factors() -> dict[str, float]:
    """Area / r^2 of each shape, measured on a large template."""
    size, r = 64, 24.0
    return {s: float(_template(s, 32, 32, r, 0.0, size).sum()) / r**2 for s in SHAPES}


AREA = _area_factors()
ANGLES = [math.radians(a) for a in (-20, -10, 0, 10, 20)]


def foreground(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, background colour)``: pixels far from the median border colour."""
    img = image.astype(np.float64)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    return np.linalg.norm(img - bg, axis=-1) > FG_DISTANCE, bg


def nearest_colour(rgb: np.ndarray) -> str:
    return min(PALETTE, key=lambda name: float(np.linalg.norm(rgb - np.array(PALETTE[name]))))


def best_shape(mask: np.ndarray) -> tuple[str, float]:
    """The demo shape whose template overlaps ``mask`` best, and that IoU."""
    size = mask.shape[0]
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    best, best_iou = "none", -1.0
    for shape in SHAPES:
        r = math.sqrt(mask.sum() / AREA[shape])
        angles = [0.0] if shape in ("circle", "ring") else ANGLES
        for angle in angles:
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    t = _template(shape, cx + dx, cy + dy, r, angle, size)
                    iou = float((t & mask).sum()) / max(1, int((t | mask).sum()))
                    if iou > best_iou:
                        best, best_iou = shape, iou
    return best, best_iou


def check(image: np.ndarray) -> tuple[str, str]:
    """``(colour name, shape name)`` the checker sees in an H x W x 3 uint8 image."""
    mask, _bg = foreground(image)
    if mask.sum() < 4 or mask.mean() > 0.8:
        return "none", "none"
    far = image[mask].astype(np.float64)
    colour = nearest_colour(np.median(far, axis=0))
    shape, _iou = best_shape(mask)
    return colour, shape


def parse_prompt(prompt: str) -> tuple[str, str]:
    words = prompt.split()
    colour = next(w for w in words if w in PALETTE)
    shape = next(w for w in words if w in SHAPES)
    return colour, shape


# -- the run -----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/prompt_accuracy"))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--minutes", type=float, default=14.0, help="training time cap")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--count", type=int, default=3000, help="demo images")
    parser.add_argument("--n", type=int, default=8, help="images per prompt")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--sampler", default="dpm++")
    parser.add_argument("--sampling-steps", type=int, default=20)
    parser.add_argument("--baseline", type=int, default=600, help="real images checked")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, help="evaluate this trained run, no training")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.minutes, args.count, args.n, args.baseline = 20, 1.0, 300, 2, 60
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    data = run_sync(ensure_demo_dataset(args.out / "demo", count=args.count, size=RESOLUTION))
    assert data.ok, data.error
    demo = data.result

    # Baseline: the checker on real demo images against their own captions.
    scan = run_sync(scan_folder(demo))
    dataset = run_sync(load_dataset(scan.result, RESOLUTION)).result
    pick = np.random.default_rng(args.seed).permutation(len(dataset))[: args.baseline]
    base = {"colour": 0, "shape": 0, "both": 0}
    for i in pick:
        want_c, want_s = parse_prompt(str(dataset.captions[i]).split(" on ")[0])
        got_c, got_s = check(dataset.images[i])
        base["colour"] += got_c == want_c
        base["shape"] += got_s == want_s
        base["both"] += got_c == want_c and got_s == want_s
    log(
        f"checker on {len(pick)} real images: "
        + ", ".join(f"{k} {v / len(pick):.0%}" for k, v in base.items())
    )

    run = args.run
    steps_done, train_s = None, 0.0
    if run is None:
        run = args.out / f"run-{int(time.time())}"
        cfg = TrainConfig(
            family="diffusion.text", data=str(demo), resolution=RESOLUTION,
            batch_size=args.batch, steps=args.steps, seed=args.seed, sample_every=10**6,
            checkpoint_every=10**7, checkpoint_minutes=10**6, log_every=25, samples=4,
            holdout_fraction=0.0, device="cpu", model=dict(MODEL),
        )  # fmt: skip
        token = CancelToken()
        t0 = time.monotonic()

        def on_progress(p: Progress) -> None:
            if p.metrics and "loss" in p.metrics:
                log(
                    f"step {p.step}/{p.total} loss {p.metrics['loss']:.4f} ({time.monotonic() - t0:.0f} s)"
                )
            if time.monotonic() - t0 > args.minutes * 60 and not token.stop_requested:
                log(f"time cap reached at step {p.step}: stopping (a checkpoint is kept)")
                token.stop()

        out = run_sync(train_job(run, token, cfg), token, on_progress)
        assert out.ok, out.error or out.details
        steps_done, train_s = out.result.step, time.monotonic() - t0

    model = load_run_model(run, "cpu")
    rows = []
    t1 = time.monotonic()
    for k, prompt in enumerate(PROMPTS):
        want_c, want_s = parse_prompt(prompt)
        with torch.no_grad():
            images = model.sample(
                args.n, cpu_generator(args.seed + 1000 * k), prompt=prompt,
                guidance=args.guidance, sampler=args.sampler, steps=args.sampling_steps,
            )  # fmt: skip
        arr = images_to_uint8(images).numpy()
        save_png(args.out / f"{prompt.replace(' ', '_')}.png", make_grid(arr))
        seen = [check(img) for img in arr]
        row = {
            "prompt": prompt,
            "n": len(seen),
            "colour": sum(c == want_c for c, _ in seen) / len(seen),
            "shape": sum(s == want_s for _, s in seen) / len(seen),
            "both": sum(c == want_c and s == want_s for c, s in seen) / len(seen),
            "seen": [f"{c} {s}" for c, s in seen],
        }
        rows.append(row)
        log(
            f"{prompt!r}: colour {row['colour']:.0%} shape {row['shape']:.0%} both {row['both']:.0%}  {row['seen']}"
        )
    sample_s = time.monotonic() - t1

    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("colour", "shape", "both")}
    table = ["| prompt | n | colour | shape | both |", "|---|---|---|---|---|"]
    for r in rows:
        table.append(
            f"| {r['prompt']} | {r['n']} | {r['colour']:.0%} | {r['shape']:.0%} | {r['both']:.0%} |"
        )
    table.append(
        f"| **mean of prompts** | {sum(r['n'] for r in rows)} | {mean['colour']:.0%} | {mean['shape']:.0%} | {mean['both']:.0%} |"
    )
    nb = len(pick)
    table.append(
        f"| baseline: checker on real demo images | {nb} | {base['colour'] / nb:.0%} | {base['shape'] / nb:.0%} | {base['both'] / nb:.0%} |"
    )
    table.append(
        f"| chance (uniform guess) | | {1 / len(PALETTE):.0%} | {1 / len(SHAPES):.0%} | {1 / (len(PALETTE) * len(SHAPES)):.1%} |"
    )
    log("\n".join(table))
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "run")}
    result = {
        "settings": settings, "model": MODEL, "steps_done": steps_done, "train_s": train_s,
        "sample_s": sample_s, "total_s": time.monotonic() - started, "rows": rows,
        "baseline": {k: v / nb for k, v in base.items()}, "baseline_n": nb, "machine": machine,
        "run": str(run),
    }  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    log(
        f"steps {steps_done}, training {train_s:.0f} s, sampling {sample_s:.0f} s, total {result['total_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
