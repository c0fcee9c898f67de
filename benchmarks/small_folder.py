"""GANs on small folders of real photographs: does augmentation help, does StyleGAN beat
DCGAN, does progressive growing pay? (issue 17's benchmark).

The collection: 32 x 32 crops of real colour photographs that scikit-image ships in its
wheel (``skimage/data``: astronaut, chelsea, coffee, rocket, motorcycle_left,
hubble_deep_field). Nothing is installed: ``--photos`` takes the wheel file itself (read as a
zip) or a folder of photographs. Get the wheel once, offline afterwards::

    pip download --no-deps --only-binary=:all: scikit-image -d /tmp/wheels

Each photograph is split into a training region and a held-out vertical band (a quarter of
its width, at a position that changes from photo to photo). Training crops come only from
training regions and held-out crops only from held-out bands, so no held-out crop shares a
pixel with a training crop. Crops are square, of a random side (a share of the photograph's
shorter side), mirrored half the time, resized to 32 px; everything is seeded. The training
folders are nested: ``train-100`` is the first 100 crops of ``train-2000``.

Then each grid row (family x folder size x variant) trains through the real ``train_job`` at
the same step budget and is scored with ``benchmarks/quality.py``'s machinery: FD, KID,
precision and recall against the held-out crops in the feature space of one extractor (fitted
on the 2,000 training crops only, shared by every row), the memorisation share, and the mean
D(real) of the last logged training window. Writes ``results.json`` and ``small_folder.md``
under ``--out`` after every row. Run it by hand on an idle machine; the tests never do.

    python benchmarks/small_folder.py --photos /tmp/wheels/scikit_image-*.whl --build-only
    python benchmarks/small_folder.py --photos /tmp/wheels/scikit_image-*.whl \\
        --families gan.dcgan --sizes 100,500,2000 --variants adaptive,off --steps 400
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # quality.py, machine_info.py
import quality  # noqa: E402 - the sibling benchmark whose machinery this reuses

from studio.core.atomic import write_bytes, write_json, write_text  # noqa: E402
from studio.core.imaging import make_grid  # noqa: E402
from studio.core.jobs import CancelToken, run_sync  # noqa: E402
from studio.core.paths import cache_dir  # noqa: E402
from studio.engine.device import resolve_device  # noqa: E402
from studio.engine.feature_extractor import FeatureExtractor  # noqa: E402
from studio.engine.metrics import evaluate_samples, get_feature_extractor  # noqa: E402
from studio.engine.runs import RunFolder, TrainConfig  # noqa: E402
from studio.engine.sample import load_run_model, sample_job  # noqa: E402
from studio.engine.train import prepare_dataset, save_png, train_job  # noqa: E402

RESOLUTION = quality.RESOLUTION
SIZES = (100, 500, 2000)
HELDOUT = 500
SEED = 0
# Real colour photographs in scikit-image's wheel (no drawings, no microscopy, no greyscale).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
)
CROP_SHARES = (0.12, 0.18, 0.25, 0.35)  # crop side as a share of the photo's shorter side
HELD_BAND = 0.25  # the held-out band's share of each photo's width
MANIFEST = "small_folder.json"  # marks a folder as this script's: only those are rebuilt
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


# -- the collection --------------------------------------------------------------------------


def read_photos(source: Path, names: tuple[str, ...] = SKIMAGE_PHOTOS) -> dict[str, np.ndarray]:
    """``name -> uint8 H x W x 3`` for the photographs in ``source``: a wheel or zip (members
    ``*/data/<name>``) or a folder. ``names`` picks them (empty: every photo in a folder)."""
    source = Path(source)
    raw: dict[str, bytes] = {}
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            members = {Path(m).name: m for m in zf.namelist() if "/data/" in m}
            for name in names:
                if name in members:
                    raw[name] = zf.read(members[name])
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        wanted = set(names) if names else {p.name for p in files}
        raw = {p.name: p.read_bytes() for p in files if p.name in wanted and p.is_file()}
    else:
        raise SystemExit(f"{source}: neither a folder nor a wheel/zip of photographs")
    missing = [n for n in names if n not in raw]
    if missing or not raw:
        raise SystemExit(f"{source}: photographs not found: {', '.join(missing) or 'any'}")
    photos = {}
    for name in sorted(raw):
        try:
            with Image.open(io.BytesIO(raw[name])) as im:
                photos[name] = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except OSError as exc:
            raise SystemExit(f"{source}: cannot read {name}: {exc}") from exc
    return photos


@dataclass(frozen=True)
class Crop:
    photo: str
    box: tuple[int, int, int, int]  # left, top, right, bottom in the photo's pixels
    mirrored: bool


def held_band(photo_index: int, width: int) -> tuple[int, int]:
    """The held-out columns ``[x0, x1)`` of a photo: a quarter of its width, at one of four
    positions (left, centre-left, centre-right, right) by the photo's index."""
    band = max(1, round(width * HELD_BAND))
    x0 = round((width - band) * (photo_index % 4) / 3)
    return x0, x0 + band


