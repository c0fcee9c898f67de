"""What the trainer measures every ``sample_every`` steps: a sample grid, its diversity, and
held-out bits/dim where the family has a likelihood. A paired family's grid shows fixed
held-out pairs as rows of input | output | target, with the held-out L1 error; an unpaired
one's shows fixed held-out images of each folder as rows of input | translation | round trip
(A -> B -> A, then B -> A -> B), with each folder's held-out cycle error."""

from __future__ import annotations

import re
import time
from collections.abc import Generator
from pathlib import Path

import numpy as np
import torch

from studio.core import atomic
from studio.core.imaging import make_grid
from studio.core.jobs import Progress
from studio.engine import checkpoint as ckpt
from studio.engine.device import cpu_generator
from studio.engine.runs import RunFolder, TrainConfig
from studio.models.base import A2B, B2A, Capability, GenerativeModel, images_to_uint8

EXTRA_NAME = re.compile(r"[a-z][a-z0-9_]*")


def save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic.atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _diversity(images: torch.Tensor) -> float:
    """Mean pairwise distance of a batch of images in [-1, 1] (a cheap mode-collapse signal)."""
    flat = images.flatten(1).float()
    if len(flat) < 2:
        return 0.0
    d = torch.cdist(flat, flat)
    n = len(flat)
    return float(d.sum() / (n * (n - 1)))


