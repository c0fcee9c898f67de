"""Learning-rate schedule, clipping and gradient accumulation (studio.engine.schedule)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TINY_MODELS, make_tiny_dataset, tiny_train_config
from safetensors.torch import load_file

from studio.core.jobs import CancelToken, run_sync
from studio.engine.runs import RunFolder
from studio.engine.schedule import StepRunner, lr_multiplier, micro_batches, split_batch
from studio.engine.train import train_job
from studio.models.base import Batch, StepContext
from studio.models.registry import get_family


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=40, size=16, classes=2)


def tiny(key: str, **over):
    family = get_family(key)
    torch.manual_seed(0)
    model = family(family.Config.from_dict({**TINY_MODELS[key], "resolution": 16, **over}))
    model.configure_optimizers()
    model.remember_base_lrs()
    return model


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- the multiplier -----------------------------------------------------------------------


def test_warmup_and_cosine_values():
    assert [lr_multiplier(s, 100, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_multiplier(0, 100) == 1.0 and lr_multiplier(99, 100) == 1.0
    # Cosine: 1 at the end of the warm-up, halfway between 1 and the floor midway, the floor
    # at the last step and after it.
    f = 0.1
    assert lr_multiplier(3, 104, 4, "cosine", f) == pytest.approx(1.0)
    assert lr_multiplier(4, 104, 4, "cosine", f) == pytest.approx(1.0)
    assert lr_multiplier(54, 104, 4, "cosine", f) == pytest.approx((1 + f) / 2)
    assert lr_multiplier(104, 104, 4, "cosine", f) == pytest.approx(f)
    assert lr_multiplier(500, 104, 4, "cosine", f) == pytest.approx(f)
    values = [lr_multiplier(s, 104, 4, "cosine", f) for s in range(4, 105)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises after the warm-up
    with pytest.raises(ValueError):
        lr_multiplier(0, 10, 0, "step")


def test_family_warmup_is_kept_when_the_trainer_sets_none():
    model = tiny("diffusion.ddpm", warmup_steps=4, grad_clip=0.0)
    x = images(4)
    model.train_step(Batch(x), StepContext(0, torch.Generator().manual_seed(0)))
    assert model.optimizers["unet"].param_groups[0]["lr"] == pytest.approx(model.config.lr / 4)
    # The trainer's scale replaces the family's warm-up and multiplies the configured rate.
    model.train_step(Batch(x), StepContext(1, torch.Generator().manual_seed(1), lr_scale=0.3))
    assert model.optimizers["unet"].param_groups[0]["lr"] == pytest.approx(model.config.lr * 0.3)


# -- clipping -------------------------------------------------------------------------------


def test_clipping_caps_the_gradient_norm_and_reports_the_norm_before():
    model = tiny("vae.conv")
    seen = {}
    opt = model.optimizers["vae"]

    def record(o, *_):
        grads = [p.grad for g in o.param_groups for p in g["params"] if p.grad is not None]
        seen["norm"] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

    opt.register_step_pre_hook(record)
    ctx = StepContext(0, torch.Generator().manual_seed(0), max_grad_norm=1e-3)
    out = model.train_step(Batch(images(8)), ctx)
    assert seen["norm"] == pytest.approx(1e-3, rel=1e-3)  # what the optimizer stepped with
    assert float(ctx.grad_norms["vae"]) > 1e-2  # the logged norm is the one before clipping
    assert "loss" in out


def test_no_clipping_leaves_gradients_alone():
    a, b = tiny("vae.conv"), tiny("vae.conv")
    x = images(8)
    a.train_step(Batch(x), StepContext(0, torch.Generator().manual_seed(0)))
    b.train_step(Batch(x), StepContext(0, torch.Generator().manual_seed(0), max_grad_norm=1e9))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


# -- accumulation ---------------------------------------------------------------------------


def test_split_batch_cuts_every_per_example_field():
    batch = Batch(images(6), torch.arange(6))
    parts = split_batch(batch, 3)
    assert [len(p.images) for p in parts] == [2, 2, 2]
    assert torch.equal(torch.cat([p.labels for p in parts]), batch.labels)
    assert torch.equal(torch.cat([p.images for p in parts]), batch.images)
    with pytest.raises(ValueError):
        split_batch(batch, 4)
    assert micro_batches(6, 4) == 3 and micro_batches(8, 2) == 2 and micro_batches(3, 8) == 3


def test_accumulating_two_halves_equals_one_big_batch(data_dir):
    """vae.conv is deterministic given the step's generator; the halves draw the same noise
    as the whole batch (sizes multiple of 16), so the updates agree to float rounding."""
    cfg = tiny_train_config("vae.conv", data_dir, batch_size=32, steps=3)
    whole, halves = tiny("vae.conv"), tiny("vae.conv")
    one = StepRunner(whole, cfg, lambda: torch.autocast("cpu", enabled=False), 32)
    two = StepRunner(
        halves,
        cfg.__class__(**{**cfg.to_dict(), "accumulate": 2}),
        lambda: torch.autocast("cpu", enabled=False),
        32,
    )
    assert two.accumulate == 2
    for step in range(3):
        x = images(32, seed=step)
        a = one.run(Batch(x), step, torch.Generator().manual_seed(step))
        b = two.run(Batch(x), step, torch.Generator().manual_seed(step))
        assert len(a) == 1 and len(b) == 2
        mean_b = (b[0]["loss"] + b[1]["loss"]) / 2
        assert float(mean_b) == pytest.approx(float(a[0]["loss"]), rel=1e-5)
        assert float(b[-1]["grad_norm"]) == pytest.approx(float(a[0]["grad_norm"]), rel=1e-4)
    # The networks compute the same function. (Parameters are compared through outputs: a
    # convolution bias feeding a GroupNorm has a zero gradient up to rounding, which Adam
    # scales up to +-lr, yet it cannot change any output.)
    x = images(16, seed=9)
    torch.testing.assert_close(whole.posterior(x), halves.posterior(x), rtol=1e-4, atol=1e-5)
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(whole.decode(z), halves.decode(z), rtol=1e-4, atol=1e-5)
    # And not trivially: the weights did move.
    assert any(
        not torch.equal(p, q) for p, q in zip(whole.parameters(), tiny("vae.conv").parameters())
    )


def test_gans_refuse_accumulation_with_a_message(data_dir):
    cfg = tiny_train_config("gan.dcgan", data_dir, batch_size=8, accumulate=2)
    runner = StepRunner(tiny("gan.dcgan"), cfg, lambda: torch.autocast("cpu", enabled=False), 8)
    assert runner.accumulate == 1
    assert any("accumulation is not available" in m for m in runner.take_messages())


# -- through the trainer --------------------------------------------------------------------


def _records(run):
    recs, _ = RunFolder(run).read_metrics()
    return [r for r in recs if "loss" in r]


def test_schedule_clip_and_accumulation_resume_exactly(data_dir, tmp_path):
    opts = dict(
        batch_size=8, steps=8, checkpoint_every=4, lr_schedule="cosine", warmup_steps=3,
        min_lr_fraction=0.2, grad_clip=0.5, accumulate=2, holdout_fraction=0.0,
    )  # fmt: skip
    full = tmp_path / "full"
    out = run_sync(train_job(full, CancelToken(), tiny_train_config("vae.conv", data_dir, **opts)))
    assert out.ok, out.error
    recs = _records(full)
    assert [r["step"] for r in recs] == list(range(1, 9))
    lr0 = get_family("vae.conv").Config().lr
    for r in recs:  # the logged rate is the schedule's, step by step
        expect = lr0 * lr_multiplier(r["step"] - 1, 8, 3, "cosine", 0.2)
        assert r["lr"] == pytest.approx(expect, rel=1e-6)
        assert r["grad_norm"] > 0 and math.isfinite(r["grad_norm"])

    # Stopped at step 4 (the schedule still spans 8 steps), then resumed: the same curve and
    # the same final weights.
    part, token = tmp_path / "part", CancelToken()

    def stop_at_4(p) -> None:
        if p.stage == "train" and p.step == 4:
            token.stop()

    cfg = tiny_train_config("vae.conv", data_dir, **opts)
    out = run_sync(train_job(part, token, cfg), token, stop_at_4)
    assert out.ok and out.result.stopped_early and out.result.step == 4, out.error
    out = run_sync(train_job(part, CancelToken(), None))
    assert out.ok and out.result.step == 8, out.error
    assert [_same(r) for r in _records(part)] == [_same(r) for r in recs]
    wa = load_file(str(RunFolder(full).model_dir / "model.safetensors"))
    wb = load_file(str(RunFolder(part).model_dir / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _same(record: dict) -> dict:
    """A metrics record without the wall-clock values."""
    return {k: v for k, v in record.items() if k not in ("time", "images_per_s", "memory_mb")}
