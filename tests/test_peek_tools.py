"""Explore's tasks and Compare's panels as peeks (engine level, no Qt): between training steps
they use the live weights and leave training bit-identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_dataset, tiny_train_config
from safetensors.torch import load_file

from studio.core.jobs import CancelToken, Progress, run_sync
from studio.engine import peek
from studio.engine.train import train_job

STEPS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("peektools") / "d", n=16, size=16)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state = sorted((run / "state").glob("step_*"))[-1]
    out: dict[str, torch.Tensor] = {}
    for f in sorted(state.glob("*.safetensors")):
        if f.name != "rng.safetensors":
            out.update({f"{f.name}/{k}": v for k, v in load_file(str(f)).items()})
    return out


def _explore(space) -> object:
    """A GAN's model tasks: principal directions, a strip, a projection (gradients in z)."""
    from studio.engine.latent import interpolate
    from studio.engine.latent_directions import directions_job
    from studio.engine.latent_project import project_job

    dirs = yield from directions_job(space, 16, 2, seed=0)
    z = space.prior_sample(2, seed=1)
    strip = space.decode(interpolate(z[0], z[1], 3))
    proj = yield from project_job(space, strip[1], steps=3, candidates=2)
    return dirs, strip, proj


def test_explore_tasks_and_a_compare_panel_between_steps_leave_training_identical(tmp_path, data):
    from studio.engine.compare import CompareSettings, prepare_compare

    plain = tmp_path / "plain"
    config = tiny_train_config("gan.dcgan", data, steps=STEPS, holdout_fraction=0.25)
    assert run_sync(train_job(plain, CancelToken(), config)).ok

    run = tmp_path / "peeked"
    settings = CompareSettings(runs=[plain, run], n=4, seed=2, device="cpu", extractor_steps=5)
    seen: dict[int, tuple] = {}

    def on_progress(progress: Progress) -> None:  # the engine thread's interleaving point
        if progress.stage != "train" or progress.step not in (2, 3) or progress.step in seen:
            return
        explored = run_sync(peek.latent_peek(run, _explore))
        assert explored.ok, explored.details
        prep = run_sync(prepare_compare(settings))
        assert prep.ok, prep.details
        panel = run_sync(peek.compare_panel_peek(prep.result, 1))
        assert panel.ok, panel.details
        seen[progress.step] = (explored.result, panel.result)

    # A first checkpoint at step 1, so the compared run is a Studio run with saved weights.
    token = CancelToken()
    peeked_config = tiny_train_config(
        "gan.dcgan", data, steps=STEPS, holdout_fraction=0.25, checkpoint_every=1
    )
    out = run_sync(train_job(run, token, peeked_config), token, on_progress)
    assert out.ok, out.details
    assert _weights(plain).keys() == _weights(run).keys()
    for name, tensor in _weights(plain).items():
        assert torch.equal(tensor, _weights(run)[name]), f"{name} differs"

    for step, (explored, panel) in seen.items():
        assert explored.weights == peek.Weights(True, step)
        assert panel.weights == peek.Weights(True, step) and panel.panel.step == step
        dirs, strip, proj = explored.value
        assert dirs.vectors.shape == (2, 8) and strip.shape == (3, 16, 16, 3)
        assert np.isfinite(proj.error)
    (_, a), (_, b) = seen[2], seen[3]
    assert not np.array_equal(a.panel.samples, b.panel.samples)  # the weights moved on

    # Training over: the same task reads the saved model, and says which step it is.
    after = run_sync(peek.latent_peek(run, _explore))
    assert after.ok and after.result.weights == peek.Weights(False, STEPS)