class Monitor:
    """What the trainer measures every ``sample_every`` steps: a sample grid from a fixed seed,
    its diversity, and held-out bits/dim for families with a likelihood."""

    def __init__(
        self,
        run: RunFolder,
        config: TrainConfig,
        real: torch.Tensor,
        held_out: np.ndarray | None,
        device: torch.device,
        enabled: bool = True,
        held_sources: np.ndarray | None = None,
        folders: dict[int, np.ndarray] | None = None,
    ) -> None:
        """``held_sources``: a paired run's fixed inputs, aligned with ``held_out`` (their
        targets). ``folders``: a continual run's held-out images (uint8 N x H x W x C) of each
        folder it has trained on, by number (1 = the first), measured one by one so
        forgetting shows as it happens (:meth:`folder_metrics`)."""
        self.run, self.config, self.enabled = run, config, enabled
        self.folders = {
            number: (images, _to_floats(images, device))
            for number, images in (folders or {}).items()
            if len(images)
        }
        self.last_step: int | None = None
        self.real_ref = _diversity(real.float().div(127.5).sub(1).cpu())
        self.held_out = None
        if held_out is not None and len(held_out):
            self.held_out = _to_floats(held_out, device)
        self.held_sources = None
        if held_sources is not None and len(held_sources):
            self.held_sources = _to_floats(held_sources, device)

    def evaluate(
        self, model: GenerativeModel, step: int, total: int
    ) -> Generator[Progress, None, None]:
        # Only rank 0 of a data-parallel run samples and writes; and each step once (a stop
        # right after a sample step would otherwise draw the same grid twice).
        if not self.enabled or step == self.last_step:
            return
        self.last_step = step
        caps = model.info.capabilities
        if self.held_sources is not None and Capability.UNPAIRED in caps:
            yield from self._evaluate_cycles(model, step, total)
            return
        if self.held_out is not None and Capability.SINGLE_FOLDER in caps:
            yield from self._evaluate_restored(model, step, total)
            return
        if self.held_sources is not None and Capability.PAIRED in caps:
            yield from self._evaluate_pairs(model, step, total)
            return
        model.eval()
        try:
            with torch.no_grad():
                samples = model.sample(self.config.samples, cpu_generator(self.config.seed + 1))
                metrics: dict[str, float] = {}
                if self.real_ref > 0:
                    metrics["diversity"] = _diversity(samples.float().cpu()) / self.real_ref
                if self.held_out is not None and Capability.LIKELIHOOD in model.info.capabilities:
                    bpd = torch.cat(
                        [model.bits_per_dim(chunk) for chunk in self.held_out.split(64)]
                    )
                    metrics["heldout_bpd"] = float(bpd.mean())
                metrics.update(self.folder_metrics(model, samples))
        finally:
            model.train()
        grid = make_grid(images_to_uint8(samples).numpy())
        save_png(self.run.samples_dir / f"{ckpt.checkpoint_name(step)}.png", grid)
        self._save_extra_images(model)
        if metrics:
            self.run.append_metrics([{"step": step, "time": time.time(), **metrics}])
        yield Progress(
            "train", step, total, image=grid, metrics=metrics, message=f"Samples at step {step}"
        )

    def folder_metrics(self, model: GenerativeModel, samples: torch.Tensor) -> dict[str, float]:
        """For each folder of a continual run: ``folder_nearest_<n>``, the mean RMS pixel
        distance (0..1) from each of its held-out images to the nearest of ``samples`` (the
        model still draws images like the folder's: low; it has forgotten them: high), and
        ``folder_bpd_<n>``, its held-out bits/dim, where the family has a likelihood."""
        from studio.engine.metrics import nearest_distances

        out: dict[str, float] = {}
        if not self.folders:
            return out
        drawn = images_to_uint8(samples).numpy()
        for number, (images, floats) in sorted(self.folders.items()):
            if drawn.shape[1:] == images.shape[1:]:
                distances, _, _ = nearest_distances(images, drawn)
                out[f"folder_nearest_{number}"] = float(distances.mean())
            if Capability.LIKELIHOOD in model.info.capabilities:
                bpd = torch.cat([model.bits_per_dim(chunk) for chunk in floats.split(64)])
                out[f"folder_bpd_{number}"] = float(bpd.mean())
        return out

    def _evaluate_pairs(
        self, model: GenerativeModel, step: int, total: int
    ) -> Generator[Progress, None, None]:
        """Rows of input | output | target from fixed held-out pairs, and their mean L1."""
        assert self.held_sources is not None and self.held_out is not None
        shown = min(self.config.samples, PAIR_ROWS, len(self.held_sources))
        model.eval()
        try:
            with torch.no_grad():
                gen = cpu_generator(self.config.seed + 1)
                outputs = [
                    model.sample(len(chunk), gen, image=chunk)
                    for chunk in self.held_sources[:PAIR_L1_IMAGES].split(16)
                ]
        finally:
            model.train()
        out = torch.cat(outputs).float()
        target = self.held_out[: len(out)].float()
        metrics = {"heldout_l1": float((out.to(target.device) - target).abs().mean())}
        rows = torch.stack(
            [self.held_sources[:shown].float().cpu(), out[:shown].cpu(), target[:shown].cpu()], 1
        ).flatten(0, 1)  # input, output, target of each pair in turn
        grid = make_grid(images_to_uint8(rows).numpy(), nrow=3)
        save_png(self.run.samples_dir / f"{ckpt.checkpoint_name(step)}.png", grid)
        self.run.append_metrics([{"step": step, "time": time.time(), **metrics}])
        yield Progress(
            "train", step, total, image=grid, metrics=metrics, message=f"Samples at step {step}"
        )

    def make_inputs(self, model: GenerativeModel) -> None:
        """A single-folder image-to-image run (``Capability.SINGLE_FOLDER``): its fixed
        held-out inputs, made once by the family from the held-out images, from the run's
        seed (the same inputs at every sample step, and for Peek)."""
        if self.held_out is None or Capability.SINGLE_FOLDER not in model.info.capabilities:
            return
        self.held_out = self.held_out[:RESTORE_IMAGES]
        gen = cpu_generator(self.config.seed + 2)
        with torch.no_grad():
            self.held_sources = model.paired_inputs(self.held_out.float().cpu(), gen).to(
                self.held_out.device
            )

    def _evaluate_restored(
        self, model: GenerativeModel, step: int, total: int
    ) -> Generator[Progress, None, None]:
        """Rows of input (upsampled bicubically to the output's size) | output | original
        from fixed held-out images, and the PSNR/SSIM of the outputs and of the upsampled
        inputs (``_bicubic``: the baseline a model must beat)."""
        assert self.held_out is not None
        if self.held_sources is None:
            self.make_inputs(model)
        assert self.held_sources is not None
        model.eval()
        try:
            with torch.no_grad():
                gen = cpu_generator(self.config.seed + 1)
                out = (
                    torch.cat(
                        [model.sample(len(c), gen, image=c) for c in self.held_sources.split(8)]
                    )
                    .float()
                    .cpu()
                )
        finally:
            model.train()
        if not model.inputs_have_targets:  # nothing to score against: input | output
            yield from self._show_pairs(model, self.held_sources.float().cpu(), out, step, total)
            return
        target = self.held_out[: len(out)].float().cpu()
        baseline = upsampled(self.held_sources.float().cpu(), target.shape[-2:])
        metrics = {}
        for suffix, images in (("", out), ("_bicubic", baseline)):
            psnr, ssim = image_quality(images, target)
            metrics[f"heldout_psnr{suffix}"] = psnr
            metrics[f"heldout_ssim{suffix}"] = ssim
        shown = min(self.config.samples, PAIR_ROWS, len(out))
        rows = torch.stack([baseline[:shown], out[:shown], target[:shown]], 1).flatten(0, 1)
        grid = make_grid(images_to_uint8(rows).numpy(), nrow=3)
        save_png(self.run.samples_dir / f"{ckpt.checkpoint_name(step)}.png", grid)
        self.run.append_metrics([{"step": step, "time": time.time(), **metrics}])
        yield Progress(
            "train", step, total, image=grid, metrics=metrics, message=f"Samples at step {step}"
        )

    def _show_pairs(
        self, model: GenerativeModel, inputs: torch.Tensor, out: torch.Tensor, step: int, total: int
    ) -> Generator[Progress, None, None]:
        """Rows of input | output, no metrics (a family whose inputs have no target)."""
        shown = min(self.config.samples, PAIR_ROWS, len(out))
        rows = torch.stack([inputs[:shown], out[:shown]], 1).flatten(0, 1)
        grid = make_grid(images_to_uint8(rows).numpy(), nrow=2)
        save_png(self.run.samples_dir / f"{ckpt.checkpoint_name(step)}.png", grid)
        self._save_extra_images(model)
        yield Progress("train", step, total, image=grid, message=f"Samples at step {step}")

    def _evaluate_cycles(
        self, model: GenerativeModel, step: int, total: int
    ) -> Generator[Progress, None, None]:
        """Rows of input | translation | round trip from fixed held-out images of folder A
        (A -> B -> A), then of folder B (B -> A -> B), and each folder's mean cycle L1."""
        assert self.held_sources is not None and self.held_out is not None
        rows, metrics = [], {}
        model.eval()
        try:
            with torch.no_grad():
                for name, images, there, back in (
                    ("heldout_cycle_a", self.held_sources, A2B, B2A),
                    ("heldout_cycle_b", self.held_out, B2A, A2B),
                ):
                    x = images[:PAIR_L1_IMAGES]
                    gen = cpu_generator(self.config.seed + 1)
                    out = _translate(model, x, gen, there)
                    rec = _translate(model, out, gen, back)
                    metrics[name] = float((rec.to(x.device) - x).abs().mean())
                    shown = min(self.config.samples, PAIR_ROWS, len(x))
                    rows.append(
                        torch.stack([x[:shown].cpu(), out[:shown].cpu(), rec[:shown].cpu()], 1)
                    )
        finally:
            model.train()
        grid = make_grid(images_to_uint8(torch.cat(rows).flatten(0, 1)).numpy(), nrow=3)
        save_png(self.run.samples_dir / f"{ckpt.checkpoint_name(step)}.png", grid)
        self.run.append_metrics([{"step": step, "time": time.time(), **metrics}])
        yield Progress(
            "train", step, total, image=grid, metrics=metrics, message=f"Samples at step {step}"
        )

    def _save_extra_images(self, model: GenerativeModel) -> None:
        """What the family shows beside its samples (``GenerativeModel.extra_images``), each
        as ``samples/<name>.png``, overwritten at every sample step."""
        with torch.no_grad():
            extra = model.extra_images()
        for name, images in extra.items():
            if not EXTRA_NAME.fullmatch(name) or name.startswith("step_"):
                continue  # not a plain file name, or one the sample grids own
            if images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)
            save_png(
                self.run.samples_dir / f"{name}.png", make_grid(images_to_uint8(images).numpy())
            )


