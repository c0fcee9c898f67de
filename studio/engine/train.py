"""The training job: one generator used by the CLI, the GUI's engine thread and the tests."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studio import __version__
from studio.core import atomic
from studio.core.errors import NonFiniteLoss, StudioError
from studio.core.imaging import make_grid
from studio.core.jobs import CancelToken, Progress
from studio.engine import checkpoint as ckpt
from studio.engine import live, tensorboard
from studio.engine.batch_finder import fit_batch_size
from studio.engine.batches import DeviceImages
from studio.engine.data import ImageDataset, load_dataset, scan_folder, split_holdout
from studio.engine.device import (
    autocast_factory,
    cpu_generator,
    device_name,
    memory_in_use,
    precision_message,
    resolve_device,
    resolve_precision,
    step_generator,
)
from studio.engine.distributed import Distributed
from studio.engine.runs import RunFolder, TrainConfig
from studio.engine.schedule import StepRunner
from studio.engine.speed import apply_speed, release_freed_memory
from studio.models.base import Capability, GenerativeModel, images_to_uint8
from studio.models.registry import get_family


@dataclass(frozen=True)
class TrainResult:
    run: Path
    step: int
    steps: int
    stopped_early: bool
    metrics: dict[str, float]


def save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic.atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def build_model(
    cfg: TrainConfig,
    num_classes: int,
    device: torch.device,
    captions: tuple[str, ...] = (),
    previous: dict[str, Any] | None = None,
) -> GenerativeModel:
    """``captions`` (training images') and ``previous`` (a resumed run's saved model settings)
    let a text family build or keep its vocabulary."""
    family = get_family(cfg.family)
    overrides = dict(cfg.model)
    overrides["resolution"] = cfg.resolution
    if Capability.CONDITIONAL in family.info.capabilities:
        overrides["num_classes"] = num_classes
    if Capability.TEXT in family.info.capabilities:
        overrides = family.config_for_data(overrides, captions, previous)  # type: ignore[attr-defined]
    try:
        config = family.Config.from_dict(overrides)
        with torch.random.fork_rng(devices=[]):  # the run's seed fixes the initial weights
            torch.manual_seed(cfg.seed)
            model = family(config)
    except (TypeError, ValueError) as err:
        raise StudioError(f"{family.info.display_name} cannot be built here: {err}") from err
    model = model.to(device)
    model.configure_optimizers()
    model.remember_base_lrs()  # the schedule scales these; recorded before a checkpoint loads
    return model


def _check_config(config: TrainConfig, run: RunFolder, resuming: bool) -> None:
    """Every option in its declared range (studio.core.options), or one clear message; a
    resumed run's settings are read back from its config.json, which may have been edited."""
    try:
        config.check()
        try:
            get_family(config.family)
        except KeyError as err:
            raise StudioError(str(err.args[0]) if err.args else "unknown model family") from None
    except StudioError as err:
        raise StudioError(f"{run.config_path}: {err}" if resuming else str(err)) from None


def prepare_dataset(
    data: str, resolution: int, cache_dir: Path | None = None
) -> Generator[Progress, None, ImageDataset]:
    scan = yield from scan_folder(Path(data))
    yield from report_skipped(scan.describe_skipped())
    scan.require_usable()
    dataset = yield from load_dataset(scan, resolution, cache_dir=cache_dir)
    late = dataset.skipped[len(scan.skipped) :]
    yield from report_skipped([f"{s.path}: {s.reason} ({s.detail})" for s in late])
    return dataset


def report_skipped(lines: list[str], limit: int = 200) -> Generator[Progress, None, None]:
    """One message per skipped file, so the CLI and the GUI log list every one."""
    for line in lines[:limit]:
        yield Progress("load", message=f"Skipped {line}", info={"skipped": line})
    if len(lines) > limit:
        yield Progress("load", message=f"... and {len(lines) - limit} more skipped files")


