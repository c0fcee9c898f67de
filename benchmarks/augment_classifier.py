"""Does ``studio augment`` help a classifier on a rare class? Measured, whichever way it comes out.

The folder: the built-in demo shapes (6 classes) at 32 px. A balanced test set is put aside
first (``--test-per-class`` images of every class, never seen by any model here); of the rest,
one class (``--rare``) keeps only ``--rare-count`` images. A class-conditional run (``--family``,
the conditional VAE by default) trains on that folder through the engine's ``train_job``; the
augment engine (``augment_job``, ``--fill``, the memorisation-distance filter at its default)
then fills every class up to the largest. A small CNN classifier (pure torch, seeded, no
augmentation of its own) is trained on

- *original*: the rare-class folder as it is;
- *+ generated*: the folder plus the export;
- *+ flips/crops*: the folder plus as many rare-class images as the export made, each a copy
  of a random real rare image, mirrored half the time and shifted by up to 4 px (the plain
  oversampling baseline);

and we report its accuracy on the test set, overall and on the rare class, as the mean (and
spread) over ``--seeds`` classifier seeds.

    python benchmarks/augment_classifier.py --out /tmp/augbench   # ~16 min on 2 busy cores
    python benchmarks/augment_classifier.py --out /tmp/augbench --reuse --epochs 30  # ~14 min
    python benchmarks/augment_classifier.py --out /tmp/smoke --steps 30 --epochs 1 --seeds 1

``--reuse`` trains the classifiers again on the folders and export the first call left in
``--out``. Results: docs/augmentation.md.

Run by hand; the tests only check the folder builder (tests/test_augment_benchmark.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import describe  # noqa: E402

from studio.core.atomic import write_json, write_text  # noqa: E402
from studio.core.errors import StudioError  # noqa: E402
from studio.core.jobs import CancelToken, run_sync  # noqa: E402
from studio.engine.augment import augment_job  # noqa: E402
from studio.engine.data import IMAGE_EXTENSIONS, load_dataset, scan_folder  # noqa: E402
from studio.engine.demo import make_demo_dataset  # noqa: E402
from studio.engine.runs import TrainConfig  # noqa: E402
from studio.engine.train import train_job  # noqa: E402

RESOLUTION = 32
SEED = 0
MARKER = ".augment-benchmark"  # marks --out as this script's own, so a rerun may clear it
FAMILIES: dict[str, dict[str, Any]] = {
    "vae.cvae": {"kl_warmup_steps": 0},
    "gan.cgan": {},
}


# -- the folder ---------------------------------------------------------------------------------


def build_rare_folder(
    source: Path,
    train_dir: Path,
    test_dir: Path,
    *,
    rare: str,
    rare_count: int,
    test_per_class: int,
    seed: int = SEED,
) -> dict[str, dict[str, int]]:
    """Copy a class-folder collection (``source/<class>/<image>``) into a test folder of
    ``test_per_class`` images per class and a training folder of the rest, with class
    ``rare`` cut to ``rare_count`` images. Which images go where depends only on ``seed``.
    Both folders must be new or empty; nothing in ``source`` is changed. Returns
    ``{"train": {class: n}, "test": {class: n}}``."""
    if rare_count < 1 or test_per_class < 1:
        raise StudioError("The rare class and the test set need at least one image each.")
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.is_symlink())
    if rare not in classes:
        raise StudioError(f"{source} has no class folder {rare!r} (classes: {classes}).")
    if len(classes) < 2:
        raise StudioError(f"{source} needs two or more class folders.")
    for folder in (train_dir, test_dir):
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise StudioError(f"{folder} is not a new or empty folder; nothing was copied.")
    rng = np.random.default_rng(seed)
    plan: dict[str, tuple[list[Path], list[Path]]] = {}
    for cls in classes:
        files = sorted(
            p
            for p in (source / cls).iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.is_symlink()
        )
        need = test_per_class + (rare_count if cls == rare else 1)
        if len(files) < need:
            raise StudioError(
                f"Class {cls!r} has {len(files)} images; the split needs at least {need}."
            )
        order = [files[i] for i in rng.permutation(len(files))]
        train = order[test_per_class:]
        plan[cls] = (order[:test_per_class], train[:rare_count] if cls == rare else train)
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for cls, (test, train) in plan.items():
        for name, folder, files in (("test", test_dir, test), ("train", train_dir, train)):
            (folder / cls).mkdir(parents=True, exist_ok=True)
            for path in files:
                shutil.copyfile(path, folder / cls / path.name)
            counts[name][cls] = len(files)
    return counts


def read_folder(folder: Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x R x R x 3 images, labels as indices into ``class_names``) of a class-folder
    collection, read with the engine's scanner and decoder."""
    scan = run_sync(scan_folder(folder))
    if not scan.ok:
        raise StudioError(scan.error or f"could not scan {folder}")
    data = run_sync(load_dataset(scan.result, RESOLUTION))
    if not data.ok:
        raise StudioError(data.error or f"could not read {folder}")
    ds = data.result
    if ds.labels is None:
        raise StudioError(f"{folder}: every image must be in a class folder.")
    unknown = set(ds.class_names) - set(class_names)
    if unknown:
        raise StudioError(f"{folder} has classes the training folder does not: {unknown}.")
    labels = np.array([class_names.index(ds.class_names[int(i)]) for i in ds.labels])
    return ds.images, labels