RESTORE_IMAGES = 16  # held-out images a single-folder image-to-image run is measured on
PAIR_ROWS = 8  # held-out pairs shown in a paired run's grid
PAIR_L1_IMAGES = 64  # held-out pairs the L1 error is measured on


def _translate(
    model: GenerativeModel, images: torch.Tensor, gen: torch.Generator, direction: str
) -> torch.Tensor:
    """``images`` translated in ``direction`` by an unpaired family, 16 at a time."""
    return torch.cat(
        [
            model.sample(len(chunk), gen, image=chunk, direction=direction).float()
            for chunk in images.float().split(16)
        ]
    )


def _to_floats(images: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.to(device).float().div(127.5).sub(1)


def upsampled(inputs: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Inputs in [-1, 1] at ``size`` (bicubic, clamped); unchanged when already that size."""
    if tuple(inputs.shape[-2:]) == tuple(size):
        return inputs
    out = torch.nn.functional.interpolate(
        inputs.float(), size=tuple(size), mode="bicubic", align_corners=False
    )
    return out.clamp(-1, 1)


def image_quality(images: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR (dB, capped at 100) and SSIM of ``images`` against ``targets`` (N x C x H x W
    in [-1, 1]), on their uint8 pixels."""
    from studio.engine.compress import psnr, ssim

    a = images_to_uint8(images).numpy()
    b = images_to_uint8(targets).numpy()
    pairs = list(zip(a, b))
    mean_psnr = float(np.mean([min(psnr(x, y), 100.0) for x, y in pairs]))
    mean_ssim = float(np.mean([ssim(x, y) for x, y in pairs]))
    return mean_psnr, mean_ssim
