"""The training job really trains on the CPU: losses move, cancel, stop, resume, NaN, sampling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import make_tiny_dataset

from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine import checkpoint as ckpt
from studio.engine.runs import RunFolder, TrainConfig
from studio.engine.sample import sample_job
from studio.engine.train import train_job

TINY_GAN = {"latent_dim": 16, "width": 8}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=48, size=16, classes=2)


def config(data_dir, **kw) -> TrainConfig:
    base = dict(
        family="gan.dcgan",
        data=str(data_dir),
        resolution=16,
        batch_size=8,
        steps=20,
        seed=3,
        sample_every=10,
        checkpoint_every=10,
        log_every=1,
        samples=8,
        model=dict(TINY_GAN),
    )
    base.update(kw)
    return TrainConfig(**base)


def train(run_dir, cfg=None, token=None, on_progress=None, **kw):
    token = token or CancelToken()
    return run_sync(train_job(run_dir, token, cfg, **kw), token, on_progress)


def losses(run_dir) -> list[dict]:
    records, _ = RunFolder(run_dir).read_metrics()
    return [r for r in records if "loss_d" in r]


def test_dcgan_trains_and_writes_a_complete_run_folder(data_dir, tmp_path):
    seen: list[Progress] = []
    out = train(tmp_path / "run", config(data_dir, steps=40), on_progress=seen.append)
    assert out.status is Status.FINISHED, out.error
    assert out.result.step == 40 and not out.result.stopped_early
    run = RunFolder(tmp_path / "run")
    cfg = run.read_config()
    assert cfg["family"] == "gan.dcgan" and cfg["dataset"]["images"] == 48
    assert cfg["dataset"]["class_names"] == ["class_0", "class_1"]
    assert (run.model_dir / "model.safetensors").is_file()
    assert ckpt.latest_checkpoint(run.state_dir).name == "step_00000040"
    assert [p.name for p in run.sample_grids()][:2] == ["step_00000000.png", "step_00000010.png"]
    recs = losses(run.path)
    assert [r["step"] for r in recs] == list(range(1, 41))
    # The losses move: the discriminator learns to tell real from fake at first.
    first, last = recs[0], recs[-1]
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in recs)
    assert (
        abs(last["loss_g"] - first["loss_g"]) > 0.05 or abs(last["loss_d"] - first["loss_d"]) > 0.05
    )
    # Progress carried metrics, sample grids and status info.
    assert any(p.image is not None for p in seen)
    info = next(p.info for p in reversed(seen) if p.info)
    assert info["images_per_s"] > 0 and "CPU" in info["device"] and info["memory"] > 0


def test_cancel_stops_within_one_step_and_saves_nothing(data_dir, tmp_path):
    token = CancelToken()
    steps_seen = []

    def on_progress(p: Progress) -> None:
        if p.stage == "train" and p.metrics:
            steps_seen.append(p.step)
            if p.step == 5:
                token.cancel()

    out = train(
        tmp_path / "run", config(data_dir, steps=1000, checkpoint_every=1000), token, on_progress
    )
    assert out.status is Status.CANCELLED and out.result is None
    assert max(steps_seen) == 5
    assert max(r["step"] for r in losses(tmp_path / "run")) <= 6
    assert ckpt.latest_checkpoint(RunFolder(tmp_path / "run").state_dir) is None


def test_stop_keeps_a_final_checkpoint(data_dir, tmp_path):
    token = CancelToken()

    def on_progress(p: Progress) -> None:
        if p.stage == "train" and p.step == 7:
            token.stop()

    out = train(
        tmp_path / "run", config(data_dir, steps=1000, checkpoint_every=1000), token, on_progress
    )
    assert out.status is Status.FINISHED and out.result.stopped_early
    assert ckpt.latest_checkpoint(RunFolder(tmp_path / "run").state_dir).name == "step_00000007"


def test_resume_continues_bit_identically(data_dir, tmp_path):
    straight = train(tmp_path / "a", config(data_dir, steps=20, checkpoint_every=100))
    assert straight.ok

    token = CancelToken()

    def stop_at_8(p: Progress) -> None:
        if p.stage == "train" and p.step == 8 and p.metrics:
            token.stop()

    first = train(
        tmp_path / "b", config(data_dir, steps=20, checkpoint_every=100), token, stop_at_8
    )
    assert first.result.step == 8
    # Simulate a crash after step 8 had been logged further: extra lines are dropped on resume.
    RunFolder(tmp_path / "b").append_metrics([{"step": 9, "loss_d": 99.0, "loss_g": 99.0}])
    resumed = train(tmp_path / "b", None, steps=20)
    assert resumed.ok and resumed.result.step == 20

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 21))
    for ra, rb in zip(a, b):
        assert (ra["loss_d"], ra["loss_g"]) == (rb["loss_d"], rb["loss_g"]), ra["step"]
    wa = ckpt.load_file(str(RunFolder(tmp_path / "a").model_dir / "model.safetensors"))
    wb = ckpt.load_file(str(RunFolder(tmp_path / "b").model_dir / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_to_a_larger_step_count(data_dir, tmp_path):
    assert train(tmp_path / "run", config(data_dir, steps=5)).ok
    out = train(tmp_path / "run", None, steps=9)
    assert out.ok and out.result.step == 9
    assert RunFolder(tmp_path / "run").train_config().steps == 5  # the stored plan is not rewritten


def test_a_nan_loss_is_caught_and_no_nan_checkpoint_is_written(data_dir, tmp_path, monkeypatch):
    from studio.models.gan.dcgan import DCGAN

    real_step = DCGAN.train_step

    def poisoned(self, batch, ctx):
        out = real_step(self, batch, ctx)
        if ctx.step >= 12:
            with torch.no_grad():
                for p in self.generator.parameters():
                    p.fill_(float("nan"))
            out["loss_g"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(DCGAN, "train_step", poisoned)
    out = train(tmp_path / "run", config(data_dir, steps=30, checkpoint_every=10))
    assert out.status is Status.FAILED
    assert "diverged at step 13" in out.error and "step 10" in out.error
    run = RunFolder(tmp_path / "run")
    latest = ckpt.latest_checkpoint(run.state_dir)
    assert latest.name == "step_00000010"
    weights = ckpt.load_file(str(latest / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_an_empty_folder_fails_with_a_clear_message(tmp_path):
    (tmp_path / "empty").mkdir()
    out = train(tmp_path / "run", config(tmp_path / "empty"))
    assert out.status is Status.FAILED
    assert "empty" in out.error.lower() and "Traceback" not in out.error


def test_samples_are_reproducible_and_cancellable(data_dir, tmp_path):
    assert train(tmp_path / "run", config(data_dir, steps=4)).ok
    a = run_sync(sample_job(tmp_path / "run", 6, seed=11, device="cpu"))
    b = run_sync(sample_job(tmp_path / "run", 6, seed=11, device="cpu"))
    c = run_sync(sample_job(tmp_path / "run", 6, seed=12, device="cpu"))
    assert a.ok and a.result.shape == (6, 16, 16, 3) and a.result.dtype == np.uint8
    assert np.array_equal(a.result, b.result)
    assert not np.array_equal(a.result, c.result)
    token = CancelToken()
    token.cancel()
    assert run_sync(sample_job(tmp_path / "run", 6), token).status is Status.CANCELLED
    bad = run_sync(sample_job(tmp_path / "run", 2, temperature=0.5))
    assert bad.status is Status.FAILED and "does not take temperature" in bad.error


def test_config_json_is_plain_json_and_names_versions(data_dir, tmp_path):
    assert train(tmp_path / "run", config(data_dir, steps=2)).ok
    data = json.loads((tmp_path / "run" / "config.json").read_text())
    assert data["versions"]["torch"] == torch.__version__
    assert data["model"]["latent_dim"] == 16


def test_a_nan_only_in_a_batchnorm_statistic_fails_the_run_and_keeps_the_good_checkpoints(
    data_dir, tmp_path, monkeypatch
):
    """Every loss stays finite (training uses batch statistics) while a running mean is NaN:
    the run still stops, names the tensor, keeps the last good checkpoints and model/."""
    from studio.models.gan.dcgan import DCGAN

    real_step = DCGAN.train_step
    poisoned_buffer: list[str] = []

    def poisoned(self, batch, ctx):
        out = real_step(self, batch, ctx)
        if ctx.step == 12:
            name, buf = next((n, b) for n, b in self.named_buffers() if n.endswith("running_mean"))
            buf[0] = float("nan")
            poisoned_buffer.append(name)
        return out

    monkeypatch.setattr(DCGAN, "train_step", poisoned)
    run = RunFolder(tmp_path / "run")
    out = train(run.path, config(data_dir, steps=30, checkpoint_every=5, sample_every=5))
    assert out.status is Status.FAILED, out.error
    assert "diverged at step 15" in out.error and poisoned_buffer[0] in out.error
    assert "step 10" in out.error
    assert [p.name for p in ckpt.list_checkpoints(run.state_dir)] == [
        "step_00000005",
        "step_00000010",
    ]
    for folder in [*ckpt.list_checkpoints(run.state_dir), run.model_dir]:
        for file in folder.glob("*.safetensors"):
            tensors = ckpt.load_file(str(file))
            assert all(
                torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()
            ), file
    assert [p.name for p in run.sample_grids()][-1] == "step_00000010.png"  # no black grid


def test_a_checkpoint_is_never_written_with_a_nan_anywhere(tmp_path):
    """Parameters, buffers and optimizer state are all checked before a checkpoint counts."""
    from studio.core.errors import NonFiniteLoss
    from studio.models.base import Batch, StepContext
    from studio.models.gan.dcgan import DCGAN, DCGANConfig

    model = DCGAN(DCGANConfig(resolution=8, latent_dim=4, width=4))
    model.configure_optimizers()
    gen = torch.Generator().manual_seed(0)
    model.train_step(
        Batch(torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1), StepContext(step=0, generator=gen)
    )
    ckpt.save_checkpoint(tmp_path, model, 1, {})
    opt = next(iter(model.optimizers.values()))
    state = next(iter(opt.state.values()))
    state["exp_avg_sq"].view(-1)[0] = float("inf")
    with pytest.raises(NonFiniteLoss, match="exp_avg_sq of"):
        ckpt.save_checkpoint(tmp_path, model, 2, {}, keep=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_engine_refuses_a_non_empty_folder_that_is_not_a_run(data_dir, tmp_path):
    """Issue 15.3, for the window too: train_job itself writes only into a new or empty folder."""
    out = tmp_path / "mine"
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.safetensors").write_bytes(b"my weights")
    (out / "metrics.jsonl").write_bytes(b"my notes\n")
    result = train(out, config(data_dir, steps=2))
    assert result.status is Status.FAILED and "not empty and is not a Studio run" in result.error
    assert (out / "model" / "model.safetensors").read_bytes() == b"my weights"
    assert (out / "metrics.jsonl").read_bytes() == b"my notes\n"
    assert sorted(p.name for p in out.rglob("*")) == ["metrics.jsonl", "model", "model.safetensors"]

    (tmp_path / "a-file").write_bytes(b"x")
    assert "not a folder" in train(tmp_path / "a-file", config(data_dir, steps=2)).error

    empty = tmp_path / "empty-run"
    empty.mkdir()  # an existing empty folder is fine
    assert train(empty, config(data_dir, steps=2, sample_every=1000)).ok
    again = train(empty, config(data_dir, steps=2))
    assert again.status is Status.FAILED and "already holds a run" in again.error


@pytest.mark.parametrize(
    ("setting", "value"),
    [("checkpoint_every", 0), ("log_every", 0), ("sample_every", 0), ("batch_size", 0),
     ("steps", -5), ("batch_size", -3), ("accumulate", 0), ("lr_schedule", "fast"),
     ("holdout_fraction", 2.0), ("device", "gpu")],
)  # fmt: skip
def test_the_engine_checks_every_option_before_the_folder_exists(
    data_dir, tmp_path, setting, value
):
    """Issue 15.10: the window's path (train_job) validates like the command line."""
    out = tmp_path / "run"
    result = train(out, config(data_dir, **{setting: value}))
    assert result.status is Status.FAILED
    assert result.error.startswith(f"{setting} must be") and repr(value) in result.error
    assert result.details is None or "ZeroDivisionError" not in result.details
    assert not out.exists()


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_skips_a_corrupt_newest_checkpoint_and_says_so(data_dir, tmp_path, capsys):
    """One flipped byte in the newest checkpoint: resume uses the intact one beside it, and the
    command line prints which checkpoint was skipped and why."""
    from studio.cli.main import main

    run = RunFolder(tmp_path / "run")
    assert train(run.path, config(data_dir, steps=10, checkpoint_every=5)).ok
    flip_a_byte(run.state_dir / "step_00000010" / "model.safetensors")
    capsys.readouterr()
    assert main(["train", "--resume", str(run.path), "--steps", "12"]) == 0
    printed = capsys.readouterr()
    assert (
        "Skipped checkpoint step_00000010 is corrupt (model.safetensors does not match its "
        "checksum); resuming from step_00000005." in printed.out + printed.err
    )
    assert [r["step"] for r in losses(run.path)] == list(range(1, 13))  # steps 6-10 trained again
    # Step 10 was saved again over the corrupt copy; everything kept verifies.
    assert [p.name for p in ckpt.list_checkpoints(run.state_dir)] == [
        "step_00000010",
        "step_00000012",
    ]
    assert all(
        ckpt.is_complete(p, verify_hashes=True) for p in ckpt.list_checkpoints(run.state_dir)
    )


