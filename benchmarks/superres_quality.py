"""Super-resolution against bicubic on held-out crops of real photographs (issue 18's benchmark).

The photographs: the real colour photographs scikit-image ships in its wheel, read without
installing it (``--photos`` takes the wheel file or a folder), cut into square crops by
``benchmarks/small_folder.py``'s code (training crops from each photo's training region,
held-out crops from its held-out band: no held-out crop shares a pixel with a training crop).

Each variant trains ``i2i.superres`` through the real ``train_job`` on the training crops, then
upscales the held-out crops' low-resolution inputs (made by the run's own degradation, from a
fixed seed: bicubic gets exactly the same inputs) and scores PSNR and SSIM against the original
crops, beside bicubic's. Writes ``results.json`` and a sheet per variant (rows: bicubic |
output | original) under ``--out``; ``--sheets`` copies the sheets there too. Run it by hand;
the tests never do::

    python benchmarks/superres_quality.py --photos /tmp/wheels/scikit_image-*.whl \\
        --variants x2-residual,x2-sr3,x4-residual --steps 200
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # small_folder.py, quality.py
import quality  # noqa: E402
import small_folder  # noqa: E402 - the photo crops

from studio.core.atomic import write_json  # noqa: E402
from studio.core.imaging import make_grid  # noqa: E402
from studio.core.jobs import CancelToken, run_sync  # noqa: E402
from studio.engine.device import cpu_generator  # noqa: E402
from studio.engine.monitor import image_quality, upsampled  # noqa: E402
from studio.engine.runs import TrainConfig  # noqa: E402
from studio.engine.sample import load_run_model  # noqa: E402
from studio.engine.train import save_png, train_job  # noqa: E402
from studio.models.base import images_to_uint8  # noqa: E402

SEED = 0
# name -> (scale, model settings beyond the shared ones). "sr3" is the behaviour before the
# residual setting: the network models the sharp image with epsilon prediction.
VARIANTS: dict[str, tuple[int, dict[str, Any]]] = {
    "x2-residual": (2, {}),
    "x2-sr3": (2, {"residual": False, "prediction_type": "epsilon"}),
    "x4-residual": (4, {}),
    "x4-sr3": (4, {"residual": False, "prediction_type": "epsilon"}),
}
SHARED = {"width": 32, "layers_per_block": 1, "lr": 5e-4, "warmup_steps": 20, "ema_decay": 0.99}


def write_crops(folder: Path, photos: dict[str, np.ndarray], crops: list, size: int) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, crop in enumerate(crops):
        (folder / f"{i:05d}.png").write_bytes(
            small_folder._png(small_folder.render_crop(photos, crop, size))
        )


def evaluate(
    model: Any, held: np.ndarray, steps: int, sampler: str, columns: dict[str, Any], label: str
) -> dict[str, Any]:
    """PSNR/SSIM of the model's outputs and of bicubic on the same inputs, and the sheet;
    the first 8 outputs go to ``columns[label]`` (with bicubic's and the originals)."""
    target = torch.from_numpy(held).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    inputs = model.paired_inputs(target, cpu_generator(SEED + 2))
    gen = cpu_generator(SEED + 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = torch.cat(
            [
                model.sample(len(c), gen, image=c, sampler=sampler, steps=steps).float().cpu()
                for c in inputs.split(16)
            ]
        )
    seconds = (time.perf_counter() - t0) / len(out)
    bicubic = upsampled(inputs, target.shape[-2:])
    psnr, ssim = image_quality(out, target)
    psnr_b, ssim_b = image_quality(bicubic, target)
    rows = torch.stack([bicubic[:8], out[:8], target[:8]], 1).flatten(0, 1)
    sheet = make_grid(images_to_uint8(rows).numpy(), nrow=3)
    columns["bicubic"], columns["original"] = bicubic[:8], target[:8]
    columns[label] = out[:8]
    return {
        "psnr": psnr,
        "ssim": ssim,
        "psnr_bicubic": psnr_b,
        "ssim_bicubic": ssim_b,
        "seconds_per_image": seconds,
        "sheet": sheet,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, required=True, help="scikit-image wheel or folder")
    ap.add_argument("--variants", default="x2-residual,x2-sr3,x4-residual")
    ap.add_argument("--resolution", type=int, default=32, help="output (original) size")
    ap.add_argument("--train", type=int, default=2000, help="training crops")
    ap.add_argument("--heldout", type=int, default=64, help="held-out crops")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--sample-steps", default="20", help="sampler steps, a comma list: a row per value"
    )
    ap.add_argument("--reuse", action="store_true", help="score runs already trained in --out")
    ap.add_argument("--sampler", default="dpm++")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("/tmp/superres_quality"))
    ap.add_argument("--sheets", type=Path, default=None, help="also copy the sheets here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos = small_folder.read_photos(args.photos)
    res = args.resolution
    train = small_folder.draw_crops(photos, args.train, held=False, seed=SEED)
    held_crops = small_folder.draw_crops(photos, args.heldout, held=True, seed=SEED + 1)
    data = args.out / f"train-{res}"
    write_crops(data, photos, train, res)
    held = np.stack([small_folder.render_crop(photos, c, res) for c in held_crops])
    meta = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": quality.machine(),
        "photos": sorted(photos),
        "resolution": res,
        "train": len(train),
        "heldout": len(held),
        "steps": None if args.reuse else args.steps,  # --reuse: each run's own
        "batch_size": args.batch_size,
        "sampler": args.sampler,
        "shared": SHARED,
    }
    rows = []
    columns: dict[int, dict[str, Any]] = {}  # per scale: bicubic, each output, original
    for name in args.variants.split(","):
        scale, extra = VARIANTS[name]
        settings = {**SHARED, "scale": scale, **extra}
        run = args.out / "runs" / f"{name}-{res}"
        reuse = args.reuse and (run / "model").is_dir()
        if run.exists() and not reuse:
            shutil.rmtree(run)
        cfg = TrainConfig(
            family="i2i.superres",
            data=str(data),
            resolution=res,
            batch_size=args.batch_size,
            steps=args.steps,
            seed=SEED,
            sample_every=10**6,
            checkpoint_every=args.steps,
            checkpoint_minutes=1e6,
            log_every=max(1, args.steps // 10),
            holdout_fraction=0.0,  # the held-out crops come from their own bands
            device=args.device,
            model=settings,
        )
        what = "scoring the trained run" if reuse else f"{args.steps} steps"
        print(f"{name}: {what} at {res} px, x{scale}", flush=True)
        t0 = time.perf_counter()
        train_s, loss = None, None
        if not reuse:
            token = CancelToken()
            out = run_sync(train_job(run, token, cfg), token, quality._printer(name))
            if not out.ok:
                print(f"  FAILED: {out.error}\n{out.details or ''}", file=sys.stderr)
                rows.append({"variant": name, "error": out.error})
                continue
            train_s, loss = time.perf_counter() - t0, out.result.metrics.get("loss")
        model = load_run_model(run, args.device)
        model.eval()
        for steps in [int(s) for s in args.sample_steps.split(",")]:
            label = f"{name}, {steps} steps"
            scores = evaluate(
                model, held, steps, args.sampler, columns.setdefault(scale, {}), label
            )
            sheet = scores.pop("sheet")
            path = args.out / f"superres-{name}-{res}-{steps}steps.png"
            save_png(path, sheet)
            if args.sheets:
                args.sheets.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, args.sheets / path.name)
            row = {
                "variant": name,
                "scale": scale,
                "settings": settings,
                "train_s": train_s,
                "final_loss": loss,
                "sample_steps": steps,
                **scores,
            }
            rows.append(row)
            print(f"  {json.dumps(row)}", flush=True)
            write_json(args.out / "results.json", {"meta": meta, "rows": rows})
    for scale, cols in columns.items():
        # One sheet per scale: bicubic | every variant and step count | original, by row.
        order = ["bicubic", *(k for k in cols if k not in ("bicubic", "original")), "original"]
        stacked = torch.stack([cols[k] for k in order], 1).flatten(0, 1)
        path = args.out / f"superres-x{scale}-{res}.png"
        save_png(path, make_grid(images_to_uint8(stacked).numpy(), nrow=len(order)))
        print(f"x{scale} sheet columns: {' | '.join(order)} -> {path}", flush=True)
        if args.sheets:
            shutil.copy(path, args.sheets / path.name)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
