"""Training precision: bf16 where the GPU has it, fp16 with gradient scaling where it does not,
fp32 on the CPU. The scaling logic runs here on the CPU (power-of-two scales are exact in fp32,
so scaled training must equal plain training; an overflow must skip the step)."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_MODELS, make_tiny_dataset, tiny_train_config

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, run_sync
from studio.engine import device as dev
from studio.engine.schedule import StepRunner
from studio.engine.speed import parse_options
from studio.engine.train import train_job
from studio.models.base import Batch
from studio.models.registry import get_family

EAGER = dict(tf32="off", channels_last="off", fused_adamw="off", compile="off")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=24, size=16, classes=2)


def tiny(key: str, **model):
    family = get_family(key)
    torch.manual_seed(0)
    m = family(family.Config.from_dict({**TINY_MODELS[key], **model, "resolution": 16}))
    m.configure_optimizers()
    m.remember_base_lrs()
    return m


def steps(model, runner, n=3):
    out = []
    for step in range(n):
        x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(step)) * 2 - 1
        labels = torch.arange(8) % 2 if model.config.num_classes else None
        losses = runner.run(Batch(x, labels), step, torch.Generator().manual_seed(100 + step))
        out.append({k: float(v) for k, v in losses[-1].items()})
    return out


# -- which precision ------------------------------------------------------------------------------


def test_precision_is_fp32_on_the_cpu_and_bf16_or_fp16_on_a_gpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for choice in dev.PRECISION_CHOICES:
        assert dev.resolve_precision(cpu, choice) == "fp32"
    monkeypatch.setattr(dev, "bf16_native", lambda d: True)
    assert [dev.resolve_precision(cuda, p) for p in ("auto", "bf16", "fp16", "fp32")] == [
        "bf16",
        "bf16",
        "fp16",
        "fp32",
    ]
    assert dev.autocast_factory(cuda, "auto").keywords["dtype"] is torch.bfloat16
    monkeypatch.setattr(dev, "bf16_native", lambda d: False)  # a pre-Ampere card
    assert [dev.resolve_precision(cuda, p) for p in ("auto", "bf16", "fp16", "fp32")] == [
        "fp16",
        "fp16",
        "fp16",
        "fp32",
    ]
    assert dev.autocast_factory(cuda, "auto").keywords["dtype"] is torch.float16
    assert "gradient scaling (this GPU has no bf16)" in dev.precision_message(cuda, "auto")
    assert dev.precision_message(cpu, "auto") is None
    assert "CUDA GPUs only" in dev.precision_message(cpu, "fp16")
    with pytest.raises(StudioError, match="precision must be one of"):
        dev.resolve_precision(cuda, "fp8")


def test_precision_is_a_train_option():
    assert parse_options(["precision=fp16"]) == {"precision": "fp16"}
    with pytest.raises(StudioError, match="precision must be one of"):
        parse_options(["precision=half"])


# -- gradient scaling -----------------------------------------------------------------------------


@pytest.mark.parametrize("key, model", [
    ("diffusion.ddpm", {}),
    ("vae.conv", {}),
    ("gan.wgan_gp", {}),  # the gradient penalty's inner gradient is scaled too
    ("gan.dcgan", {"r1_gamma": 1.0}),  # and R1's
])  # fmt: skip
def test_scaled_training_equals_plain_training_in_fp32(key, model, data_dir):
    cfg = tiny_train_config(key, data_dir, **EAGER)
    plain = steps(m := tiny(key, **model), StepRunner(m, cfg, _fp32, 8))
    scaled_runner = StepRunner(s := tiny(key, **model), cfg, _fp32, 8, grad_scaling=True)
    assert set(scaled_runner.grad_scalers) == set(s.optimizers)
    scaled = steps(s, scaled_runner)
    for a, b in zip(plain, scaled):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k
    for p, q in zip(m.parameters(), s.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def _fp32():
    return torch.autocast("cpu", enabled=False)


def test_an_overflowing_step_is_skipped_and_the_scale_lowered(data_dir):
    cfg = tiny_train_config("vae.conv", data_dir, **EAGER)
    model = tiny("vae.conv")
    runner = StepRunner(model, cfg, _fp32, 8, grad_scaling=True)
    # A scale that turns the scaled loss into inf, backing off far in one step.
    runner.grad_scalers["vae"] = torch.amp.GradScaler(
        "cpu", init_scale=3e38, backoff_factor=2.0**-100
    )
    before = [p.detach().clone() for p in model.parameters()]
    steps(model, runner, n=1)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))  # skipped
    assert runner.grad_scalers["vae"].get_scale() < 1e10
    steps(model, runner, n=1)
    assert not all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_fp16_autocast_with_scaling_trains(data_dir):
    cfg = tiny_train_config("diffusion.ddpm", data_dir, **EAGER)
    model = tiny("diffusion.ddpm")
    fp16 = lambda: torch.autocast("cpu", dtype=torch.float16)  # noqa: E731 - the GPU's recipe, on the CPU
    runner = StepRunner(model, cfg, fp16, 8, grad_scaling=True)
    before = [p.detach().clone() for p in model.parameters()]
    losses = steps(model, runner, n=3)
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in losses)
    assert not all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    assert all(p.dtype is torch.float32 for p in model.parameters())  # master weights stay fp32


def test_train_job_reports_precision_the_cpu_cannot_use(data_dir, tmp_path):
    seen = []
    cfg = tiny_train_config("vae.conv", data_dir, precision="fp16", steps=1)
    out = run_sync(train_job(tmp_path / "run", CancelToken(), cfg), on_progress=seen.append)
    assert out.ok, out.error
    assert any("fp16 applies to CUDA GPUs only" in (p.message or "") for p in seen)


def test_fp16_loss_scales_are_checkpointed_and_resumed(data_dir, tmp_path, monkeypatch):
    import functools
    import json

    import studio.engine.train as train
    from studio.engine.checkpoint import latest_checkpoint
    from studio.engine.runs import RunFolder

    # The CPU trains in fp32; pretend the device wants fp16 so the trainer keeps loss scalers.
    monkeypatch.setattr(train, "resolve_precision", lambda device, precision: "fp16")
    run_dir = tmp_path / "run"
    cfg = tiny_train_config("vae.conv", data_dir, steps=2, checkpoint_every=2, **EAGER)
    with monkeypatch.context() as m:  # a scale that had backed off to 1024
        m.setattr(
            torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=1024.0)
        )
        assert run_sync(train_job(run_dir, CancelToken(), cfg)).ok
    state_dir = RunFolder(run_dir).state_dir
    meta = json.loads((latest_checkpoint(state_dir) / "trainer.json").read_text())
    assert meta["trainer"]["grad_scalers"]["vae"]["scale"] == 1024.0
    assert run_sync(train_job(run_dir, CancelToken(), None, steps=3)).ok  # fresh scalers: 65536
    resumed = json.loads((latest_checkpoint(state_dir) / "trainer.json").read_text())
    assert resumed["step"] == 3
    assert resumed["trainer"]["grad_scalers"]["vae"]["scale"] == 1024.0  # continued, not reset