def _regions(photos: dict[str, np.ndarray], held: bool) -> list[tuple[str, int, int, int]]:
    """(photo, x0, x1, height) of the regions crops may come from."""
    out = []
    for i, (name, img) in enumerate(sorted(photos.items())):
        h, w = img.shape[:2]
        b0, b1 = held_band(i, w)
        spans = [(b0, b1)] if held else [(0, b0), (b1, w)]
        out += [(name, x0, x1, h) for x0, x1 in spans if x1 > x0]
    return out


def draw_crops(photos: dict[str, np.ndarray], n: int, held: bool, seed: int) -> list[Crop]:
    """``n`` random square crops from the training regions (or the held-out bands), each at
    one of :data:`CROP_SHARES` of its photo's shorter side (capped to the region), mirrored
    half the time. The same ``seed`` gives the same crops."""
    rng = np.random.default_rng(seed)
    regions = _regions(photos, held)
    # Every photo equally often (a big photo would otherwise fill the folder), and within a
    # photo each region by its area.
    areas = np.array([(x1 - x0) * h for _, x0, x1, h in regions], dtype=float)
    totals: dict[str, float] = {}
    for (name, *_), area in zip(regions, areas):
        totals[name] = totals.get(name, 0.0) + area
    weights = np.array([a / totals[r[0]] for r, a in zip(regions, areas)])
    crops = []
    for _ in range(n):
        name, x0, x1, h = regions[rng.choice(len(regions), p=weights / weights.sum())]
        short = min(photos[name].shape[:2])
        side = max(8, round(short * CROP_SHARES[rng.integers(len(CROP_SHARES))]))
        side = min(side, x1 - x0, h)
        left = x0 + int(rng.integers(0, x1 - x0 - side + 1))
        top = int(rng.integers(0, h - side + 1))
        crops.append(Crop(name, (left, top, left + side, top + side), bool(rng.random() < 0.5)))
    return crops


