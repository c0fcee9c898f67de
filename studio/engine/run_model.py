"""Opening a run folder's model, and the runs it builds on.

``load_run_model`` is the one way the engine opens a run: its saved ``model/``, else its
newest complete checkpoint, weights checked finite. A family with a base run setting
(:func:`studio.core.schema.run_setting`) opens its base run through the same function
(registered here as the models layer's run loader), and a run's record of its base runs (path
and weights hash, in ``model/studio.json``, the checkpoint and ``config.json``) is compared
with what is found: a missing or changed base run is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError

from studio.core.errors import BaseRunError, CheckpointError
from studio.core.schema import RunRequirement
from studio.engine import checkpoint as ckpt
from studio.engine.finite import check_finite
from studio.engine.runs import RunFolder
from studio.models import base_runs
from studio.models.base import MODEL_CONFIG, GenerativeModel
from studio.models.registry import get_family, load_model

MAX_DEPTH = 4  # runs on runs on runs...: deeper is a loop of base runs


def load_run_model(run_dir: str | Path, device: torch.device | str = "cpu") -> GenerativeModel:
    """The run's latest saved model (``model/``), or its newest complete checkpoint."""
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise CheckpointError(f"There is no run folder at {run.path}.")
    if (run.model_dir / MODEL_CONFIG).is_file():
        try:
            model = load_model(run.model_dir, device=device)
            model.eval()
            _check_finite(model, run.path, "model/")
            return model
        except BaseRunError:
            raise  # the base run is gone or changed: a checkpoint would not help
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
            fallback_reason = str(err)  # a damaged model/: the newest checkpoint may do
    else:
        fallback_reason = "no saved model"
    latest = ckpt.latest_checkpoint(run.state_dir)
    if latest is None:
        raise CheckpointError(
            f"The run at {run.path} has no usable weights yet ({fallback_reason})."
        )
    meta = ckpt.read_trainer_state(latest)
    family = get_family(meta["family"])
    model = family(family.Config.from_saved(meta["model_config"])).to(device)
    where = f"{run.path.name}'s checkpoint {latest.name}"
    base_runs.verify_base_records(model, meta.get("base_runs"), where)
    ckpt.load_checkpoint(latest, model, restore_rng=False)
    model.eval()
    _check_finite(model, run.path, f"state/{latest.name}/")
    return model


def _check_finite(model: GenerativeModel, run: Path, where: str) -> None:
    """Refuse weights holding a NaN or an infinity: they sample a black grid."""
    check_finite(
        {"": model},
        f"The run {run.name} ({where})",
        "train it again, or resume it from a checkpoint saved before the values broke.",
    )


_depth = [0]


def load_base_run(path: Path, requires: RunRequirement, label: str) -> GenerativeModel:
    """A base run's model for a run setting (the models layer's run loader), on the CPU;
    every failure a :class:`BaseRunError` naming the run and the setting."""
    if not path.is_dir() or not RunFolder(path).config_path.is_file():
        what = "is missing" if not path.exists() else "is not a run folder (no config.json)"
        raise BaseRunError(
            f"The base run {path} ('{label}': {requires.what}) {what}. Choose an existing "
            "run, or put this one back where it was."
        )
    if _depth[0] >= MAX_DEPTH:
        raise BaseRunError(f"The base run {path} builds on runs more than {MAX_DEPTH} deep.")
    _depth[0] += 1
    try:
        return load_run_model(path, "cpu")
    except BaseRunError:
        raise
    except (CheckpointError, OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
        raise BaseRunError(f"The base run {path} ('{label}') cannot be opened: {err}") from None
    finally:
        _depth[0] -= 1


base_runs.set_run_loader(load_base_run)
