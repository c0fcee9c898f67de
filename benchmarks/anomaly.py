"""How well each family finds the odd ones out of a folder (``studio score``), measured.

The folder: the GNOME Adwaita icon theme's full-colour 48 px icons (``48x48/legacy``, 332
drawings on a transparent background, composited on white), with a few percent of images from
two other collections mixed in: Adwaita's *symbolic* icons (monochrome line drawings of the
same theme, ``48x48/status``: a near miss), the Qt Fluent style's control images (PySide6's
``FluentWinUI3/light/images``: check boxes, slider grooves, buttons: plainer than an icon) and
the studio's demo shapes (a coloured shape on a coloured background: busier than an icon). Each family
trains on the mixed folder, as a user's run would (it never knows which images are odd), then
scores the same folder; we report, per score, the AUROC of telling each foreign source from the
icons and the precision among the top k (k = the number of foreign images).

    python benchmarks/anomaly.py --out /tmp/anomaly          # ~15 min on 2 cores
    python benchmarks/anomaly.py --families vae.conv --steps 50 --out /tmp/anomaly  # smoke

Run by hand; the tests never do. The collections must be installed where they are looked for
(the icon theme in ``/usr/share/icons/Adwaita``, PySide6 in this environment).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import PySide6
from PIL import Image

from studio.core.jobs import CancelToken, run_sync
from studio.engine.demo import make_demo_dataset
from studio.engine.runs import TrainConfig
from studio.engine.score import score_job
from studio.engine.train import train_job

ICONS = Path("/usr/share/icons/Adwaita/48x48")
FLUENT = Path(PySide6.__file__).parent / "Qt/qml/QtQuick/Controls/FluentWinUI3/light/images"
PER_SOURCE = 6
SOURCES = ("symbolic", "fluent", "shapes")
RESOLUTION = 32
SEED = 0
FAMILIES: dict[str, dict[str, Any]] = {  # batch 32 for all; slimmed as in quality.py
    "vae.conv": {},
    "vae.vqvae": {"width": 32},
    "flow.glow": {"steps": 4, "hidden": 64, "warmup_steps": 30},
    "diffusion.ddpm": {
        "width": 32,
        "layers_per_block": 1,
        "attention_res": 8,
        "dropout": 0.0,
        "beta_schedule": "squaredcos_cap_v2",
        "lr": 5e-4,
        "warmup_steps": 30,
    },
    "gan.dcgan": {},
}


def build_folder(folder: Path) -> dict[str, str]:
    """Write the mixed folder; return file name -> source ("icon" or one of SOURCES)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    truth: dict[str, str] = {}
    for path in sorted((ICONS / "legacy").glob("*.png")):
        shutil.copy(path, folder / f"icon-{path.name}")
        truth[f"icon-{path.name}"] = "icon"
    symbolic = sorted((ICONS / "status").glob("*.png"))
    fluent = [
        p
        for p in sorted(FLUENT.glob("*.png"))
        if "@" not in p.name and min(Image.open(p).size) >= 16
    ]
    demo = run_sync(make_demo_dataset(folder.parent / "shapes", count=40, size=48, seed=SEED))
    shapes = sorted(Path(demo.result).rglob("*.png"))
    for source, paths in (("symbolic", symbolic), ("fluent", fluent), ("shapes", shapes)):
        for i in rng.choice(len(paths), PER_SOURCE, replace=False):
            name = f"{source}-{paths[i].name}"
            shutil.copy(paths[i], folder / name)
            truth[name] = source
    return truth


def auroc(scores: np.ndarray, odd: np.ndarray) -> float:
    """Probability that a random odd image scores above a random normal one (ties: half)."""
    pos, neg = scores[odd], scores[~odd]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def measure(key: str, folder: Path, truth: dict[str, str], out: Path, steps: int) -> dict:
    run = out / "runs" / key
    if run.exists():
        shutil.rmtree(run)
    cfg = TrainConfig(
        family=key, data=str(folder), resolution=RESOLUTION, batch_size=32, steps=steps,
        seed=SEED, sample_every=steps, checkpoint_every=steps, checkpoint_minutes=1e6,
        log_every=max(1, steps // 4), samples=8, device="cpu", model=FAMILIES[key],
    )  # fmt: skip
    t0 = time.perf_counter()
    trained = run_sync(train_job(run, CancelToken(), cfg))
    if not trained.ok:
        return {"family": key, "error": trained.error}
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = run_sync(score_job(run, folder, seed=SEED, device="cpu"))
    if not scored.ok:
        return {"family": key, "error": scored.error}
    report = scored.result
    score_s = time.perf_counter() - t0
    source = np.array([truth[img.path] for img in report.images])
    row: dict[str, Any] = {"family": key, "train_s": train_s, "score_s": score_s, "scores": {}}
    k = int((source != "icon").sum())
    for option in report.options:
        values = np.array([img.scores[option.name] for img in report.images])
        order = np.argsort(-values, kind="stable")
        metrics = {
            f"auroc_{name}": auroc(values[keep], source[keep] != "icon")
            for name in SOURCES
            if (keep := (source == "icon") | (source == name)).any()
        }
        metrics["auroc_all"] = auroc(values, source != "icon")
        metrics["precision_at_k"] = float((source[order[:k]] != "icon").mean())
        row["scores"][option.name] = metrics
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict], steps: int, n_icons: int) -> str:
    n_odd = PER_SOURCE * len(SOURCES)
    lines = [
        f"Generated by `benchmarks/anomaly.py --steps {steps}`: {n_icons} Adwaita full-colour "
        f"icons with {PER_SOURCE} each of Adwaita symbolic icons, Qt Fluent control images and "
        f"demo shapes mixed in ({n_odd / (n_icons + n_odd):.1%} foreign), {RESOLUTION} px, "
        f"{steps} steps at batch 32 on the mixed folder, CPU.",
        "",
        "| Family | Score | AUROC symbolic | AUROC Fluent | AUROC shapes | AUROC all "
        f"| Precision at top {n_odd} | Train / score time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['family']} | failed: {row['error']} | | | | | | |")
            continue
        for name, m in row["scores"].items():
            cells = " | ".join(f"{m[f'auroc_{s}']:.2f}" for s in SOURCES)
            lines.append(
                f"| {row['family']} | `{name}` | {cells} | {m['auroc_all']:.2f} "
                f"| {m['precision_at_k']:.2f} "
                f"| {row['train_s'] / 60:.1f} / {row['score_s'] / 60:.1f} min |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    folder = args.out / "data"
    truth = build_folder(folder)
    rows = [measure(key, folder, truth, args.out, args.steps) for key in args.families.split(",")]
    n_icons = sum(1 for s in truth.values() if s == "icon")
    text = markdown(rows, args.steps, n_icons)
    (args.out / "anomaly.md").write_text(text, encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
