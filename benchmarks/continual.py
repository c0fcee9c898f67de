"""Forgetting after a switch of folders: no protection, generative replay, EWC, both.

The demo shapes are split by class into an "old" folder (circle, square, triangle) and a
"new" one (star, ring, cross), with a held-out test set of each drawn apart. Each family
trains on the old folder for ``--steps-old`` steps through the real ``train_job``; that run is
copied four times and each copy continues on the new folder (``continue_job``) for
``--steps-new`` more steps, with no protection, with replay, with EWC and with both. Then, for
the model at the switch and each of the four after it:

* ``old share`` / ``new share``: the share of 256 samples a small shape classifier (trained
  here on all six shapes; its test accuracy is printed) puts in an old or a new class: the
  plainest view of forgetting, for every family;
* ``nearest old`` / ``nearest new``: the mean RMS pixel distance (0..1) from each test image
  of the folder to the nearest of those samples (what the live plot shows per folder);
* ``bpd old`` / ``bpd new``: held-out bits/dim of each test set, for families with a
  likelihood.

Writes ``results.json`` and a markdown table under ``--out``; prints the table. Run it by
hand (``nice -n 10``); the tests never do.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/continual.py --out /tmp/continual
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from machine_info import cpu_name  # noqa: E402 - a sibling script's module
from torch import nn

from studio.core.jobs import CancelToken, run_sync
from studio.engine.data import ImageDataset
from studio.engine.demo import draw_shape_image
from studio.engine.device import cpu_generator
from studio.engine.metrics import nearest_distances
from studio.engine.runs import TrainConfig
from studio.engine.sample import load_run_model
from studio.engine.switch import continue_job
from studio.engine.train import prepare_dataset, train_job
from studio.models.base import Capability, images_to_uint8

OLD = ("circle", "square", "triangle")
NEW = ("star", "ring", "cross")
SHAPES = OLD + NEW
MODELS = {
    "vae.conv": {"latent_dim": 16, "width": 16},
    "gan.dcgan": {"latent_dim": 32, "width": 16},
}


def make_folders(root: Path, per_folder: int, test: int, size: int) -> dict[str, Path]:
    """old/, new/ (class subfolders) and test_old/, test_new/ of demo shapes."""
    counts = {name: 0 for name in ("old", "new", "test_old", "test_new")}
    want = {"old": per_folder, "new": per_folder, "test_old": test, "test_new": test}
    index = 0
    while any(counts[k] < want[k] for k in counts):
        image, shape, _ = draw_shape_image(index, size=size, seed=7)
        index += 1
        side = "old" if shape in OLD else "new"
        name = side if counts[side] < want[side] else f"test_{side}"
        if counts[name] >= want[name]:
            continue
        folder = root / name / shape
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index:05d}.png")
        counts[name] += 1
    return {name: root / name for name in counts}


def read(folder: Path, size: int) -> ImageDataset:
    token = CancelToken()
    out = run_sync(prepare_dataset(str(folder), size), token)
    assert out.ok, out.error
    return out.result


class ShapeNet(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The shape, not its colours: each pixel's distance from the corner's (background)
        # colour. Colours are drawn at random for every image, shapes are the classes.
        return self.net((x - x[:, :, :1, :1]).abs().sum(1, keepdim=True))


def floats(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def shape_labels(ds: ImageDataset) -> np.ndarray:
    return np.array([SHAPES.index(ds.class_names[i]) for i in ds.labels])


def drawn(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` demo shapes drawn in memory (images in [-1, 1], shape labels)."""
    pairs = [draw_shape_image(i, size=size, seed=seed) for i in range(n)]
    images = np.stack([np.asarray(image.convert("RGB")) for image, _, _ in pairs])
    return floats(images), torch.tensor([SHAPES.index(shape) for _, shape, _ in pairs])


