"""A VQ-VAE run as an image codec (``studio compress``) against JPEG and WebP, measured.

The collection: the GNOME Adwaita icon theme's full-colour 48 px icons (``48x48/legacy``
without the ``symbolic`` ones, composited on white). A seeded 10% of the icons is held out;
the run trains on the 16 px tiles of the others (each 48 px icon is 3 x 3 tiles, as the codec
cuts it), and each held-out icon is then compressed whole. For every held-out icon, JPEG and
WebP (Pillow) are given the best quality whose file is no larger than the ``.svq`` file; where
even their lowest quality is larger, that smallest file is used and counted as "over".

    python benchmarks/compression.py --out /tmp/compression            # ~25 min on 2 cores
    python benchmarks/compression.py --steps 50 --out /tmp/compression  # smoke

Run by hand; the tests never do.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from studio.core.codefile import split_tiles
from studio.core.jobs import CancelToken, run_sync
from studio.engine.compress import compress_job, measure_table, psnr, ssim, weights_digest
from studio.engine.images import open_image
from studio.engine.runs import TrainConfig
from studio.engine.sample import load_run_model
from studio.engine.train import train_job

ICONS = Path("/usr/share/icons/Adwaita/48x48/legacy")
TILE = 16
SEED = 0
HELD_OUT = 0.1
CONFIGS: dict[str, dict[str, Any]] = {
    "vq-d4": {"downsample": 4, "codebook_size": 256, "width": 32},
    "vq-d2": {"downsample": 2, "codebook_size": 256, "width": 32},
}


def build(out: Path) -> tuple[Path, list[Path]]:
    """Write the training tiles; return their folder and the held-out icons (as PNGs on white)."""
    icons = sorted(p for p in ICONS.glob("*.png") if "symbolic" not in p.name)
    order = np.random.default_rng(SEED).permutation(len(icons))
    n_held = round(len(icons) * HELD_OUT)
    held = {icons[i] for i in order[:n_held]}
    tiles_dir, held_dir = out / "tiles", out / "heldout"
    for d in (tiles_dir, held_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    held_paths = []
    for path in icons:
        image = np.asarray(open_image(path), dtype=np.uint8)  # transparency on white
        if path in held:
            target = held_dir / path.name
            Image.fromarray(image).save(target)
            held_paths.append(target)
            continue
        for i, tile in enumerate(split_tiles(image, TILE)):
            Image.fromarray(tile).save(tiles_dir / f"{path.stem}-{i}.png")
    return tiles_dir, held_paths


def smallest_within(
    image: np.ndarray, fmt: str, budget: int, keep: list | None = None
) -> dict[str, Any]:
    """The best quality of ``fmt`` whose file fits in ``budget`` bytes (else the smallest)."""

    def encode(q: int) -> bytes:
        buf = io.BytesIO()
        if fmt == "JPEG":
            Image.fromarray(image).save(buf, format="JPEG", quality=q, optimize=True)
        else:
            Image.fromarray(image).save(buf, format="WEBP", quality=q, method=6)
        return buf.getvalue()

    lo, hi = (1, 95) if fmt == "JPEG" else (0, 100)
    best = None
    while lo <= hi:  # file size grows with quality (near enough: we keep the best that fits)
        q = (lo + hi) // 2
        data = encode(q)
        if len(data) <= budget:
            best, lo = (q, data), q + 1
        else:
            hi = q - 1
    over = best is None
    q, data = best if best is not None else (1 if fmt == "JPEG" else 0, b"")
    if over:
        data = encode(q)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    if keep is not None:
        keep.append(decoded)
    return {
        "quality": q,
        "bytes": len(data),
        "over": over,
        "psnr": psnr(image, decoded),
        "ssim": ssim(image, decoded),
    }


def measure(name: str, tiles: Path, held: list[Path], out: Path, steps: int) -> dict[str, Any]:
    run = out / "runs" / name
    if run.exists():
        shutil.rmtree(run)
    cfg = TrainConfig(
        family="vae.vqvae", data=str(tiles), resolution=TILE, batch_size=32, steps=steps,
        seed=SEED, sample_every=steps, checkpoint_every=steps, checkpoint_minutes=1e6,
        log_every=max(1, steps // 10), samples=16, device="cpu", model=CONFIGS[name],
    )  # fmt: skip
    t0 = time.perf_counter()
    trained = run_sync(train_job(run, CancelToken(), cfg))
    if not trained.ok:
        raise SystemExit(f"{name}: {trained.error}\n{trained.details}")
    train_s = time.perf_counter() - t0
    model = load_run_model(run, "cpu")
    t0 = time.perf_counter()
    table, source = run_sync(measure_table(run, model, weights_digest(model))).result
    measure_s = time.perf_counter() - t0
    rows = []
    t0 = time.perf_counter()
    for path in held:
        image = np.asarray(Image.open(path).convert("RGB"))
        report = run_sync(compress_job(run, image, model=model, table=(table, source))).result
        ideal = table.bits(_codes(model, image)) / 8
        rows.append(
            {
                "image": path.name,
                "svq": {
                    "bytes": report.file_bytes,
                    "payload_ideal_bytes": ideal,
                    "psnr": report.psnr,
                    "ssim": report.ssim,
                },
                "jpeg": smallest_within(image, "JPEG", report.file_bytes),
                "webp": smallest_within(image, "WEBP", report.file_bytes),
            }
        )
    compare_s = time.perf_counter() - t0
    result = {
        "config": name,
        "model": CONFIGS[name],
        "steps": steps,
        "train_s": train_s,
        "measure_s": measure_s,
        "compare_s": compare_s,
        "table": source,
        "images": rows,
    }
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(summary(result), flush=True)
    return result


def _codes(model: Any, image: np.ndarray) -> np.ndarray:
    import torch

    tiles = split_tiles(image, TILE)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 127.5 - 1
    return model.encode_codes(x).numpy().ravel()


def summary(result: dict[str, Any]) -> str:
    rows = result["images"]
    pixels = 48 * 48
    lines = [
        f"{result['config']} {result['model']}: {result['steps']} steps, "
        f"train {result['train_s'] / 60:.1f} min; {len(rows)} held-out icons"
    ]
    for codec in ("svq", "jpeg", "webp"):
        b = np.mean([r[codec]["bytes"] for r in rows])
        p = np.mean([r[codec]["psnr"] for r in rows])
        s = np.mean([r[codec]["ssim"] for r in rows])
        over = sum(r[codec].get("over", False) for r in rows)
        lines.append(f"| {codec} | {b * 8 / pixels:.3f} | {b:.0f} | {p:.2f} | {s:.3f} | {over} |")
    return "\n".join(lines)


def figure(out: Path, names: list[str], held: list[Path], path: Path, n: int = 6) -> None:
    """A sheet, one row per held-out icon: the original, each run's decoding, then WebP and
    JPEG at the first run's file size; 3x enlarged, nearest neighbour."""
    rows = []
    for icon in held[:n]:
        image = np.asarray(Image.open(icon).convert("RGB"))
        cells = [image]
        budget = 0
        for name in names:
            run = out / "runs" / name
            model = load_run_model(run, "cpu")
            report = run_sync(compress_job(run, image, model=model)).result
            budget = budget or report.file_bytes
            cells.append(report.decoded)
        for fmt in ("WEBP", "JPEG"):
            keep: list = []
            smallest_within(image, fmt, budget, keep)
            cells.append(keep[0])
        gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([c for cell in cells for c in (cell, gap)][:-1], axis=1))
    sheet = np.concatenate(rows, axis=0)
    Image.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), Image.NEAREST).save(
        path
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument(
        "--figure", type=Path, help="only draw the sheet of examples from the runs in --out"
    )
    args = parser.parse_args()
    if args.figure:
        held = sorted((args.out / "heldout").glob("*.png"))
        figure(args.out, args.configs, held, args.figure)
        return
    from machine_info import describe

    print(describe(), flush=True)
    tiles, held = build(args.out)
    print(f"{len(list(tiles.iterdir()))} training tiles, {len(held)} held-out icons", flush=True)
    for name in args.configs:
        measure(name, tiles, held, args.out, args.steps)


if __name__ == "__main__":
    main()