def train_job(
    run_dir: str | Path,
    token: CancelToken,
    config: TrainConfig | None = None,
    *,
    steps: int | None = None,
    dataset: ImageDataset | None = None,
    cache_dir: Path | None = None,
    device_override: str | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train a new run (``config`` given) or resume ``run_dir`` (``config`` None).

    ``steps`` sets the total to reach (a resumed run trains on to it). ``token.stop()`` ends
    early and keeps a final checkpoint; ``token.cancel()`` aborts without saving.
    """
    distributed = Distributed.from_env(device_override or (config.device if config else "auto"))
    run_dir = distributed.agree(str(run_dir))  # rank 0's name: each launched process has a clock
    run = tensorboard.mirror(RunFolder(run_dir))  # metrics also to <run>/tensorboard/ if installed
    cleanup: list[Callable[[], None]] = []  # what _train set up that must end with the run
    try:
        result = yield from _train(run, token, config, steps, dataset, cache_dir, device_override, distributed, cleanup)
    finally:
        for close in cleanup:
            close()
        distributed.close()
        live.unregister(run.path)  # peeks fall back to the run's files from here on
        release_freed_memory()  # what reuse_cpu_memory kept between steps goes back to the OS
    return result


def _train(
    run: RunFolder,
    token: CancelToken,
    config: TrainConfig | None,
    steps: int | None,
    dataset: ImageDataset | None,
    cache_dir: Path | None,
    device_override: str | None,
    distributed: Distributed,
    cleanup: list[Callable[[], None]],
) -> Generator[Progress, None, TrainResult]:
    is_main = distributed.is_main
    resuming = config is None
    if resuming:
        config = run.train_config()
    else:
        run.check_new()  # missing or empty: never write over files that are not this run's
    if steps is not None:
        config = replace(config, steps=int(steps))
    if device_override:
        config = replace(config, device=device_override)
    _check_config(config, run, resuming)  # every option in range before anything is written
    device = distributed.device or resolve_device(config.device)
    distributed.barrier()  # every rank has checked the folder before rank 0 writes to it

    yield Progress("load", message=f"Reading images from {config.data}")
    if dataset is None:
        dataset = yield from prepare_dataset(config.data, config.resolution, cache_dir)
    train_idx, held_idx = split_holdout(len(dataset), config.holdout_fraction, config.seed)
    if len(train_idx) == 0:
        train_idx = np.arange(len(dataset))
    labels = dataset.labels[train_idx] if dataset.labels is not None else None
    captions = tuple(dataset.captions[i] or "" for i in train_idx)
    previous = run.read_config().get("model") if resuming else None
    if config.auto_batch and not resuming:  # CUDA: the largest batch that fits (batch_finder)
        config = yield from fit_batch_size(config, lambda c: build_model(c, len(dataset.class_names), device, captions, previous), device, distributed.enabled)
    model = build_model(config, len(dataset.class_names), device, captions, previous)
    seed = distributed.seed(config.seed)

    start_step, trainer_state = 0, {}
    if resuming:
        meta, skipped = ckpt.load_latest(run.state_dir, model)  # the newest one that verifies
        for line in skipped:
            yield Progress("load", message=line)
        if meta is not None:
            start_step, trainer_state = int(meta["step"]), dict(meta.get("trainer", {}))
        if is_main:
            run.truncate_metrics(start_step)
        if run.read_config().get("dataset", {}).get("fingerprint") != dataset.fingerprint:
            yield Progress("load", message="Note: the dataset folder changed since this run began.")
    elif is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(
            {
                "family": config.family,
                "train": config.to_dict(),
                "model": model.config.to_dict(),
                "dataset": {
                    "path": str(config.data),
                    "fingerprint": dataset.fingerprint,
                    "images": len(dataset),
                    "train_images": int(len(train_idx)),
                    "held_out_images": int(len(held_idx)),
                    "class_names": list(dataset.class_names),
                    "skipped": len(dataset.skipped),
                },
                "versions": {"studio": __version__, "torch": torch.__version__},
                "world_size": distributed.world_size,
            }
        )
    speed = apply_speed(model, config, device)  # after the checkpoint: converted optimizers keep their state
    cleanup.append(speed.close)  # the shard threads
    distributed.prepare(model, model.optimizers)
    live_run = live.register(run.path, model, token)  # peeks use these weights between steps

    images = DeviceImages(
        dataset.images[train_idx], labels, device, config.seed, config.batch_size, config.flip,
        captions=captions if Capability.TEXT in model.info.capabilities else None,
    )
    if images.batch_size < config.batch_size:
        yield Progress("load", message=f"Batch size lowered to {images.batch_size}: that is every training image.")
    autocast = autocast_factory(device, config.precision)
    fp16 = resolve_precision(device, config.precision) == "fp16"  # needs loss scaling
    runner = StepRunner(model, config, autocast, images.batch_size, speed, grad_scaling=fp16)  # schedule, clipping, accumulation
    runner.load_scaler_state(trainer_state.get("grad_scalers", {}))  # a resumed fp16 run's loss scales
    if (line := precision_message(device, config.precision)) is not None:
        yield Progress("load", message=line)
    for line in runner.take_messages():
        yield Progress("load", message=line)
    dev_name = device_name(device)
    total = max(config.steps, start_step)
    held = dataset.images[held_idx[:256]] if len(held_idx) else None
    monitor = Monitor(run, config, images.data[: min(64, images.n)], held, device, enabled=is_main)

    step = start_step
    last_ckpt_time = time.monotonic()
    window: list[dict[str, torch.Tensor]] = []
    throughput: float | None = trainer_state.get("throughput")
    t_log, step_log = time.monotonic(), step
    last_metrics: dict[str, float] = {}
    stopped_early = False

    def save(step_now: int) -> Progress:
        distributed.broadcast_state(model)  # batch-norm statistics may differ between ranks
        if is_main:
            state = {"throughput": throughput, "grad_scalers": runner.scaler_state()}
            ckpt.save_checkpoint(run.state_dir, model, step_now, state)
            model.save(run.model_dir)
        distributed.barrier()
        return Progress("train", step_now, total, message=f"Checkpoint saved at step {step_now}")

    yield Progress("train", step, total, message=f"Training {model.info.display_name} on {dev_name}")
    if step == 0 and total > 0:
        yield from monitor.evaluate(model, step, total)

    def evaluate(step_now: int) -> Generator[Progress, None, None]:
        _check_weights(model, run, step_now, distributed)  # no black grid from non-finite weights
        yield from monitor.evaluate(model, step_now, total)

    while step < total:
        if distributed.any(token.stop_requested):
            token.check()
            stopped_early = True
            break
        if token.paused:
            yield Progress("paused", step, total, message="Paused", info=_info(dev_name, device, throughput, step, total, images.batch_size))
            yield from live_run.while_paused(token, Progress("paused", step, total))  # peeks run meanwhile
            t_log, step_log = time.monotonic(), step
            continue

        gen = step_generator(device, seed, step)
        batch = images.batch(step, gen, distributed.shard)
        model.train()
        window.extend(runner.run(batch, step, gen))  # one dict of losses per micro-batch
        for line in runner.take_messages():  # e.g. a compile that fell back to eager
            yield Progress("train", step, total, message=line)
        step += 1

        logged = step % config.log_every == 0 or step == total
        metrics: dict[str, float] = {}
        if logged:
            metrics = distributed.mean_metrics(_reduce(window))
            window = []
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLoss(_diverged_message(run, step, bad))
            now = time.monotonic()
            rate = (step - step_log) * images.batch_size / max(now - t_log, 1e-9)
            throughput = rate if throughput is None else 0.7 * throughput + 0.3 * rate
            t_log, step_log = now, step
            metrics.update(images_per_s=rate, memory_mb=memory_in_use(device) / 2**20)  # plotted too
            if is_main:
                run.append_metrics([{"step": step, "time": time.time(), **metrics}])
            last_metrics = metrics
        yield Progress("train", step, total, metrics=metrics, info={**_info(dev_name, device, throughput, step, total, images.batch_size), **live_run.info(step)} if logged else {})

        if step % config.sample_every == 0 or step == total:
            yield from evaluate(step)
        minutes = (time.monotonic() - last_ckpt_time) / 60
        if step % config.checkpoint_every == 0 or minutes >= config.checkpoint_minutes:
            _check_weights(model, run, step, distributed)
            yield save(step)
            last_ckpt_time = time.monotonic()

    token.check()
    if step > start_step or not ckpt.latest_checkpoint(run.state_dir):
        _check_weights(model, run, step, distributed)
        if stopped_early:
            yield from evaluate(step)
        yield save(step)
    return TrainResult(run.path, step, total, stopped_early, last_metrics)


# -- helpers ------------------------------------------------------------------------------------


def _reduce(window: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean of each named value over the window: one host sync per log interval."""
    names = sorted({k for w in window for k in w})
    if not names:
        return {}
    means = [torch.stack([w[k].detach().float().reshape(()) for w in window if k in w]).mean() for k in names]
    return dict(zip(names, torch.stack(means).tolist()))


def _info(
    dev_name: str, device: torch.device, throughput: float | None, step: int, total: int, batch: int
) -> dict[str, Any]:
    eta = (total - step) * batch / throughput if throughput else None
    return {
        "device": dev_name,
        "memory": memory_in_use(device),
        "images_per_s": throughput,
        "eta_s": eta,
    }


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
    ) -> None:
        self.run, self.config, self.enabled = run, config, enabled
        self.last_step: int | None = None
        self.real_ref = _diversity(real.float().div(127.5).sub(1).cpu())
        self.held_out = None
        if held_out is not None and len(held_out):
            x = torch.from_numpy(np.ascontiguousarray(held_out)).permute(0, 3, 1, 2)
            self.held_out = x.to(device).float().div(127.5).sub(1)

    def evaluate(self, model: GenerativeModel, step: int, total: int) -> Generator[Progress, None, None]:
        # Only rank 0 of a data-parallel run samples and writes; and each step once (a stop
        # right after a sample step would otherwise draw the same grid twice).
        if not self.enabled or step == self.last_step:
            return
        self.last_step = step
        model.eval()
        try:
            with torch.no_grad():
                samples = model.sample(self.config.samples, cpu_generator(self.config.seed + 1))
                metrics: dict[str, float] = {}
                if self.real_ref > 0:
                    metrics["diversity"] = _diversity(samples.float().cpu()) / self.real_ref
                if self.held_out is not None and Capability.LIKELIHOOD in model.info.capabilities:
                    bpd = torch.cat([model.bits_per_dim(chunk) for chunk in self.held_out.split(64)])
                    metrics["heldout_bpd"] = float(bpd.mean())
        finally:
            model.train()
        grid = make_grid(images_to_uint8(samples).numpy())
        save_png(self.run.samples_dir / f"{ckpt.checkpoint_name(step)}.png", grid)
        if metrics:
            self.run.append_metrics([{"step": step, "time": time.time(), **metrics}])
        yield Progress("train", step, total, image=grid, metrics=metrics, message=f"Samples at step {step}")


def _check_weights(model: GenerativeModel, run: RunFolder, step: int, distributed: Distributed) -> None:
    """Stop with a message naming them when any saved tensor is NaN or infinite: parameters,
    buffers (a batch-norm statistic can go bad while every loss stays finite), EMA copies and
    optimizer state. Every rank checks; all stop together."""
    bad = ckpt.nonfinite(ckpt.state_tensors(model))
    if distributed.any(bool(bad)):
        raise NonFiniteLoss(_diverged_message(run, step, [ckpt.describe_names(bad or ["another process's weights"])]))


def _diverged_message(run: RunFolder, step: int, names: list[str]) -> str:
    latest = ckpt.latest_checkpoint(run.state_dir)
    kept = f"The last good checkpoint (step {int(latest.name[5:])}) is kept" if latest else "No checkpoint was written"
    return (
        f"Training diverged at step {step}: {', '.join(names)} became NaN or infinite. "
        f"{kept}; no bad checkpoint was saved. Try a lower learning rate, then resume."
    )