def render_crop(photos: dict[str, np.ndarray], crop: Crop, size: int = RESOLUTION) -> np.ndarray:
    left, top, right, bottom = crop.box
    im = Image.fromarray(photos[crop.photo][top:bottom, left:right])
    im = im.resize((size, size), Image.Resampling.LANCZOS)
    out = np.asarray(im, dtype=np.uint8)
    return out[:, ::-1] if crop.mirrored else out


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def build_collection(
    photos: dict[str, np.ndarray],
    root: Path,
    sizes: tuple[int, ...] = SIZES,
    heldout: int = HELDOUT,
    seed: int = SEED,
    source: str = "",
) -> dict[str, Any]:
    """Write ``root/train-<n>`` for each size (nested: the first n crops of the largest) and
    ``root/heldout``, and ``root/small_folder.json`` (every crop's box). Refuses a ``root``
    that holds anything without that manifest: only this script's own folders are replaced."""
    root = Path(root)
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise SystemExit(f"{root}: not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / MANIFEST).is_file():
        raise SystemExit(f"{root}: not empty and not made by this script; choose another --root")
    if not sizes or min(sizes) < 1 or heldout < 2:
        raise SystemExit("sizes must be at least 1 and the held-out set at least 2 images")
    train = draw_crops(photos, max(sizes), held=False, seed=seed)
    held = draw_crops(photos, heldout, held=True, seed=seed + 1)
    folders = {f"train-{n}": train[:n] for n in sorted(set(sizes))} | {"heldout": held}
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # a half-rebuilt collection is not ours-and-done
    for folder, crops in folders.items():
        path = root / folder
        if path.is_symlink():
            raise SystemExit(f"{path}: a symlink, not this script's folder")
        if path.is_dir():
            shutil.rmtree(path)  # ours: the manifest was there
        path.mkdir()
        for i, crop in enumerate(crops):
            write_bytes(path / f"{i:05d}.png", _png(render_crop(photos, crop)))
    manifest = {
        "source": source,
        "photos": {k: list(v.shape) for k, v in sorted(photos.items())},
        "seed": seed,
        "resolution": RESOLUTION,
        "crop_shares": list(CROP_SHARES),
        "held_band": HELD_BAND,
        "folders": {
            k: [[c.photo, *c.box, int(c.mirrored)] for c in crops] for k, crops in folders.items()
        },
    }
    write_json(root / MANIFEST, manifest)
    return manifest


# -- the grid ----------------------------------------------------------------------------------


def variant_settings(variant: str, steps: int, batch: int) -> dict[str, Any]:
    """The model settings of a grid variant at this budget."""
    # ADA's default speed (p from 0 to 1 in 100k images) is for runs of millions of images;
    # here p may rise from 0 to 1 within a third of the budget. That is fast: a generator that
    # is still poor makes D look overfitted, and p can reach 1 while it is (docs/quality.md,
    # issue 17's collapse hunt; benchmarks/gan_collapse.py).
    ada_kimg = max(1, round(steps * batch / 3 / 1000))
    grow = max(1, steps // 6)  # 8 px, fade 16, 16, fade 32, then the rest at 32 px
    return {
        "off": {"augment": "off"},
        "adaptive": {"augment": "adaptive", "ada_kimg": ada_kimg},
        "fixed": {"augment": "fixed", "augment_p": 0.5},
        "progressive": {
            "augment": "adaptive",
            "ada_kimg": ada_kimg,
            "progressive": True,
            "grow_steps": grow,
        },
    }[variant]


VARIANTS = ("off", "adaptive", "fixed", "progressive")
LABELS = {"progressive": "adaptive + growing", "fixed": "fixed (p 0.5)"}


def _last_window(run: Path, name: str, share: float = 0.2) -> float | None:
    """Mean of ``name`` over the last ``share`` of the run's logged points."""
    points, _ = RunFolder(run).read_metrics()
    values = [p[name] for p in points if name in p and p.get("stage", "train") == "train"]
    if not values:
        return None
    tail = values[-max(1, round(len(values) * share)) :]
    return float(np.mean(tail))


def run_row(
    key: str,
    size: int,
    variant: str,
    args: argparse.Namespace,
    data: dict[str, Any],
    extractor: Any,
) -> dict[str, Any]:
    plan = quality.PLANS.get(key, quality.Plan())
    model = {**plan.model, **variant_settings(variant, args.steps, plan.batch_size)}
    overrides, dropped = quality._model_overrides(
        key, quality.Plan(plan.batch_size, model), args.steps
    )
    name = f"{key}-{size}-{variant}"
    row: dict[str, Any] = {
        "family": key,
        "size": size,
        "variant": variant,
        "batch_size": plan.batch_size,
        "model": overrides,
        "not_applied": dropped,
    }
    run = args.out / "runs" / name
    if RunFolder(run).exists():  # this benchmark's own earlier run: start again
        shutil.rmtree(run)
    folder = args.root / f"train-{size}"
    cfg = TrainConfig(
        family=key,
        data=str(folder),
        resolution=RESOLUTION,
        batch_size=plan.batch_size,
        steps=args.steps,
        seed=SEED,
        sample_every=args.steps,
        checkpoint_every=args.steps,
        checkpoint_minutes=1e6,
        log_every=max(1, min(25, args.steps // 10)),
        samples=8,
        holdout_fraction=0.0,  # the held-out crops live in their own folder
        device=args.device,
        model=overrides,
    )
    token = CancelToken()
    t0 = time.perf_counter()
    outcome = run_sync(
        train_job(run, token, cfg, dataset=data[size]), token, quality._printer(name)
    )
    row["train_s"] = time.perf_counter() - t0
    if not outcome.ok:
        row["error"] = outcome.error or outcome.status.value
        print(f"  [{name}] FAILED: {row['error']}\n{outcome.details or ''}", flush=True)
        return row
    row["losses"] = dict(outcome.result.metrics)
    row["d_real_end"] = _last_window(run, "d_real")
    row["augment_p_end"] = row["losses"].get("augment_p")
    model_obj = load_run_model(run, resolve_device(args.device))
    sampled = run_sync(sample_job(run, args.samples, seed=SEED, model=model_obj))
    if not sampled.ok:
        row["error"] = f"sampling: {sampled.error}"
        return row
    grid = args.out / "grids" / f"{name}.png"
    save_png(grid, make_grid(sampled.result[:64]))
    row["grid"] = str(grid)
    report = evaluate_samples(
        sampled.result, data[size].images, data["heldout"].images, extractor, seed=SEED
    )
    row["quality"] = report.to_dict()
    return row


def render_markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"Generated by `benchmarks/small_folder.py{meta['argv']}` on {meta['date']}; "
        f"{meta['steps']} steps per row, {meta['samples']} samples, {meta['heldout']} held-out "
        f"crops; extractor {meta['extractor']}.",
        "",
        "| Family | Images | Variant | FD ↓ | KID ↓ | Precision ↑ | Recall ↑ | "
        "Memorisation share | D(real) at end | p at end | Train time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['family']} | {r['size']} | {LABELS.get(r['variant'], r['variant'])} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']} | | | | | | | |")
            continue
        q = r["quality"]
        lines.append(
            f"{head} {q['fd']:.2f} | {q['kid_mean']:.3f} ± {q['kid_std']:.3f} | "
            f"{q['precision']:.2f} | {q['recall']:.2f} | {q['memorisation_share']:.2f} "
            f"(rank {q['memorisation_rank_share']:.2f}) | "
            f"{quality._num(r['d_real_end'], '.3f')} | {quality._num(r['augment_p_end'], '.2f')} "
            f"| {r['train_s'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--photos", type=Path, required=True, help="scikit-image wheel or a folder")
    ap.add_argument("--root", type=Path, default=Path("benchmarks/out/small_folder/data"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/small_folder"))
    ap.add_argument("--build-only", action="store_true", help="write the folders and stop")
    ap.add_argument("--families", default="gan.dcgan")
    ap.add_argument("--sizes", default="100,500,2000")
    ap.add_argument("--variants", default="adaptive,off", help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--extractor-steps", type=int, default=600)
    ap.add_argument(
        "--extractor",
        type=Path,
        help="a saved extractor's folder (from the cache of an earlier run): rows comparable "
        "with that run's even when the folders were rebuilt (their fingerprint changes)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    args.keys = [k.strip() for k in args.families.split(",") if k.strip()]
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variant_list if v not in VARIANTS]
    if bad or any(s not in SIZES for s in args.size_list):
        ap.error(f"variants are {', '.join(VARIANTS)}; sizes {SIZES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    photos = read_photos(args.photos)
    manifest_path = args.root / MANIFEST
    source = f"{args.photos.name}: {', '.join(sorted(photos))}"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("source") == source:
        print(f"Collection in {args.root} (kept)")
    else:
        build_collection(photos, args.root, source=source)
        print(f"Built {args.root} from {source}")
    if args.build_only:
        return 0
    data = {}
    for part in [*SIZES, "heldout"]:
        folder = args.root / (part if part == "heldout" else f"train-{part}")
        loaded = run_sync(prepare_dataset(str(folder), RESOLUTION, cache_dir()))
        if not loaded.ok:
            print(f"Cannot read {folder}: {loaded.error}", file=sys.stderr)
            return 1
        data[part] = loaded.result
    if args.extractor:
        extractor = FeatureExtractor.load(args.extractor, args.device)
        print(f"  [features] Loaded {extractor.describe()} from {args.extractor}")
    else:
        fitted = run_sync(
            get_feature_extractor(
                data[max(SIZES)],
                RESOLUTION,
                cache_dir(),
                steps=args.extractor_steps,
                seed=SEED,
                device=args.device,
            ),
            None,
            quality._printer("features"),
        )
        if not fitted.ok:
            print(f"Feature extractor failed: {fitted.error}", file=sys.stderr)
            return 1
        extractor = fitted.result
    meta = {
        "argv": "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv)),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": quality.machine(),
        "source": source,
        "steps": args.steps,
        "samples": args.samples,
        "heldout": len(data["heldout"]),
        "extractor": extractor.describe(),
    }
    results = args.out / "results.json"
    rows: list[dict[str, Any]] = []
    for key in args.keys:
        for size in args.size_list:
            for variant in args.variant_list:
                print(f"{key} {size} {variant}: {args.steps} steps", flush=True)
                rows.append(run_row(key, size, variant, args, data, extractor))
                print(f"  {json.dumps(rows[-1], default=str)}", flush=True)
                write_json(results, {"meta": meta, "rows": rows})
                write_text(args.out / "small_folder.md", render_markdown(meta, rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