def flips_and_crops(images: np.ndarray, count: int, seed: int, shift: int = 4) -> np.ndarray:
    """``count`` copies of random ``images``, each mirrored half the time and shifted by up to
    ``shift`` px (edge pixels repeated): the plain oversampling baseline."""
    rng = np.random.default_rng(seed)
    n, size = len(images), images.shape[1]
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    out = np.empty((count, *images.shape[1:]), dtype=np.uint8)
    for k in range(count):
        y, x = rng.integers(0, 2 * shift + 1, size=2)
        img = padded[rng.integers(n), y : y + size, x : x + size]
        out[k] = img[:, ::-1] if rng.random() < 0.5 else img
    return out


def contact_sheet(images: np.ndarray, cols: int = 16, gap: int = 2) -> np.ndarray:
    """The images side by side, ``cols`` to a row, on white: to look at what was trained on."""
    n, size = len(images), images.shape[1]
    rows = max(1, -(-n // cols))
    step = size + gap
    sheet = np.full((rows * step + gap, cols * step + gap, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        y, x = gap + (i // cols) * step, gap + (i % cols) * step
        sheet[y : y + size, x : x + size] = img
    return sheet


# -- the classifier -----------------------------------------------------------------------------


def _classifier(classes: int) -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(3, 16), *block(16, 32), *block(32, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )  # fmt: skip


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_and_test(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: int,
    seed: int,
    epochs: int,
    batch: int = 64,
) -> np.ndarray:
    """Train the small CNN (Adam 1e-3, plain cross-entropy) on ``train``; return its
    predictions for ``test``'s images."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _classifier(classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = _tensor(train[0]), torch.from_numpy(train[1]).long()
    net.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return net(_tensor(test[0])).argmax(1).numpy()


# -- the measurement ----------------------------------------------------------------------------


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise StudioError(f"{out} is not empty and not this benchmark's; give a new folder.")
        for name in ("shapes", "train", "test", "run", "generated"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / MARKER, "augment_classifier.py output\n")


def generate(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Build the folders, train the conditional run and fill its classes up with the augment
    engine: ``{"folder": counts, "train_s": seconds, "augment": what the export did}``."""
    demo = run_sync(make_demo_dataset(out / "shapes", count=6 * args.per_class, size=RESOLUTION))
    if not demo.ok:
        raise SystemExit(demo.error)
    counts = build_rare_folder(
        out / "shapes", out / "train", out / "test", rare=args.rare,
        rare_count=args.rare_count, test_per_class=args.test_per_class,
    )  # fmt: skip
    print("folder:", json.dumps(counts), flush=True)

    cfg = TrainConfig(
        family=args.family, data=str(out / "train"), resolution=RESOLUTION, batch_size=32,
        steps=args.steps, seed=SEED, sample_every=args.steps, checkpoint_every=args.steps,
        checkpoint_minutes=1e6, log_every=max(1, args.steps // 10), samples=36, device="cpu",
        model=FAMILIES[args.family],
    )  # fmt: skip
    t0 = time.perf_counter()
    trained = run_sync(train_job(out / "run", CancelToken(), cfg))
    if not trained.ok:
        raise SystemExit(f"training failed: {trained.error}\n{trained.details or ''}")
    train_s = time.perf_counter() - t0
    print(f"trained {args.family} for {args.steps} steps in {train_s:.0f} s", flush=True)

    t0 = time.perf_counter()
    exported = run_sync(augment_job(out / "run", out / "generated", fill=True, seed=SEED))
    if not exported.ok:
        raise SystemExit(f"augment failed: {exported.error}\n{exported.details or ''}")
    report = exported.result
    print(
        f"augment: made {report.made}, drawn {report.drawn}, dropped {report.dropped}, "
        f"min distance {report.min_distance:.4f} ({report.distance_source})",
        flush=True,
    )
    augment = {
        "made": report.made, "drawn": report.drawn, "dropped": report.dropped,
        "min_distance": report.min_distance, "source": report.distance_source,
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    return {"folder": counts, "train_s": train_s, "augment": augment}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--family", default="vae.cvae", choices=sorted(FAMILIES))
    parser.add_argument("--steps", type=int, default=500, help="generative run's steps")
    parser.add_argument("--per-class", type=int, default=200, help="demo images per class")
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--rare", default="triangle")
    parser.add_argument("--rare-count", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=10, help="classifier epochs")
    parser.add_argument("--seeds", type=int, default=3, help="classifier seeds")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="classify again with an earlier finished call's folders, run and export in --out "
        "(only --epochs and --seeds then apply)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: Path = args.out
    t_all = time.perf_counter()
    if args.reuse:
        try:
            earlier = json.loads((out / "results.json").read_text(encoding="utf-8"))
            made_by = {"folder": earlier["folder"], "train_s": earlier["train_s"]}
            made_by["augment"] = earlier["augment"]
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(f"--reuse needs a finished earlier run in {out}: {err}") from None
        for key in ("family", "steps", "per_class", "test_per_class", "rare", "rare_count"):
            setattr(args, key, type(getattr(args, key))(earlier["args"][key]))
    else:
        _prepare_out(out)
        made_by = generate(out, args)
    counts, aug = made_by["folder"], made_by["augment"]

    class_names = sorted(counts["train"])
    rare = class_names.index(args.rare)
    original = read_folder(out / "train", class_names)
    test = read_folder(out / "test", class_names)
    made = sum(aug["made"].values())
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {"original": original}
    if made:
        gen = read_folder(out / "generated", class_names)
        sets["+ generated"] = (
            np.concatenate([original[0], gen[0]]),
            np.concatenate([original[1], gen[1]]),
        )
    extra = flips_and_crops(original[0][original[1] == rare], aug["made"].get(args.rare, 0), SEED)
    if len(extra):
        sets["+ flips/crops"] = (
            np.concatenate([original[0], extra]),
            np.concatenate([original[1], np.full(len(extra), rare)]),
        )

    from PIL import Image

    for name, data in sets.items():  # what each training set adds to the rare class, to look at
        shown = data[0][data[1] == rare][:64]
        Image.fromarray(contact_sheet(shown)).save(
            out / f"rare-{name.strip('+ ').split('/')[0]}.png"
        )

    rows = []
    for name, data in sets.items():
        overall, on_rare = [], []
        for seed in range(args.seeds):
            pred = train_and_test(data, test, len(class_names), seed, args.epochs)
            overall.append(float((pred == test[1]).mean()))
            on_rare.append(float((pred[test[1] == rare] == rare).mean()))
        row = {"train_set": name, "images": len(data[1]), "overall": overall, "rare": on_rare}
        rows.append(row)
        print(json.dumps(row), flush=True)

    result = {
        "machine": describe(),
        "args": {k: str(v) for k, v in vars(args).items()},
        **made_by,
        "rows": rows,
        "total_s": time.perf_counter() - t_all,
    }
    write_json(out / "results.json", result)
    text = markdown(result, args)
    write_text(out / "augment_classifier.md", text)
    print(text)


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    aug = result["augment"]
    train = result["folder"]["train"]
    lines = [
        f"Generated by `benchmarks/augment_classifier.py --family {args.family} --steps "
        f"{args.steps} --epochs {args.epochs} --seeds {args.seeds}`; machine: {result['machine']}.",
        "",
        f"- Folder: demo shapes at {RESOLUTION} px; training images per class "
        + ", ".join(f"{c} {n}" for c, n in train.items())
        + f"; test set {args.test_per_class} per class, never seen by any model.",
        f"- Generative run: {args.family}, {args.steps} steps at batch 32 on the training folder "
        f"({result['train_s'] / 60:.1f} min).",
        f"- Export: `--fill`, distance filter at its default ({aug['min_distance']:.4f}, "
        f"{aug['source']}): made {sum(aug['made'].values())} of "
        f"{sum(aug['drawn'].values())} drawn, dropped {aug['dropped']} "
        f"({aug['seconds']:.0f} s).",
        f"- Classifier: 3-layer CNN, Adam 1e-3, {args.epochs} epochs at batch 64, no "
        f"augmentation of its own; mean ± standard deviation over {args.seeds} seeds.",
        "",
        f"| Training set | Images | Test accuracy, all classes | Test accuracy, {args.rare} |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        o, r = np.array(row["overall"]), np.array(row["rare"])
        lines.append(
            f"| {row['train_set']} | {row['images']} | {o.mean():.1%} ± {o.std():.1%} "
            f"| {r.mean():.1%} ± {r.std():.1%} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        main()
    except StudioError as err:
        raise SystemExit(f"error: {err}") from None
