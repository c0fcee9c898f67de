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
from studio.core.errors import NonFiniteLoss, StudioError
from studio.core.jobs import CancelToken, Progress
from studio.core.schema import file_settings
from studio.engine import checkpoint as ckpt
from studio.engine import file_inputs as _registers_file_readers  # noqa: F401
from studio.engine import live, tensorboard
from studio.engine.batch_finder import fit_batch_size
from studio.engine.continual import HELDOUT_IMAGES, Continual, load_continual
from studio.engine.data import ImageDataset
from studio.engine.device import (
    autocast_factory,
    device_name,
    memory_in_use,
    precision_message,
    resolve_device,
    resolve_precision,
    step_generator,
)
from studio.engine.distributed import Distributed
from studio.engine.monitor import Monitor
from studio.engine.monitor import save_png as save_png  # re-exported: it was defined here
from studio.engine.pairs import PairedImages, UnpairedImages
from studio.engine.perceptual import attach_perceptual
from studio.engine.run_data import (  # noqa: F401 - prepare_dataset, is_paired: used from here
    RunData,
    batches_for,
    held_out,
    is_paired,
    prepare_dataset,
    read_data,
    two_folder_record,
)
from studio.engine.run_model import load_run_model as _registers_base_loader  # noqa: F401
from studio.engine.runs import RunFolder, TrainConfig
from studio.engine.schedule import StepRunner
from studio.engine.speed import apply_speed, release_freed_memory
from studio.models.base import Capability, GenerativeModel
from studio.models.base_runs import verify_base_records
from studio.models.export import ExportContext
from studio.models.registry import get_family


@dataclass(frozen=True)
class TrainResult:
    run: Path
    step: int
    steps: int
    stopped_early: bool
    metrics: dict[str, float]


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
    if previous is not None:  # resuming: settings added since keep the run's saved values
        overrides = family.Config.resumed(overrides, previous)
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


def _build(
    data: RunData, config: TrainConfig, device: torch.device, previous: dict[str, Any] | None
) -> GenerativeModel:
    model = build_model(config, len(data.dataset.class_names), device, data.captions, previous)
    model.prepare_for_data(len(data.dataset))
    return model


def check_family_data(config: TrainConfig) -> None:
    """Folder B (``data_b``) only for a family that trains on pairs, and always for one that
    learns from two unpaired folders: one sentence otherwise."""
    family = get_family(config.family)
    caps = family.info.capabilities
    if config.data_b and Capability.SINGLE_FOLDER in caps:
        raise StudioError(
            f"{family.info.display_name} trains on one folder of images and makes each "
            "image's input itself; leave out folder B (--data-b)."
        )
    if config.data_b and Capability.PAIRED not in caps:
        raise StudioError(
            f"{family.info.display_name} trains on one folder of images; folder B (--data-b) "
            "is for image-to-image families that learn from pairs."
        )
    if Capability.UNPAIRED in caps and not config.data_b:
        raise StudioError(
            f"{family.info.display_name} learns from two folders of images, A and B: give "
            "folder B too (--data-b DIR; in the window, Folder B)."
        )
    check_file_settings(family.Config, config.model)


def check_file_settings(config_cls: type, model: dict[str, Any]) -> None:
    """Every file a family's settings name (``file_setting``: a style image, a VGG-19 file)
    chosen and present, before any image is read or folder written: one sentence naming the
    setting otherwise (the family reads the files later, with their own checks)."""
    import dataclasses

    labels = {f.name: f.metadata.get("label", f.name) for f in dataclasses.fields(config_cls)}
    for name, accepts in file_settings(config_cls).items():
        value = str(model.get(name) or "").strip()
        label = labels.get(name, name)
        if not value:
            raise StudioError(
                f"Choose {accepts.what} for '{label}' (studio train --set {name}=PATH; in the "
                "window, the Train form's setting)."
            )
        if not Path(value).expanduser().exists():
            where = f" {accepts.where}" if accepts.where else ""
            raise StudioError(f"There is no file at {value} ('{label}').{where}")


