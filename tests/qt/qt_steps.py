"""Steps the window tests share: choose a dataset, set up a tiny model, wait for a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_dataset(qtbot, win, folder: Path) -> int:
    """Scan ``folder`` in the Dataset workspace; return the usable image count."""
    panel = win.dataset_panel
    with qtbot.waitSignal(panel.dataset_changed, timeout=30_000) as blocker:
        panel.set_folder(folder)
    return int(blocker.args[1])


def configure_tiny_dcgan(win, *, steps: int, sample_every: int = 5, log_every: int = 2) -> None:
    """A DCGAN small enough to train many steps a second on one CPU thread."""
    panel = win.train_panel
    assert panel.picker.set_current_key("gan.dcgan")
    panel.model_form.set_values({"latent_dim": 8, "width": 8})
    panel.options_form.set_values(
        {
            "steps": steps,
            "batch_size": 8,
            "sample_every": sample_every,
            "log_every": log_every,
            "checkpoint_every": 10_000,
            "device": "cpu",
        }
    )


def wait_job_finished(qtbot, win, timeout: int = 60_000) -> tuple[Any, Any]:
    """Block until the window's runner finishes its next job; return ``(handle, outcome)``."""
    with qtbot.waitSignal(win.runner.job_finished, timeout=timeout) as blocker:
        pass
    return blocker.args[0], blocker.args[1]


def make_metrics_run(path: Path, *, steps: int = 100, records: int = 0) -> Any:
    """A DCGAN run folder of ``steps`` planned steps with ``records`` metrics lines (loss_d = step)
    and nothing else: what a run trained elsewhere looks like while its metrics are synced."""
    from studio.engine.runs import RunFolder, TrainConfig

    run = RunFolder(path)
    path.mkdir(parents=True)
    run.write_config({"family": "gan.dcgan", "train": TrainConfig(steps=steps).to_dict()})
    run.append_metrics(
        [{"step": s, "time": 0.0, "loss_d": float(s)} for s in range(1, records + 1)]
    )
    return run


def small_latent_workspace(qtbot, app_settings, runner) -> Any:
    """An Explore workspace on the CPU, finding 2 directions from 32 samples (fast), on
    ``runner``."""
    from studio.qt.latent import LatentWorkspace

    app_settings.set_device_preference("cpu")
    ws = LatentWorkspace(runner, app_settings)
    ws.pca_samples, ws.pca_k = 32, 2
    qtbot.addWidget(ws)
    return ws
