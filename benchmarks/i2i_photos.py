"""Pix2Pix and CycleGAN on crops of real photographs (issue 18's benchmarks).

The photographs: the real colour photographs scikit-image ships in its wheel, read without
installing it (``--photos`` takes the wheel file or a folder), cut into square crops by
``benchmarks/small_folder.py``'s code: training crops from each photo's training region,
held-out crops from its held-out band (no held-out crop shares a pixel with a training crop).

``pix2pix``: pairs (A, B) with B the crop and A made from it: ``edges`` (a pencil-like sketch:
the inverted edge map of the grey image) or ``posterise`` (2 bits per channel). Trains
``i2i.pix2pix`` on the pairs and scores the held-out translations A -> B by L1, PSNR and SSIM
against B, beside two trivial baselines: A itself, and the mean training image B.

``cyclegan``: folder A holds crops as they are, folder B *other* crops through a filter the
model is never told about (a warm colour grade, then posterised to 2 bits per channel);
nothing pairs them. Scores FD per direction in the feature space of an extractor fitted on the
training crops, beside the FD of the untranslated images, and A -> B against the filter itself.

Writes ``results.json`` (one row per task, appended) and a sheet per task under ``--out``
(``--sheets`` copies them). Run it by hand; the tests never do::

    python benchmarks/i2i_photos.py pix2pix --photos /tmp/wheels/scikit_image-*.whl --steps 300
    python benchmarks/i2i_photos.py cyclegan --photos /tmp/wheels/scikit_image-*.whl --steps 300
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
from PIL import Image, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))  # small_folder.py, quality.py
import quality  # noqa: E402
import small_folder  # noqa: E402 - the photo crops

from studio.core.atomic import write_json  # noqa: E402
from studio.core.imaging import make_grid  # noqa: E402
from studio.core.jobs import CancelToken, run_sync  # noqa: E402
from studio.core.paths import cache_dir  # noqa: E402
from studio.engine.device import cpu_generator  # noqa: E402
from studio.engine.metrics import (  # noqa: E402
    frechet_distance,
    get_feature_extractor,
    paired_scores,  # noqa: E402
)
from studio.engine.runs import TrainConfig  # noqa: E402
from studio.engine.sample import load_run_model  # noqa: E402
from studio.engine.train import prepare_dataset, save_png, train_job  # noqa: E402
from studio.models.base import A2B, B2A, images_to_uint8  # noqa: E402

SEED = 0


def edges(image: np.ndarray) -> np.ndarray:
    """A sketch of ``image``: dark edges on white (the grey image's edge map, inverted)."""
    grey = ImageOps.grayscale(Image.fromarray(image))
    line = ImageOps.autocontrast(grey.filter(ImageFilter.FIND_EDGES), cutoff=1)
    return np.asarray(ImageOps.invert(line).convert("RGB"), dtype=np.uint8)


def posterise(image: np.ndarray, bits: int = 2) -> np.ndarray:
    return np.asarray(ImageOps.posterize(Image.fromarray(image), bits), dtype=np.uint8)


def graded(image: np.ndarray) -> np.ndarray:
    """CycleGAN's hidden filter: a warm colour grade (reds up, blues down, lifted blacks),
    then posterised to 2 bits per channel."""
    x = image.astype(np.float32)
    x = x * np.array([1.15, 1.0, 0.75], np.float32) + np.array([20, 8, 0], np.float32)
    return posterise(np.clip(x, 0, 255).astype(np.uint8), 2)


MAKE_A = {"edges": edges, "posterise": posterise}


def _write(folder: Path, images: np.ndarray) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        (folder / f"{i:05d}.png").write_bytes(small_folder._png(img))


def _translate(model: Any, images: np.ndarray, direction: str | None = None) -> np.ndarray:
    out = []
    extra = {} if direction is None else {"direction": direction}
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        for chunk in x.split(32):
            y = model.sample(len(chunk), cpu_generator(SEED), image=chunk, **extra)
            out.append(images_to_uint8(y.float().cpu()).numpy())
    return np.concatenate(out)


def _crops(photos: dict[str, np.ndarray], n: int, held: bool, seed: int, res: int) -> np.ndarray:
    crops = small_folder.draw_crops(photos, n, held=held, seed=seed)
    return np.stack([small_folder.render_crop(photos, c, res) for c in crops])


def _train(run: Path, cfg: TrainConfig, name: str) -> tuple[Any, float, dict[str, float]]:
    if run.exists():
        shutil.rmtree(run)
    token = CancelToken()
    t0 = time.perf_counter()
    out = run_sync(train_job(run, token, cfg), token, quality._printer(name))
    if not out.ok:
        raise SystemExit(f"{name}: training failed: {out.error}\n{out.details or ''}")
    model = load_run_model(run, cfg.device)
    model.eval()
    return model, time.perf_counter() - t0, dict(out.result.metrics)


def run_pix2pix(args: argparse.Namespace, photos: dict[str, np.ndarray]) -> dict[str, Any]:
    res, make_a = args.resolution, MAKE_A[args.a]
    b_train = _crops(photos, args.train, False, SEED, res)
    b_held = _crops(photos, args.heldout, True, SEED + 1, res)
    a_train = np.stack([make_a(x) for x in b_train])
    a_held = np.stack([make_a(x) for x in b_held])
    root = args.out / f"pix2pix-{args.a}-{res}"
    _write(root / "a", a_train)
    _write(root / "b", b_train)
    model_settings = {"width": args.width, "d_layers": 2}
    cfg = TrainConfig(
        family="i2i.pix2pix", data=str(root / "a"), data_b=str(root / "b"), resolution=res,
        batch_size=args.batch_size, steps=args.steps, seed=SEED, sample_every=10**6,
        checkpoint_every=args.steps, checkpoint_minutes=1e6,
        log_every=max(1, args.steps // 10), holdout_fraction=0.0, device=args.device,
        model=model_settings,
    )  # fmt: skip
    model, train_s, losses = _train(root / "run", cfg, f"pix2pix-{args.a}")
    out = _translate(model, a_held)
    mean = np.broadcast_to(b_train.mean(0).round().astype(np.uint8), b_held.shape)
    rows = np.stack([a_held[:8], out[:8], b_held[:8]], 1).reshape(-1, *out.shape[1:])
    sheet = args.out / f"pix2pix-photos-{args.a}-{res}.png"
    save_png(sheet, make_grid(rows, nrow=3))
    return {
        "task": "pix2pix",
        "a": args.a,
        "model": model_settings,
        "train_s": train_s,
        "losses": losses,
        "scores": paired_scores(out, b_held),
        "baseline_a_itself": paired_scores(a_held, b_held),
        "baseline_mean_image": paired_scores(np.ascontiguousarray(mean), b_held),
        "sheet": str(sheet),
    }


def run_cyclegan(args: argparse.Namespace, photos: dict[str, np.ndarray]) -> dict[str, Any]:
    res = args.resolution
    train = _crops(photos, 2 * args.train, False, SEED, res)
    held = _crops(photos, 2 * args.heldout, True, SEED + 1, res)
    a_train, b_train = train[0::2], np.stack([graded(x) for x in train[1::2]])
    a_held, b_source = held[0::2], held[1::2]
    b_held = np.stack([graded(x) for x in b_source])
    root = args.out / f"cyclegan-{res}"
    _write(root / "a", a_train)
    _write(root / "b", b_train)
    _write(root / "features", train)  # the extractor's images: every training crop, ungraded
    data = run_sync(prepare_dataset(str(root / "features"), res, cache_dir())).result
    extractor = run_sync(
        get_feature_extractor(
            data, res, cache_dir(), steps=args.extractor_steps, seed=SEED, device=args.device
        ),
        None,
        quality._printer("features"),
    ).result
    model_settings = {"width": args.width, "blocks": args.blocks}
    cfg = TrainConfig(
        family="i2i.cyclegan", data=str(root / "a"), data_b=str(root / "b"), resolution=res,
        batch_size=args.batch_size, steps=args.steps, seed=SEED, sample_every=10**6,
        checkpoint_every=args.steps, checkpoint_minutes=1e6,
        log_every=max(1, args.steps // 10), holdout_fraction=0.0, device=args.device,
        flip=True, model=model_settings,
    )  # fmt: skip
    model, train_s, losses = _train(root / "run", cfg, "cyclegan")
    a2b = _translate(model, a_held, A2B)
    b2a = _translate(model, b_held, B2A)
    fa, fb = extractor.features(a_held), extractor.features(b_held)
    true_b = np.stack([graded(x) for x in a_held])
    rows = np.stack([a_held[:8], a2b[:8], true_b[:8], b_held[:8], b2a[:8], b_source[:8]], 1)
    sheet = args.out / f"cyclegan-photos-{res}.png"
    save_png(sheet, make_grid(rows.reshape(-1, *a2b.shape[1:]), nrow=6))
    return {
        "task": "cyclegan",
        "model": model_settings,
        "train_s": train_s,
        "losses": losses,
        "extractor": extractor.describe(),
        "fd_a2b": frechet_distance(extractor.features(a2b), fb),
        "fd_a2b_untranslated": frechet_distance(fa, fb),
        "fd_b2a": frechet_distance(extractor.features(b2a), fa),
        "fd_b2a_untranslated": frechet_distance(fb, fa),
        "a2b_vs_filter": paired_scores(a2b, true_b),
        "untranslated_vs_filter": paired_scores(a_held, true_b),
        "b2a_vs_source": paired_scores(b2a, b_source),
        "untranslated_vs_source": paired_scores(b_held, b_source),
        "sheet": str(sheet),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=("pix2pix", "cyclegan"))
    ap.add_argument("--photos", type=Path, required=True, help="scikit-image wheel or folder")
    ap.add_argument("--a", choices=tuple(MAKE_A), default="edges", help="pix2pix's input")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--train", type=int, default=1000, help="training crops (per folder)")
    ap.add_argument("--heldout", type=int, default=64, help="held-out crops (per folder)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=3, help="CycleGAN's residual blocks")
    ap.add_argument("--extractor-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("/tmp/i2i_photos"))
    ap.add_argument("--sheets", type=Path, default=None, help="also copy the sheets here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos = small_folder.read_photos(args.photos)
    started = time.perf_counter()
    run = run_pix2pix if args.task == "pix2pix" else run_cyclegan
    row = run(args, photos)
    row["meta"] = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": quality.machine(),
        "photos": sorted(photos),
        "resolution": args.resolution,
        "train": args.train,
        "heldout": args.heldout,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "total_s": time.perf_counter() - started,
    }
    if args.sheets:
        args.sheets.mkdir(parents=True, exist_ok=True)
        shutil.copy(row["sheet"], args.sheets / Path(row["sheet"]).name)
    results = args.out / "results.json"
    rows = json.loads(results.read_text())["rows"] if results.is_file() else []
    write_json(results, {"rows": [*rows, row]})
    print(json.dumps(row, indent=1, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
