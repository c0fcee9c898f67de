"""Speed options (studio.engine.speed) and the batch-size finder, on the CPU: each option trains
like the plain loop, compile failures fall back to eager, out-of-memory backs off."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import make_tiny_dataset, tiny_model, tiny_train_config

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, run_sync
from studio.engine import speed as speed_module
from studio.engine.batch_finder import find_batch_size, fit_batch_size
from studio.engine.device import is_out_of_memory
from studio.engine.runs import RunFolder, TrainConfig
from studio.engine.schedule import StepRunner
from studio.engine.speed import apply_speed, convert_optimizer, fused_adam_supported
from studio.engine.train import train_job
from studio.models.base import Batch
from studio.models.registry import get_family

EAGER = dict(
    tf32="off",
    channels_last="off",
    fused_adamw="off",
    compile="off",
    reuse_cpu_memory="off",
    fast_dropout="off",
    lean_unet="off",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=24, size=16, classes=2)


def train_steps(model, cfg, steps: int = 3, speed=None, batch: int = 8) -> list[dict[str, float]]:
    runner = StepRunner(model, cfg, lambda: torch.autocast("cpu", enabled=False), batch, speed)
    out = []
    for step in range(steps):
        x = torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(step)) * 2 - 1
        losses = runner.run(Batch(x), step, torch.Generator().manual_seed(100 + step))
        out.append({k: float(v) for k, v in losses[-1].items()})
    return out


def assert_losses_close(a, b, rtol=1e-4, atol=1e-5):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=rtol, abs=atol), k


def cfg_for(key, data_dir, **kw) -> TrainConfig:
    return tiny_train_config(key, data_dir, **{**EAGER, **kw})


# -- each option alone gives the plain loop's losses ------------------------------------------


@pytest.mark.parametrize("key", ["gan.dcgan", "vae.conv", "vae.vqvae", "flow.realnvp"])
def test_channels_last_trains_like_the_plain_loop(key, data_dir):
    plain = train_steps(tiny_model(key), cfg_for(key, data_dir))
    model = tiny_model(key)
    speed = apply_speed(model, cfg_for(key, data_dir, channels_last="on"), torch.device("cpu"))
    assert speed.channels_last
    conv = next(
        m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert_losses_close(
        train_steps(model, cfg_for(key, data_dir), speed=speed), plain, rtol=1e-3, atol=1e-4
    )


@pytest.mark.parametrize("fused", [False, True])
def test_foreach_and_fused_adam_train_like_the_plain_loop(fused, data_dir):
    """Converted after two steps: the optimizer keeps its state (moments, step count)."""
    cfg = cfg_for("vae.conv", data_dir)
    plain_model = tiny_model("vae.conv")
    plain = train_steps(plain_model, cfg, steps=4)
    model = tiny_model("vae.conv")
    first = train_steps(model, cfg, steps=2)
    opt, kind = convert_optimizer(model.optimizers["vae"], fused=fused)
    assert kind == ("fused" if fused else "foreach") and opt is not plain_model.optimizers["vae"]
    assert opt.param_groups[0]["fused" if fused else "foreach"] is True
    model.optimizers["vae"] = opt
    runner = StepRunner(model, cfg, lambda: torch.autocast("cpu", enabled=False), 8)
    rest = []
    for step in (2, 3):
        x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(step)) * 2 - 1
        losses = runner.run(Batch(x), step, torch.Generator().manual_seed(100 + step))
        rest.append({k: float(v) for k, v in losses[-1].items()})
    assert_losses_close(first + rest, plain)
    # Same function (biases that feed a GroupNorm get rounding-noise gradients, which Adam
    # scales to +-lr, so parameters are compared through outputs).
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - 1
    torch.testing.assert_close(model.posterior(x), plain_model.posterior(x), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not fused_adam_supported(torch.device("cpu")), reason="no CPU fused Adam")
@pytest.mark.parametrize("option", ["auto", "on"])
def test_fused_adam_is_used_on_a_cpu_by_default(option, data_dir):
    model = tiny_model("gan.dcgan")
    speed = apply_speed(
        model, cfg_for("gan.dcgan", data_dir, fused_adamw=option), torch.device("cpu")
    )
    assert all(o.param_groups[0]["fused"] is True for o in model.optimizers.values())
    assert "fused Adam" in speed.messages[0]


def test_fused_adam_off_or_missing_on_a_cpu(data_dir, monkeypatch):
    model = tiny_model("gan.dcgan")
    before = dict(model.optimizers)
    apply_speed(model, cfg_for("gan.dcgan", data_dir, fused_adamw="off"), torch.device("cpu"))
    assert model.optimizers == before  # off: the family's optimizers, untouched
    # A torch without a CPU fused kernel: auto leaves them, on falls back to foreach.
    monkeypatch.setattr(speed_module, "fused_adam_supported", lambda device: False)
    model = tiny_model("gan.dcgan")
    before = dict(model.optimizers)
    apply_speed(model, cfg_for("gan.dcgan", data_dir, fused_adamw="auto"), torch.device("cpu"))
    assert model.optimizers == before
    speed = apply_speed(
        model, cfg_for("gan.dcgan", data_dir, fused_adamw="on"), torch.device("cpu")
    )
    assert all(o.param_groups[0]["foreach"] is True for o in model.optimizers.values())
    assert "foreach Adam" in speed.messages[0]


def test_cpu_defaults_train_ddpm_like_the_plain_loop(data_dir):
    """The CPU defaults (fused AdamW, memory reuse, threads) give the plain loop's losses; the
    DDPM's AdamW converts (its defaults hold a key AdamW's constructor does not take). Fast
    dropout and the lean UNet blocks lay dropout masks out differently, so they are off here
    (tests/test_dropout.py and tests/test_lean_unet.py check them)."""
    key = "diffusion.ddpm"
    plain = train_steps(tiny_model(key), cfg_for(key, data_dir), steps=4)
    model = tiny_model(key)
    before = torch.get_num_threads()
    try:
        cfg = tiny_train_config(key, data_dir, fast_dropout="off", lean_unet="off")
        speed = apply_speed(model, cfg, torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    opt = model.optimizers["unet"]
    assert type(opt) is torch.optim.AdamW
    if fused_adam_supported(torch.device("cpu")):
        assert opt.param_groups[0]["fused"] is True and "fused Adam" in speed.messages[0]
    got = train_steps(model, cfg_for(key, data_dir), steps=4, speed=speed)
    assert_losses_close(got, plain)


# -- keeping freed memory for reuse (glibc) ----------------------------------------------------


def test_memory_reuse_stops_big_buffers_faulting_in_again(data_dir):
    """A 64 MiB buffer (above glibc's largest adaptive mmap threshold) allocated and freed
    again and again: unmapped each time by default, kept and reused with the option on."""
    resource = pytest.importorskip("resource")
    if speed_module._libc() is None or speed_module._malloc_env_set():
        pytest.skip("needs glibc without MALLOC_* settings")
    speed = apply_speed(
        tiny_model("vae.conv"),
        cfg_for("vae.conv", data_dir, reuse_cpu_memory="on", cpu_threads=torch.get_num_threads()),
        torch.device("cpu"),
    )
    assert "freed memory kept for reuse" in speed.messages[0]
    n = (64 << 20) // 4
    for _ in range(3):  # the heap settles around the buffer
        torch.ones(n)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(n)  # allocated, written (every page touched), freed
    pages = 5 * (64 << 20) // resource.getpagesize()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults < pages // 10
    speed_module.release_freed_memory()


def test_memory_reuse_respects_the_user_and_other_platforms(data_dir, monkeypatch):
    cpu = torch.device("cpu")
    threads = dict(cpu_threads=torch.get_num_threads())
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")  # the user tuned glibc: leave it
    speed = apply_speed(
        tiny_model("vae.conv"),
        cfg_for("vae.conv", data_dir, reuse_cpu_memory="auto", **threads),
        cpu,
    )
    assert "memory" not in " ".join(speed.messages)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setattr(speed_module, "_libc", lambda: None)  # not glibc
    monkeypatch.setattr(speed_module, "_reusing", False)
    speed = apply_speed(
        tiny_model("vae.conv"), cfg_for("vae.conv", data_dir, reuse_cpu_memory="on", **threads), cpu
    )
    assert any("needs Linux with glibc" in m for m in speed.messages)
    speed = apply_speed(
        tiny_model("vae.conv"),
        cfg_for("vae.conv", data_dir, reuse_cpu_memory="auto", **threads),
        cpu,
    )
    assert "memory" not in " ".join(speed.messages)
    # Off the CPU, auto does nothing (a CUDA run has few large host allocations).
    assert not speed_module._wants("auto", torch.device("cuda").type == "cpu")


def test_cuda_only_options_say_they_are_ignored_on_a_cpu(data_dir):
    cfg = cfg_for("vae.conv", data_dir, tf32="on", cuda_graphs=True)
    speed = apply_speed(tiny_model("vae.conv"), cfg, torch.device("cpu"))
    text = " ".join(speed.messages)
    assert "TF32" in text and "CUDA graphs" in text and not speed.compiled


def test_cpu_threads_are_set_and_reported(data_dir):
    before = torch.get_num_threads()
    try:
        speed = apply_speed(
            tiny_model("vae.conv"),
            cfg_for("vae.conv", data_dir, cpu_threads=1),
            torch.device("cpu"),
        )
        assert torch.get_num_threads() == 1
        assert "1 CPU threads" in speed.messages[0]
    finally:
        torch.set_num_threads(before)


def test_bad_option_values_are_refused(data_dir):
    for bad in (
        dict(compile="fast"),
        dict(lr_schedule="step"),
        dict(accumulate=0),
        dict(tf32="yes"),
        dict(reuse_cpu_memory="always"),
    ):
        with pytest.raises(StudioError):
            apply_speed(
                tiny_model("vae.conv"), cfg_for("vae.conv", data_dir, **bad), torch.device("cpu")
            )


# -- compile falls back to eager ---------------------------------------------------------------


def raising_compile(fn, **kwargs):
    raise RuntimeError("no C++ compiler here")


def compile_failing_at_first_call(fn, **kwargs):
    def compiled(*args, **kw):
        raise RuntimeError("Inductor stride assertion")

    return compiled


class _FailInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("compiled backward failed")


def compile_failing_in_backward(fn, **kwargs):
    """The forward works; the backward, compiled at its first use, raises (after the
    discriminator of a GAN has already stepped: the step must be rolled back)."""

    def compiled(*args, **kw):
        out = fn(*args, **kw)
        return _FailInBackward.apply(out)

    return compiled


@pytest.mark.parametrize(
    "compile_fn", [raising_compile, compile_failing_at_first_call, compile_failing_in_backward]
)
def test_a_failing_compile_falls_back_to_eager_with_the_same_losses(compile_fn, data_dir):
    cfg = cfg_for("gan.dcgan", data_dir)
    plain_model = tiny_model("gan.dcgan")
    plain = train_steps(plain_model, cfg)
    model = tiny_model("gan.dcgan")
    speed = apply_speed(
        model, dataclasses.replace(cfg, compile="on"), torch.device("cpu"), compile_fn=compile_fn
    )
    got = train_steps(model, cfg, speed=speed)
    # Identical, not just close: the failed step was undone and replayed with the same RNG.
    assert got == plain
    for p, q in zip(model.state_dict().values(), plain_model.state_dict().values()):
        assert torch.equal(p, q)
    fell_back = [m for m in speed.messages if "torch.compile failed" in m]
    assert len(fell_back) == 1 and "eager" in fell_back[0]
    assert speed.compile_failed and all(m._compiled_call_impl is None for m in speed.compiled)


def test_compile_is_used_for_training_calls_only(data_dir):
    calls = []

    def counting_compile(fn, **kwargs):
        assert kwargs.get("dynamic") is False

        def compiled(*args, **kw):
            calls.append(1)
            return fn(*args, **kw)

        return compiled

    cfg = cfg_for("gan.dcgan", data_dir)
    model = tiny_model("gan.dcgan")
    speed = apply_speed(
        model,
        dataclasses.replace(cfg, compile="on"),
        torch.device("cpu"),
        compile_fn=counting_compile,
    )
    assert len(speed.compiled) == 2 and "torch.compile" in speed.messages[0]
    train_steps(model, cfg, steps=2, speed=speed)
    trained = len(calls)
    assert trained >= 2 * 3  # G once, D three times per step
    model.eval()
    with torch.no_grad():
        model.sample(4, torch.Generator().manual_seed(0))
    assert len(calls) == trained  # sampling stays eager: no recompiles for other shapes


def test_train_job_reports_the_options_and_logs_lr_and_grad_norm(data_dir, tmp_path):
    seen = []
    cfg = tiny_train_config(
        "gan.dcgan", data_dir, steps=3, batch_size=8, fused_adamw="on", cpu_threads=1,
        lr_schedule="cosine", warmup_steps=2,
    )  # fmt: skip
    before = torch.get_num_threads()
    try:
        out = run_sync(train_job(tmp_path / "run", CancelToken(), cfg), on_progress=seen.append)
    finally:
        torch.set_num_threads(before)
    assert out.ok, out.error
    messages = [p.message for p in seen if p.message]
    assert any(m.startswith("Speed options:") and "fused Adam" in m for m in messages)
    recs = [r for r in RunFolder(tmp_path / "run").read_metrics()[0] if "loss_d" in r]
    assert {"lr_d", "lr_g", "grad_norm_d", "grad_norm_g"} <= recs[0].keys()
    assert recs[0]["lr_d"] == pytest.approx(get_family("gan.dcgan").Config().lr_d * 0.5)


# -- configs from before these options ----------------------------------------------------------


def test_an_old_config_json_without_the_new_keys_still_loads(tmp_path):
    old = {
        "family": "gan.dcgan", "data": "x", "resolution": 16, "batch_size": 8, "steps": 10,
        "seed": 0, "flip": True, "sample_every": 5, "checkpoint_every": 5,
        "checkpoint_minutes": 10.0, "log_every": 1, "samples": 8, "holdout_fraction": 0.05,
        "device": "auto", "precision": "auto", "model": {},
    }  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"family": "gan.dcgan", "train": old}))
    cfg = RunFolder(run).train_config()
    assert cfg.batch_size == 8 and cfg.accumulate == 1 and cfg.compile == "off"
    assert cfg.grad_clip == 0.0 and cfg.lr_schedule == "constant" and cfg.auto_batch is False


# -- the batch-size finder ----------------------------------------------------------------------


def test_batch_finder_halves_until_a_step_fits():
    tried = []

    def run(size):
        tried.append(size)
        if size > 20:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert find_batch_size(lambda b: b, run, 128) == 16
    assert tried == [128, 64, 32, 16]

    # The RuntimeError form (older torch, other backends) counts too.
    def run_rt(size):
        if size > 5:
            raise RuntimeError("CUDA error: out of memory")

    assert find_batch_size(lambda b: b, run_rt, 64) == 4
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: not enough memory: out of memory"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_batch_finder_stops_at_the_minimum_and_passes_other_errors():
    def never(size):
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(StudioError, match="does not fit"):
        find_batch_size(lambda b: b, never, 16, min=4)

    def broken(size):
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError):
        find_batch_size(lambda b: b, broken, 16)


def test_auto_batch_off_the_gpu_keeps_the_batch_with_a_message(data_dir):
    cfg = tiny_train_config("vae.conv", data_dir, auto_batch=True, batch_size=8)
    gen = fit_batch_size(cfg, lambda c: tiny_model("vae.conv"), torch.device("cpu"))
    msgs = []
    try:
        while True:
            msgs.append(next(gen).message)
    except StopIteration as done:
        assert done.value.batch_size == 8
    assert "needs a CUDA GPU" in msgs[0]


def test_cli_options_parse_to_typed_train_settings():
    from studio.engine.speed import parse_options

    got = parse_options(
        ["compile=on", "accumulate=2", "grad-clip=0.5", "cuda_graphs=off", "auto_batch=on"]
    )
    assert got == {
        "compile": "on",
        "accumulate": 2,
        "grad_clip": 0.5,
        "cuda_graphs": False,
        "auto_batch": True,
    }
    assert parse_options(["reuse-cpu-memory=OFF"]) == {"reuse_cpu_memory": "off"}
    for bad in ("compile=fast", "accumulate=two", "nope=1", "lr_schedule", "reuse_cpu_memory=1"):
        with pytest.raises(StudioError):
            parse_options([bad])