def _check_config(config: TrainConfig, run: RunFolder, resuming: bool) -> None:
    """Every option in its declared range (studio.core.options), or one clear message; a
    resumed run's settings are read back from its config.json, which may have been edited."""
    try:
        config.check()
        try:
            get_family(config.family)
        except KeyError as err:
            raise StudioError(str(err.args[0]) if err.args else "unknown model family") from None
        check_family_data(config)
    except StudioError as err:
        raise StudioError(f"{run.config_path}: {err}" if resuming else str(err)) from None


def train_job(
    run_dir: str | Path,
    token: CancelToken,
    config: TrainConfig | None = None,
    *,
    steps: int | None = None,
    dataset: ImageDataset | PairedImages | UnpairedImages | None = None,
    cache_dir: Path | None = None,
    device_override: str | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train a new run (``config`` given) or resume ``run_dir`` (``config`` None).

    ``dataset``: images already decoded (a paired family's are :class:`PairedImages`, an
    unpaired one's :class:`UnpairedImages`); None reads the run's folders.

    ``steps`` sets the total to reach (a resumed run trains on to it). ``token.stop()`` ends
    early and keeps a final checkpoint; ``token.cancel()`` aborts without saving.
    """
    distributed = Distributed.from_env(device_override or (config.device if config else "auto"))
    run_dir = distributed.agree(str(run_dir))  # rank 0's name: each launched process has a clock
    run = tensorboard.mirror(RunFolder(run_dir))  # metrics also to <run>/tensorboard/ if installed
    cleanup: list[Callable[[], None]] = []  # what _train set up that must end with the run
    try:
        result = yield from _train(
            run, token, config, steps, dataset, cache_dir, device_override, distributed, cleanup
        )
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
    dataset: ImageDataset | PairedImages | UnpairedImages | None,
    cache_dir: Path | None,
    device_override: str | None,
    distributed: Distributed,
    cleanup: list[Callable[[], None]],
) -> Generator[Progress, None, TrainResult]:
    """The run, as its named steps: settle the settings, read the images, build the model,
    resume it or start the folder, set up the loop, train."""
    resuming = config is None
    config = _settle_config(run, config, steps, device_override)
    device = distributed.device or resolve_device(config.device)
    distributed.barrier()  # every rank has checked the folder before rank 0 writes to it
    data = yield from read_data(config, dataset, cache_dir)
    previous = run.read_config().get("model") if resuming else None
    if config.auto_batch and not resuming:  # CUDA: the largest batch that fits (batch_finder)
        config = yield from fit_batch_size(
            config, lambda c: _build(data, c, device, previous), device, distributed.enabled
        )
    model = _build(data, config, device, previous)
    if resuming:  # the runs it builds on are those it was made from
        verify_base_records(model, run.read_config().get("base_runs"), str(run.config_path))
        start_step, trainer_state = yield from _resume(run, model, data.dataset, distributed)
    else:
        start_step, trainer_state = 0, {}
        _start_folder(run, config, model, data, distributed)
    # A run switched to another folder (studio.engine.continual): its replay model and EWC.
    switched = (
        load_continual(run, model, device, distributed.seed(config.seed)) if resuming else None
    )
    if switched is not None:
        cleanup.append(lambda: switched.close(model))
    # A family that asks for a perceptual loss gets the studio's feature function.
    yield from attach_perceptual(model, data, config.resolution, device, cache_dir)
    trainer = _Trainer(
        run, token, config, model, data, device, distributed, start_step, trainer_state, cleanup,
        switched,
    )  # fmt: skip
    return (yield from trainer.train())


def _settle_config(
    run: RunFolder, config: TrainConfig | None, steps: int | None, device_override: str | None
) -> TrainConfig:
    """The settings this run trains with: a new run's (its folder missing or empty) or those
    saved in a resumed run's folder, with the new total and device; all checked."""
    resuming = config is None
    if config is None:
        config = run.train_config()
    else:
        run.check_new()  # missing or empty: never write over files that are not this run's
    if steps is not None:
        config = replace(config, steps=int(steps))
    if device_override:
        config = replace(config, device=device_override)
    _check_config(config, run, resuming)  # every option in range before anything is written
    return config


def _resume(
    run: RunFolder, model: GenerativeModel, dataset: ImageDataset, distributed: Distributed
) -> Generator[Progress, None, tuple[int, dict[str, Any]]]:
    """Load the newest checkpoint that verifies (saying which were skipped and why) and drop
    the metrics logged after it; (its step, the trainer's saved state)."""
    start_step, trainer_state = 0, {}
    meta, skipped = ckpt.load_latest(run.state_dir, model)
    for line in skipped:
        yield Progress("load", message=line)
    if meta is not None:
        start_step, trainer_state = int(meta["step"]), dict(meta.get("trainer", {}))
    if distributed.is_main:
        run.truncate_metrics(start_step)
    if run.read_config().get("dataset", {}).get("fingerprint") != dataset.fingerprint:
        yield Progress("load", message="Note: the dataset folder changed since this run began.")
    return start_step, trainer_state


def _start_folder(
    run: RunFolder,
    config: TrainConfig,
    model: GenerativeModel,
    data: RunData,
    distributed: Distributed,
) -> None:
    """A new run's folder and its config.json (rank 0 alone writes)."""
    if not distributed.is_main:
        return
    dataset = data.dataset
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(
        {
            "family": config.family,
            "train": config.to_dict(),
            "model": model.config.to_dict(),
            **({"base_runs": model.base_records} if model.base_records else {}),
            "dataset": {
                "path": str(config.data),
                "fingerprint": dataset.fingerprint,
                "images": len(dataset),
                "train_images": int(len(data.train_idx)),
                "held_out_images": int(len(data.held_idx)),
                "class_names": list(dataset.class_names),
                "skipped": len(dataset.skipped),
                **two_folder_record(config, data),
            },
            "versions": {"studio": __version__, "torch": torch.__version__},
            "world_size": distributed.world_size,
        }
    )


class _Trainer:
    """The step loop of one run and what it keeps between steps."""

    def __init__(
        self,
        run: RunFolder,
        token: CancelToken,
        config: TrainConfig,
        model: GenerativeModel,
        data: RunData,
        device: torch.device,
        distributed: Distributed,
        start_step: int,
        trainer_state: dict[str, Any],
        cleanup: list[Callable[[], None]],
        continual: Continual | None = None,
    ) -> None:
        self.run, self.token, self.config, self.model = run, token, config, model
        self.class_names = tuple(str(c) for c in data.dataset.class_names)
        self.continual = continual
        self.device, self.distributed = device, distributed
        self.seed = distributed.seed(config.seed)
        self.speed = apply_speed(
            model, config, device
        )  # after the checkpoint: converted optimizers keep their state
        cleanup.append(self.speed.close)  # the shard threads
        distributed.prepare(model, model.optimizers)
        self.live_run = live.register(
            run.path, model, token
        )  # peeks use these weights between steps
        self.images = batches_for(data, model, config, device)
        self.autocast = autocast_factory(device, config.precision)
        fp16 = resolve_precision(device, config.precision) == "fp16"  # needs loss scaling
        self.runner = StepRunner(
            model, config, self.autocast, self.images.batch_size, self.speed, grad_scaling=fp16
        )  # schedule, clipping, accumulation
        self.runner.load_scaler_state(
            trainer_state.get("grad_scalers", {})
        )  # a resumed fp16 run's loss scales
        self.dev_name = device_name(device)
        self.start_step = self.step = start_step
        self.total = max(config.steps, start_step)
        self.live_run.step, self.live_run.total = start_step, self.total  # for waiting jobs
        held, held_sources = held_out(
            data, from_training=Capability.SINGLE_FOLDER in model.info.capabilities
        )
        self.monitor = Monitor(
            run,
            config,
            self.images.data[: min(64, self.images.n)],
            held,
            device,
            enabled=distributed.is_main,
            held_sources=held_sources,
            folders=self._folders(data),
        )
        self.monitor.make_inputs(model)  # a single-folder image-to-image run's inputs
        self.live_run.inputs = self.monitor.held_sources  # what peeks translate
        self.window: list[dict[str, torch.Tensor]] = []
        self.throughput: float | None = trainer_state.get("throughput")
        self.t_log, self.step_log = time.monotonic(), self.step
        self.last_ckpt_time = time.monotonic()
        self.last_metrics: dict[str, float] = {}

    def _folders(self, data: RunData) -> dict[int, np.ndarray] | None:
        """A continual run's held-out images of each folder, this one's last."""
        if self.continual is None:
            return None
        held = data.dataset.images[data.held_idx[:HELDOUT_IMAGES]]
        return {**self.continual.folders, self.continual.current: held}

    def train(self) -> Generator[Progress, None, TrainResult]:
        config, step, total = self.config, self.step, self.total
        if self.images.batch_size < config.batch_size:
            yield Progress(
                "load",
                message=f"Batch size lowered to {self.images.batch_size}: that is every training image.",
            )
        if (line := precision_message(self.device, config.precision)) is not None:
            yield Progress("load", message=line)
        for line in self.runner.take_messages():
            yield Progress("load", message=line)
        for line in self.model.training_notes():  # what the family chose from the data
            yield Progress("load", message=line)
        was_training = self.model.training
        self.model.eval()
        if self.images.compute_features(self.model.training_features):  # once, not per step
            yield Progress("load", message="Computed the training images' features once.")
        self.model.train(was_training)
        yield Progress(
            "train",
            step,
            total,
            message=f"Training {self.model.info.display_name} on {self.dev_name}",
        )
        if step == 0 and total > 0:
            yield from self.monitor.evaluate(self.model, step, total)
        stopped_early = False
        while self.step < total:
            if self.distributed.any(self.token.stop_requested):
                self.token.check()
                stopped_early = True
                break
            if self.token.paused:
                yield from self._pause()
                continue
            yield from self._one_step()
        self.token.check()
        if self.step > self.start_step or not ckpt.latest_checkpoint(self.run.state_dir):
            _check_weights(self.model, self.run, self.step, self.distributed)
            if stopped_early:
                yield from self._evaluate(self.step)
            yield self._save(self.step)
        return TrainResult(self.run.path, self.step, total, stopped_early, self.last_metrics)

    def _pause(self) -> Generator[Progress, None, None]:
        step, total = self.step, self.total
        yield Progress("paused", step, total, message="Paused", info=self._info())
        yield from self.live_run.while_paused(
            self.token, Progress("paused", step, total)
        )  # peeks run meanwhile
        self.t_log, self.step_log = time.monotonic(), step

    def _one_step(self) -> Generator[Progress, None, None]:
        config, total = self.config, self.total
        gen = step_generator(self.device, self.seed, self.step)
        batch = self.images.batch(self.step, gen, self.distributed.shard)
        if self.continual is not None:  # a share generated by the model as it was
            batch = self.continual.mix(batch, self.step)
        self.model.train()
        self.window.extend(
            self.runner.run(batch, self.step, gen)
        )  # one dict of losses per micro-batch
        if self.continual is not None and self.window:
            self.window[-1].update(self.continual.metrics())
        for line in self.runner.take_messages():  # e.g. a compile that fell back to eager
            yield Progress("train", self.step, total, message=line)
        self.step += 1
        step = self.step
        self.live_run.step = step  # what a job waiting for the run to end says
        logged = step % config.log_every == 0 or step == total
        metrics = self._log(step) if logged else {}
        info = {**self._info(), **self.live_run.info(step)} if logged else {}
        yield Progress("train", step, total, metrics=metrics, info=info)
        if step % config.sample_every == 0 or step == total:
            yield from self._evaluate(step)
        minutes = (time.monotonic() - self.last_ckpt_time) / 60
        if step % config.checkpoint_every == 0 or minutes >= config.checkpoint_minutes:
            _check_weights(self.model, self.run, step, self.distributed)
            yield self._save(step)
            self.last_ckpt_time = time.monotonic()

    def _log(self, step: int) -> dict[str, float]:
        """The logged interval's mean losses (one host sync), checked finite, with speed and
        memory; appended to metrics.jsonl."""
        metrics = self.distributed.mean_metrics(_reduce(self.window))
        self.window = []
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLoss(_diverged_message(self.run, step, bad))
        now = time.monotonic()
        rate = (step - self.step_log) * self.images.batch_size / max(now - self.t_log, 1e-9)
        self.throughput = rate if self.throughput is None else 0.7 * self.throughput + 0.3 * rate
        self.t_log, self.step_log = now, step
        metrics.update(
            images_per_s=rate, memory_mb=memory_in_use(self.device) / 2**20
        )  # plotted too
        if self.distributed.is_main:
            self.run.append_metrics([{"step": step, "time": time.time(), **metrics}])
        self.last_metrics = metrics
        return metrics

    def _info(self) -> dict[str, Any]:
        info = _info(
            self.dev_name,
            self.device,
            self.throughput,
            self.step,
            self.total,
            self.images.batch_size,
        )
        if phase := self.model.training_phase():  # a curriculum's stage, for the status line
            info["phase"] = phase
        return info

    def _evaluate(self, step: int) -> Generator[Progress, None, None]:
        _check_weights(
            self.model, self.run, step, self.distributed
        )  # no black grid from non-finite weights
        yield from self.monitor.evaluate(self.model, step, self.total)

    def _save(self, step: int) -> Progress:
        self.distributed.broadcast_state(
            self.model
        )  # batch-norm statistics may differ between ranks
        if self.distributed.is_main:
            state = {"throughput": self.throughput, "grad_scalers": self.runner.scaler_state()}
            ckpt.save_checkpoint(self.run.state_dir, self.model, step, state)
            self.model.save(self.run.model_dir)
            self.model.save_run_files(self.run.model_dir, ExportContext(self.class_names))
        self.distributed.barrier()
        return Progress("train", step, self.total, message=f"Checkpoint saved at step {step}")


# -- helpers ------------------------------------------------------------------------------------


def _reduce(window: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean of each named value over the window: one host sync per log interval."""
    names = sorted({k for w in window for k in w})
    if not names:
        return {}
    means = [
        torch.stack([w[k].detach().float().reshape(()) for w in window if k in w]).mean()
        for k in names
    ]
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


def _check_weights(
    model: GenerativeModel, run: RunFolder, step: int, distributed: Distributed
) -> None:
    """Stop with a message naming them when any saved tensor is NaN or infinite: parameters,
    buffers (a batch-norm statistic can go bad while every loss stays finite), EMA copies and
    optimizer state. Every rank checks; all stop together."""
    bad = ckpt.nonfinite(ckpt.state_tensors(model))
    if distributed.any(bool(bad)):
        raise NonFiniteLoss(
            _diverged_message(
                run, step, [ckpt.describe_names(bad or ["another process's weights"])]
            )
        )


def _diverged_message(run: RunFolder, step: int, names: list[str]) -> str:
    latest = ckpt.latest_checkpoint(run.state_dir)
    kept = (
        f"The last good checkpoint (step {int(latest.name[5:])}) is kept"
        if latest
        else "No checkpoint was written"
    )
    return (
        f"Training diverged at step {step}: {', '.join(names)} became NaN or infinite. "
        f"{kept}; no bad checkpoint was saved. Try a lower learning rate, then resume."
    )
