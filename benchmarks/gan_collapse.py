"""Does a GAN's augmentation make it collapse? A short controlled experiment (issue 17).

Trains one GAN family straight through its ``train_step`` (no trainer, no checkpoints) on one
of ``benchmarks/small_folder.py``'s training folders, once per augmentation setting, with the
same seed, batches and latents for every setting, and prints per setting:

* ``diversity``: the per-pixel standard deviation across 64 samples (drawn in eval mode), and
  ``diversity_train_mode`` the same with the networks in training mode (a batch-norm
  generator whose running statistics lag would collapse in one and not the other); the
  training crops' own value is printed first. A generator that draws one image for every
  latent scores near 0.
* ``colour_spread``: the standard deviation of the samples' mean colours; ``within``: the mean
  standard deviation inside one sample (structure).
* every ``--log`` steps: D(real), D(fake) (mean sigmoid on the batch, as D sees it) and p.

Build the folders first (``small_folder.py --build-only``), then for example::

    python benchmarks/gan_collapse.py --steps 150 --settings off fixed:1 adaptive:2
    python benchmarks/gan_collapse.py --steps 600 --settings off fixed:1

A setting is ``off``, ``fixed:<p>`` or ``adaptive:<kimg>`` (ADA at that speed). Sample grids
go to ``--out``. Run it by hand; the tests never do.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from studio.core.atomic import write_bytes
from studio.core.imaging import make_grid
from studio.models.base import Batch, StepContext
from studio.models.registry import get_family

BATCH = 32
SAMPLES = 64


def load_folder(folder: Path) -> Tensor:
    """Every PNG in ``folder`` as one N x 3 x H x W tensor in [-1, 1], in name order."""
    files = sorted(folder.glob("*.png"))
    if not files:
        raise SystemExit(f"{folder}: no PNG files (run small_folder.py --build-only first)")
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def spread(images: Tensor) -> dict[str, float]:
    return {
        "diversity": round(float(images.std(0).mean()), 3),
        "colour_spread": round(float(images.mean((2, 3)).std(0).mean()), 3),
        "within": round(float(images.std((2, 3)).mean()), 3),
    }


def parse_setting(text: str) -> dict[str, Any]:
    mode, _, value = text.partition(":")
    if mode == "off" and not value:
        return {"augment": "off"}
    if mode == "fixed" and value:
        return {"augment": "fixed", "augment_p": float(value)}
    if mode == "adaptive" and value:
        return {"augment": "adaptive", "ada_kimg": int(value)}
    raise SystemExit(f"setting {text!r}: use off, fixed:<p> or adaptive:<kimg>")


def train(
    key: str, data: Tensor, settings: dict[str, Any], steps: int, log: int, seed: int
) -> tuple[dict[str, Any], Tensor]:
    family = get_family(key)
    torch.manual_seed(seed)
    model = family(family.Config.from_dict({"resolution": data.shape[-1], **settings}))
    model.prepare_for_data(len(data))
    model.configure_optimizers()
    model.train()
    batches = torch.Generator().manual_seed(seed)  # the same batches for every setting
    history = []
    t0 = time.perf_counter()
    for i in range(steps):
        x = data[torch.randint(len(data), (BATCH,), generator=batches)]
        flip = torch.rand(BATCH, generator=batches) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        out = model.train_step(
            Batch(x, None), StepContext(i, torch.Generator().manual_seed(1000 + i))
        )
        if (i + 1) % log == 0:
            names = ("d_real", "d_fake", "augment_p")
            history.append(
                {"step": i + 1, **{k: round(float(out[k]), 3) for k in names if k in out}}
            )
    seconds = time.perf_counter() - t0
    z = torch.randn(SAMPLES, model.config.latent_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # first (it nudges batch norm's running statistics a little)
        train_mode = model.generator(z)  # batch norm on this batch's own statistics
    samples = model.decode(z)  # eval mode, as sampling runs
    result = {
        **spread(samples),
        "diversity_train_mode": spread(train_mode)["diversity"],
        "train_s": round(seconds),
        "history": history,
    }
    return result, samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", type=Path, default=Path("benchmarks/out/small_folder/data"))
    ap.add_argument("--folder", default="train-100")
    ap.add_argument("--family", default="gan.dcgan")
    ap.add_argument("--settings", nargs="+", default=["off", "fixed:1", "adaptive:2"])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--log", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/gan_collapse"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = load_folder(args.root / args.folder)
    print(json.dumps({"training crops": spread(data)}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for text in args.settings:
        result, samples = train(
            args.family, data, parse_setting(text), args.steps, args.log, args.seed
        )
        print(json.dumps({"setting": text, "steps": args.steps, **result}), flush=True)
        pixels = ((samples[:32].clamp(-1, 1) + 1) * 127.5).round().byte()
        grid = make_grid(pixels.permute(0, 2, 3, 1).numpy())
        name = f"{args.family}-{args.steps}-{text.replace(':', '')}.png"
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        write_bytes(args.out / name, buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
