"""The run folder: the unit a user keeps.

```
<run>/
  config.json     family key, model and training settings, dataset fingerprint, versions
  model/          latest weights (safetensors) + studio.json, in the family's layout
  state/          complete, verified checkpoints (see studio.engine.checkpoint)
  metrics.jsonl   one JSON object per logged step; the live plots read the same stream
  samples/        sample grids over training time (step_00001234.png)
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core import atomic
from studio.core.errors import CheckpointError


@dataclass
class TrainConfig:
    """How to train: everything that is not the model's own architecture."""

    family: str = "gan.dcgan"
    data: str = ""
    resolution: int = 32
    batch_size: int = 64
    steps: int = 2000
    seed: int = 0
    flip: bool = True
    sample_every: int = 100
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    log_every: int = 10
    samples: int = 64
    holdout_fraction: float = 0.05
    device: str = "auto"
    precision: str = "auto"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the family's Config
    # Speed and optimisation (studio.engine.speed, studio.engine.schedule; docs/performance.md).
    # Old config.json files lack these keys and load with the defaults, which train as before.
    tf32: str = "auto"  # auto (on with CUDA) | on | off
    channels_last: str = "auto"  # auto (convolutional families on CUDA) | on | off
    fused_adamw: str = "auto"  # auto (fused where torch has it: CUDA, CPU) | on (else foreach) | off
    compile: str = "off"  # off | auto (CUDA) | on: torch.compile, eager if it fails
    cuda_graphs: bool = False  # compile with CUDA graphs ("reduce-overhead"); CUDA only
    grad_clip: float = 0.0  # max gradient norm; 0 = the family's default
    warmup_steps: int = 0  # linear learning-rate warm-up; 0 = the family's default
    lr_schedule: str = "constant"  # constant | cosine (decay to min_lr_fraction at `steps`)
    min_lr_fraction: float = 0.1
    accumulate: int = 1  # micro-batches per optimizer step (the batch is split)
    auto_batch: bool = False  # CUDA: halve batch_size until a step fits in memory
    cpu_threads: int = 0  # torch threads on the CPU; 0 = auto
    reuse_cpu_memory: str = "auto"  # auto (CPU training, glibc) | on | off: no page faults per step
    fast_dropout: str = "auto"  # auto (CPU) | on | off: dropout masks 4 elements per random draw
    lean_unet: str = "auto"  # auto (CPU) | on | off: leaner forwards for diffusers' UNet blocks
    cpu_shards: int = 1  # CPU: split each batch across this many threads (DDPM); 1 = off

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class RunFolder:
    CONFIG = "config.json"
    METRICS = "metrics.jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def state_dir(self) -> Path:
        return self.path / "state"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    def exists(self) -> bool:
        return self.config_path.is_file()

    # -- config ----------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{self.path} is not a Studio run folder (no config.json).") from None
        except ValueError as err:
            raise CheckpointError(f"The run's config.json is damaged: {err}") from err

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.read_config()["train"])

    def write_config(self, data: dict[str, Any]) -> None:
        atomic.write_json(self.config_path, data)

    # -- metrics ---------------------------------------------------------------------------
    def append_metrics(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        lines = "".join(json.dumps(r, allow_nan=True) + "\n" for r in records)
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()

    def read_metrics(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Records from byte ``offset`` on, and the offset after the last complete line.

        A half-written last line (a run still writing, or a crash) is left for the next read.
        """
        try:
            with open(self.metrics_path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        records = []
        for line in data[:end].splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records, offset + end

    def truncate_metrics(self, last_step: int) -> None:
        """Drop records past ``last_step`` (logged after the checkpoint a resume starts from)."""
        records, _ = self.read_metrics()
        kept = [r for r in records if int(r.get("step", 0)) <= last_step]
        atomic.write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def sample_grids(self) -> list[Path]:
        if not self.samples_dir.is_dir():
            return []
        return sorted(self.samples_dir.glob("step_*.png"))


def new_run_path(base: Path, family: str, name: str | None = None) -> Path:
    """A fresh folder name under ``base``: ``2026-11-22_1405_gan-dcgan`` (or ``name``)."""
    stem = name or f"{time.strftime('%Y-%m-%d_%H%M%S')}_{family.replace('.', '-')}"
    stem = re.sub(r"[^\w.-]+", "_", stem)
    path, i = base / stem, 1
    while path.exists():
        i += 1
        path = base / f"{stem}_{i}"
    return path


@dataclass(frozen=True)
class RunSummary:
    path: Path
    family: str
    step: int
    steps: int
    data: str


def list_runs(base: Path) -> list[RunSummary]:
    """Run folders under ``base``, newest first; damaged ones are skipped."""
    from studio.engine.checkpoint import latest_checkpoint, read_trainer_state

    out = []
    if not base.is_dir():
        return out
    for child in base.iterdir():
        run = RunFolder(child)
        if not run.exists():
            continue
        try:
            cfg = run.train_config()
            latest = latest_checkpoint(run.state_dir)
            step = read_trainer_state(latest)["step"] if latest else 0
        except (CheckpointError, KeyError, TypeError):
            continue
        out.append(RunSummary(child, cfg.family, step, cfg.steps, cfg.data))
    out.sort(key=lambda r: r.path.stat().st_mtime, reverse=True)
    return out
