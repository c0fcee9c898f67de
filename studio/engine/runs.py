"""The run folder: the unit a user keeps.

```
<run>/
  config.json     family key, model and training settings, dataset fingerprint, versions
  model/          latest weights (safetensors) + studio.json, in the family's layout
  state/          complete, verified checkpoints (see studio.engine.checkpoint)
  metrics.jsonl   one JSON object per logged step; the live plots read the same stream
  samples/        sample grids over training time (step_00001234.png)
  continual/      a run continued on another folder (studio.engine.continual)
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

from studio.core import atomic, options
from studio.core.errors import CheckpointError, StudioError


class _TrainConfigMethods:
    """TrainConfig's methods; its fields come from :data:`studio.core.options.OPTIONS`."""

    model: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})

    def check(self) -> None:
        """Raise a :class:`studio.core.options.SettingError` naming the first option out of
        its type, range or choices. The engine calls it before it writes anything."""
        options.check_training(dataclasses.asdict(self))  # type: ignore[call-overload]
        if not isinstance(self.model, dict):
            raise options.SettingError(f"model must be a mapping of settings, not {self.model!r}.")


#: How to train: everything that is not the model's own architecture. One field per option in
#: :data:`studio.core.options.OPTIONS` (old config.json files lack newer keys and load with the
#: defaults, which train as before), and ``model``: overrides of the family's Config.
TrainConfig: Any = dataclasses.make_dataclass(
    "TrainConfig",
    [*options.dataclass_fields(), ("model", dict[str, Any], field(default_factory=dict))],
    bases=(_TrainConfigMethods,),
    namespace={"__module__": __name__},
)


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

    def check_new(self) -> None:
        """Refuse to start a new run here unless the folder is missing or empty: a new run
        writes model/, samples/ and metrics.jsonl, and must never overwrite or append to
        files the studio did not write for this run."""
        if self.exists():
            raise StudioError(
                f"{self.path} already holds a run; continue it with --resume (Resume in the "
                "window) or choose a new folder."
            )
        if self.path.exists() and not self.path.is_dir():
            raise StudioError(f"{self.path} is a file, not a folder; choose a new run folder.")
        if self.path.is_dir() and any(self.path.iterdir()):
            raise StudioError(
                f"{self.path} is not empty and is not a Studio run; choose an empty or new "
                "folder (nothing in it was changed)."
            )

    # -- config ----------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(
                f"{self.path} is not a Studio run folder (no config.json)."
            ) from None
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