def fit_classifier(size: int, test: list[ImageDataset], steps: int) -> Any:
    x, y = drawn(3000, size, seed=11)  # apart from every folder the models see
    torch.manual_seed(0)
    net = ShapeNet(len(SHAPES))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=gen)
        xb = x[idx]
        flip = torch.rand(len(xb), generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        loss = F.cross_entropy(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    xt = torch.cat([floats(d.images) for d in test])
    yt = torch.from_numpy(np.concatenate([shape_labels(d) for d in test]))
    with torch.no_grad():
        accuracy = float((net(xt).argmax(1) == yt).float().mean())
    return net, accuracy


def measure(run: Path, classifier: nn.Module, tests: dict[str, ImageDataset]) -> dict[str, float]:
    model = load_run_model(run)
    with torch.no_grad():
        samples = model.sample(256, cpu_generator(0)).float().clamp(-1, 1)
        classes = classifier(samples).argmax(1)
    out = {
        "old_share": float((classes < len(OLD)).float().mean()),
        "new_share": float((classes >= len(OLD)).float().mean()),
    }
    drawn = images_to_uint8(samples).numpy()
    for side, ds in tests.items():
        out[f"nearest_{side}"] = float(nearest_distances(ds.images, drawn)[0].mean())
        if Capability.LIKELIHOOD in model.info.capabilities:
            with torch.no_grad():
                out[f"bpd_{side}"] = float(model.bits_per_dim(floats(ds.images)).mean())
    return out


def train(job: Any) -> float:
    token = CancelToken()
    t0 = time.monotonic()
    out = run_sync(job(token), token)
    assert out.ok, out.error
    return time.monotonic() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--families", default=",".join(MODELS))
    p.add_argument("--steps-old", type=int, default=400)
    p.add_argument("--steps-new", type=int, default=400)
    p.add_argument("--images", type=int, default=300, help="training images per folder")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--replay", type=float, default=0.5)
    p.add_argument(
        "--ewc",
        default="vae.conv=0.0001/0.01,gan.dcgan=100/10000",
        help="EWC lambdas per family (a/b: one row each; replay + EWC uses the first)",
    )
    p.add_argument(
        "--rows", default="none,ewc,both", help="none (with replay), ewc, both: which to run"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = set(args.rows.split(","))
    ewc_by_family = dict(pair.split("=") for pair in args.ewc.split(","))
    if args.out.exists():
        shutil.rmtree(args.out / "runs", ignore_errors=True)
    folders = make_folders(args.out / "data", args.images, 60, args.size)
    tests = {
        "old": read(folders["test_old"], args.size),
        "new": read(folders["test_new"], args.size),
    }
    classifier, accuracy = fit_classifier(args.size, list(tests.values()), 1500)
    print(f"shape classifier: {accuracy:.1%} on the {2 * 60} test images")
    results: dict[str, Any] = {
        "classifier_accuracy": accuracy,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": f"{cpu_name()} ({platform.machine()}), torch {torch.__version__}, 1 thread",
        "families": {},
    }
    for key in args.families.split(","):
        lams = [float(v) for v in ewc_by_family[key].split("/")]
        variants = [("none", 0.0, 0.0), ("replay", args.replay, 0.0)] * ("none" in rows)
        variants += [(f"EWC λ={lam:g}", 0.0, lam) for lam in lams] * ("ewc" in rows)
        variants += [(f"replay + EWC λ={lams[0]:g}", args.replay, lams[0])] * ("both" in rows)
        base = args.out / "runs" / key / "at-switch"
        cfg = TrainConfig(
            family=key, data=str(folders["old"]), resolution=args.size, batch_size=args.batch,
            steps=args.steps_old, seed=0, sample_every=100, checkpoint_every=10_000,
            log_every=10, samples=64, holdout_fraction=0.1, device="cpu", model=MODELS[key],
        )  # fmt: skip
        seconds = train(lambda t, b=base, c=cfg: train_job(b, t, c))
        rows = {"at switch": {**measure(base, classifier, tests), "seconds": seconds}}
        print(key, "at switch", rows["at switch"], flush=True)
        for i, (name, replay, ewc) in enumerate(variants):
            run = base.with_name(f"variant{i}")
            shutil.copytree(base, run)

            def job(t: CancelToken, r: Path = run, rp: float = replay, e: float = ewc) -> Any:
                total = args.steps_old + args.steps_new
                return continue_job(r, t, folders["new"], replay=rp, ewc=e, steps=total)

            seconds = train(job)
            rows[name] = {**measure(run, classifier, tests), "seconds": seconds}
            print(key, name, rows[name], flush=True)
        results["families"][key] = rows
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| model | protection | old share | new share | nearest old | nearest new "
        "| bpd old | bpd new | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, rows in results["families"].items():
        for name, r in rows.items():
            bpd = [f"{r[k]:.2f}" if k in r else "-" for k in ("bpd_old", "bpd_new")]
            label = name
            lines.append(
                f"| {key} | {label} | {r['old_share']:.2f} | {r['new_share']:.2f} "
                f"| {r['nearest_old']:.3f} | {r['nearest_new']:.3f} | {bpd[0]} | {bpd[1]} "
                f"| {r['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
