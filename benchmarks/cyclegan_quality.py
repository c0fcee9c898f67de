"""CycleGAN on a small unpaired set: Frechet distance per direction after a fixed budget.

Folder A holds images of the built-in demo dataset; folder B holds *other* demo images passed
through a Pillow duotone (grey levels mapped from dark blue to gold: ``ImageOps.colorize``), a
filter the model is never told about. Nothing pairs A with B. After training through the real
trainer (``train_job``), fixed held-out images of each folder are translated and compared, in
the feature space of the studio's extractor for this dataset (the one ``benchmarks/quality.py``
uses; it never saw the held-out images), with held-out real images of the other folder:

- FD(A->B): translations of held-out A images against held-out B images; the baseline is the
  untranslated A images against the same B images (what "do nothing" scores);
- FD(B->A): the same the other way;
- the filter L1: since B is a known filter of A, G_AB(a) can also be compared with filter(a)
  pixel by pixel (mean absolute error in [0, 1] units), against the baseline |a - filter(a)|.

Run: ``nice -n 10 python benchmarks/cyclegan_quality.py --steps 200 --threads 1``; it prints a
Markdown block for docs/quality.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine_info import cpu_name  # noqa: E402 - a sibling script's module
from PIL import Image, ImageOps

from studio.core.jobs import CancelToken, run_sync
from studio.core.paths import cache_dir
from studio.engine.data import split_holdout
from studio.engine.demo import ensure_demo_dataset
from studio.engine.device import cpu_generator
from studio.engine.metrics import frechet_distance, get_feature_extractor
from studio.engine.runs import TrainConfig
from studio.engine.sample import load_run_model
from studio.engine.train import prepare_dataset, train_job

RESOLUTION = 32
SEED = 0
HOLDOUT = 0.1  # the split benchmarks/quality.py makes (and the extractor leaves out)


def duotone(image: np.ndarray) -> np.ndarray:
    grey = ImageOps.grayscale(Image.fromarray(image))
    return np.asarray(ImageOps.colorize(grey, black="#1a1a66", white="#ffcc33"), dtype=np.uint8)


def _write(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:05d}.png")


def _floats(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def _translate(model, images: np.ndarray, direction: str) -> np.ndarray:
    out = []
    with torch.no_grad():
        for chunk in _floats(images).split(64):
            y = model.sample(len(chunk), cpu_generator(0), image=chunk, direction=direction)
            out.append(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--images", type=int, default=600, help="training images per folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data_path = run_sync(ensure_demo_dataset()).result
    dataset = run_sync(prepare_dataset(str(data_path), RESOLUTION, cache_dir())).result
    train_idx, held_idx = split_holdout(len(dataset), HOLDOUT, SEED)
    extractor = run_sync(
        get_feature_extractor(
            dataset, RESOLUTION, cache_dir(), exclude=held_idx, steps=600, seed=SEED,
            device=args.device,
        )
    ).result  # fmt: skip
    n = min(args.images, len(train_idx) // 2)
    a_train = dataset.images[train_idx[0 : 2 * n : 2]]
    b_train = np.stack([duotone(x) for x in dataset.images[train_idx[1 : 2 * n : 2]]])
    half = len(held_idx) // 2
    a_held = dataset.images[held_idx[:half]]
    b_source = dataset.images[held_idx[half : 2 * half]]
    b_held = np.stack([duotone(x) for x in b_source])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write(root / "a", a_train)
        _write(root / "b", b_train)
        config = TrainConfig(
            family="i2i.cyclegan", data=str(root / "a"), data_b=str(root / "b"),
            resolution=RESOLUTION, batch_size=args.batch_size, steps=args.steps, seed=SEED,
            sample_every=10**6, checkpoint_every=10**6, log_every=max(1, args.steps // 10),
            holdout_fraction=0.0, device=args.device, flip=True,
            model={"width": args.width, "blocks": args.blocks},
        )  # fmt: skip
        t0 = time.perf_counter()
        out = run_sync(train_job(root / "run", CancelToken(), config))
        if not out.ok:
            print(f"training failed: {out.error}\n{out.details}", file=sys.stderr)
            return 1
        train_s = time.perf_counter() - t0
        model = load_run_model(root / "run", "cpu")
        model.eval()
        a2b = _translate(model, a_held, "a2b")
        b2a = _translate(model, b_held, "b2a")
        metrics = out.result.metrics
    fa, fb = extractor.features(a_held), extractor.features(b_held)
    fd = {
        "a2b": frechet_distance(extractor.features(a2b), fb),
        "a2b_baseline": frechet_distance(fa, fb),
        "b2a": frechet_distance(extractor.features(b2a), fa),
        "b2a_baseline": frechet_distance(fb, fa),
    }
    target = np.stack([duotone(x) for x in a_held]).astype(np.float64)
    l1 = float(np.abs(a2b.astype(np.float64) - target).mean() / 255)
    l1_base = float(np.abs(a_held.astype(np.float64) - target).mean() / 255)
    total = (time.perf_counter() - started) / 60
    print(
        f"""
## CycleGAN: unpaired translation, FD per direction

Generated by `benchmarks/cyclegan_quality.py --steps {args.steps} --threads {args.threads}` on
{time.strftime("%Y-%m-%d %H:%M")} ({cpu_name()}, {args.threads}
torch thread, device {args.device}; a shared 2-core machine under load: times are slow).

- Data: the demo dataset at {RESOLUTION} px. Folder A: {n} training images as they are; folder
  B: {n} *other* training images through a Pillow duotone (grey levels from dark blue to gold),
  a filter the model is never told about; nothing pairs them. Held out: {half} images per
  folder from the split `benchmarks/quality.py` makes (the extractor never saw them).
- Model: `i2i.cyclegan` width {args.width}, {args.blocks} residual blocks, batch
  {args.batch_size}, {args.steps} steps, defaults otherwise (cycle 10, identity 5, pool 50, the
  learning rate decaying over the second half). Training took {train_s / 60:.1f} min.
- Final losses: {", ".join(f"{k} {v:.3g}" for k, v in sorted(metrics.items()) if k.startswith("loss"))}.

| Direction | FD of the translations ↓ | FD without translating (baseline) |
|---|---|---|
| A -> B (to duotone) | {fd["a2b"]:.2f} | {fd["a2b_baseline"]:.2f} |
| B -> A (from duotone) | {fd["b2a"]:.2f} | {fd["b2a_baseline"]:.2f} |

A -> B can also be checked against the filter itself: mean |G_AB(a) - duotone(a)| is
{l1:.3f} (in [0, 1] units) against {l1_base:.3f} for the untranslated image. FD here is on
{half} images per side in the extractor's feature space (trained on the colour demo classes):
compare rows, not with published FIDs. Total {total:.1f} min.
"""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