def test_resume_with_no_usable_checkpoint_fails_naming_each(data_dir, tmp_path):
    run = RunFolder(tmp_path / "run")
    assert train(run.path, config(data_dir, steps=10, checkpoint_every=5)).ok
    for name in ["step_00000005", "step_00000010"]:
        flip_a_byte(run.state_dir / name / "model.safetensors")
    out = train(run.path, None, steps=12)
    assert out.status is Status.FAILED
    assert "No checkpoint" in out.error and "step_00000005 is corrupt" in out.error
    assert "step_00000010 is corrupt" in out.error


def test_an_unknown_family_is_refused_before_the_folder_exists(data_dir, tmp_path):
    out = tmp_path / "run"
    result = train(out, config(data_dir, family="gan.nope"))
    assert result.status is Status.FAILED and result.error.startswith(
        "unknown model family 'gan.nope'"
    )
    assert result.details is None and not out.exists()


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_run_folder_gets_ordinary_permissions(data_dir, tmp_path, mask):
    """config.json, metrics, sample grids, checkpoints and model/: what an ordinary write gives
    (0666 & ~umask, folders 0777 & ~umask), so other tools and users can read them."""
    import os

    old = os.umask(mask)
    try:
        assert train(
            tmp_path / "run", config(data_dir, steps=2, sample_every=2, checkpoint_every=2)
        ).ok
    finally:
        os.umask(old)
    paths = [tmp_path / "run", *sorted((tmp_path / "run").rglob("*"))]
    wrong = {
        str(p): oct(p.stat().st_mode & 0o777) for p in paths
        if p.stat().st_mode & 0o777 != (0o777 if p.is_dir() else 0o666) & ~mask
    }  # fmt: skip
    assert (tmp_path / "run" / "model" / "model.safetensors") in paths and not wrong
