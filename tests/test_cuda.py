"""What only a CUDA GPU can check. Skipped without one (CI has none; the CPU suite covers the
same logic with fakes: injected out-of-memory errors, a broken compile, CPU fp16 autocast).

Run on a GPU machine with ``pytest tests/test_cuda.py -v``; ``benchmarks/gpu_session.sh`` runs
these and the GPU benchmarks in one go. Each test trains or generates for real, on tiny models.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import TINY_MODELS, make_tiny_dataset, tiny_train_config

from studio.core.jobs import CancelToken, Progress, run_sync
from studio.engine import batches
from studio.engine.batch_finder import fit_batch_size
from studio.engine.device import autocast_factory, bf16_native, resolve_precision
from studio.engine.runs import RunFolder
from studio.engine.schedule import StepRunner
from studio.engine.speed import apply_speed
from studio.engine.train import build_model, train_job
from studio.models.base import Batch, StepContext

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]
CUDA = torch.device("cuda")
FP32_EAGER = dict(
    precision="fp32", tf32="off", channels_last="off", fused_adamw="off", compile="off"
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=32, size=16, classes=2)


def train(tmp_path, key, data_dir, **overrides):
    seen: list[Progress] = []
    cfg = tiny_train_config(
        key, data_dir, **{"device": "cuda", "steps": 4, "batch_size": 8, **overrides}
    )
    out = run_sync(train_job(tmp_path / "run", CancelToken(), cfg), on_progress=seen.append)
    assert out.ok, out.error or out.details
    records = [r for r in RunFolder(tmp_path / "run").read_metrics()[0] if "step" in r]
    return [p.message for p in seen if p.message], records


def finite(records) -> bool:
    values = [v for r in records for k, v in r.items() if k.startswith(("loss", "grad_norm"))]
    return bool(values) and all(math.isfinite(v) for v in values)


# -- the trainer's defaults on a GPU --------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["diffusion.ddpm", "diffusion.text", "gan.dcgan", "gan.wgan_gp", "vae.conv", "flow.realnvp"],
)
def test_default_options_train_every_kind(key, data_dir, tmp_path):
    messages, records = train(tmp_path, key, data_dir)
    speed = next(m for m in messages if m.startswith("Speed options:"))
    assert "TF32 matmuls" in speed and "fused" in speed
    if not key.startswith("flow."):  # convolutional networks
        assert "channels_last" in speed
    expected = "bf16 autocast" if bf16_native(CUDA) else "fp16 autocast with gradient scaling"
    assert any(expected in m for m in messages)
    assert finite(records)
    assert (tmp_path / "run" / "model").is_dir()


@pytest.mark.parametrize("key", ["diffusion.ddpm", "gan.wgan_gp", "gan.dcgan"])
def test_fp16_with_gradient_scaling_trains(key, data_dir, tmp_path):
    model = {**TINY_MODELS[key], **({"r1_gamma": 1.0} if key == "gan.dcgan" else {})}
    messages, records = train(tmp_path, key, data_dir, precision="fp16", model=model, steps=6)
    assert any("fp16 autocast with gradient scaling" in m for m in messages)
    assert finite(records[1:])  # the first step may overflow at the initial scale and be skipped


def _runner(key, data_dir, **options):
    cfg = tiny_train_config(key, data_dir, device="cuda", **{**FP32_EAGER, **options})
    torch.manual_seed(0)
    model = build_model(cfg, 2, CUDA)
    speed = apply_speed(model, cfg, CUDA)
    fp16 = resolve_precision(CUDA, cfg.precision) == "fp16"
    return (
        model,
        speed,
        StepRunner(model, cfg, autocast_factory(CUDA, cfg.precision), 8, speed, grad_scaling=fp16),
    )


def _losses(key, data_dir, steps=3, **options):
    model, speed, runner = _runner(key, data_dir, **options)
    out = []
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        x = (torch.rand(8, 3, 16, 16, generator=g) * 2 - 1).to(CUDA)
        labels = (torch.arange(8) % 2).to(CUDA) if model.config.num_classes else None
        losses = runner.run(Batch(x, labels), step, torch.Generator(CUDA).manual_seed(100 + step))
        out.append({k: float(v) for k, v in losses[-1].items() if k.startswith("loss")})
    return out, speed


def _close(a, b, rel):
    for ra, rb in zip(a, b):
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=rel, abs=rel), k


@pytest.mark.parametrize("key", ["diffusion.ddpm", "vae.conv"])
def test_fast_options_train_like_fp32_eager(key, data_dir):
    plain, _ = _losses(key, data_dir)
    fast, _ = _losses(
        key, data_dir, precision="auto", tf32="on", channels_last="on", fused_adamw="on"
    )
    _close(plain, fast, rel=5e-2)  # bf16 (or fp16) rounding, not a different computation


@pytest.mark.parametrize("graphs", [False, True], ids=["compile", "compile+cuda-graphs"])
def test_compile_and_cuda_graphs_train_like_eager_without_falling_back(graphs, data_dir):
    plain, _ = _losses("diffusion.ddpm", data_dir, steps=4)
    compiled, speed = _losses("diffusion.ddpm", data_dir, steps=4, compile="on", cuda_graphs=graphs)
    assert speed.compiling, speed.messages  # no fallback to eager on a GPU
    assert not any("failed" in m for m in speed.messages), speed.messages
    _close(plain, compiled, rel=1e-3)


# -- memory ----------------------------------------------------------------------------------------


def test_batch_finder_backs_off_on_a_real_out_of_memory(data_dir):
    cfg = tiny_train_config(
        "diffusion.ddpm", data_dir, device="cuda", resolution=64, auto_batch=True,
        batch_size=1 << 22, model={"width": 32, "layers_per_block": 1, "attention_res": 16},
    )  # fmt: skip
    gen = fit_batch_size(cfg, lambda c: build_model(c, 0, CUDA), CUDA)
    messages = []
    try:
        while True:
            messages.append(next(gen).message)
    except StopIteration as done:
        found = done.value.batch_size
    assert 1 <= found < 1 << 22, messages
    assert "Automatic batch size" in messages[-1]
    # The size found really trains, and memory from the failed tries was given back.
    model = build_model(dataclasses.replace(cfg, batch_size=found), 0, CUDA)
    model.train_step(
        Batch(torch.zeros(found, 3, 64, 64, device=CUDA)), StepContext(0, torch.Generator(CUDA))
    )
    torch.cuda.synchronize()


def test_a_dataset_too_big_for_the_gpu_streams_from_pinned_memory(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(batches, "_fits", lambda data, device: False)
    images = batches.DeviceImages(
        np.zeros((16, 16, 16, 3), np.uint8), None, CUDA, seed=0, batch_size=8, flip=True
    )
    assert not images.on_device and images.data.is_pinned()
    messages, records = train(tmp_path, "vae.conv", data_dir)
    assert finite(records)


# -- prompts: precision, memory rungs, offload, compile --------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from prompt_fixtures import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd")


def _generate(model, **kw):
    from studio.engine.prompt.generate import PipelineCache, generate_job
    from studio.engine.prompt.request import GenerateRequest

    req = GenerateRequest(
        str(model),
        **{"prompt": "a red circle", "width": 16, "height": 16, "steps": 3, "device": "cuda", **kw},
    )
    out = run_sync(generate_job(req, CancelToken(), pipeline_cache=PipelineCache(max_models=1)))
    assert out.ok, out.error or out.details
    return out.result


@pytest.mark.parametrize("memory", ["auto", "full", "balanced", "low"])
def test_generation_on_the_gpu_at_every_memory_rung(tiny_sd, memory):
    result = _generate(tiny_sd, memory=memory)
    meta = result.metadata[0]
    assert meta["device_used"].startswith("cuda")
    assert meta["dtype_used"] == ("bf16" if bf16_native(CUDA) else "fp16")
    assert meta["memory_rung"] == ("full" if memory == "auto" else memory)  # plenty free here
    image = result.images[0]
    assert image.shape == (16, 16, 3) and image.std() > 0  # not a black (NaN) image


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_generation_in_each_precision_is_seeded(tiny_sd, dtype):
    a = _generate(tiny_sd, dtype=dtype, seed=5).images[0]
    b = _generate(tiny_sd, dtype=dtype, seed=5).images[0]
    assert _generate(tiny_sd, dtype=dtype, seed=5).metadata[0]["dtype_used"] == dtype
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_compiled_unet_generates_without_falling_back(tiny_sd):
    eager = _generate(tiny_sd, seed=3).images[0]
    result = _generate(tiny_sd, seed=3, compile=True)
    assert result.metadata[0]["compiled"] is True
    assert np.abs(result.images[0].astype(int) - eager.astype(int)).mean() < 8


@pytest.mark.parametrize("channels_last", ["off", "on"])
def test_lean_unet_blocks_train_on_the_gpu(data_dir, tmp_path, channels_last):
    """``lean_unet=on`` on CUDA (off by default there): the same function as diffusers' blocks
    (checked on the CPU in tests/test_lean_unet.py), here through bf16/fp16 autocast and either
    memory layout; finite losses and a saved model."""
    messages, records = train(
        tmp_path, "diffusion.ddpm", data_dir, lean_unet="on", channels_last=channels_last
    )
    speed = next(m for m in messages if m.startswith("Speed options:"))
    assert "lean UNet blocks" in speed
    assert finite(records)
    assert (tmp_path / "run" / "model").is_dir()


@pytest.mark.parametrize("arch", ["pixelcnn", "gpt"])
def test_vq_prior_trains_on_the_gpu_with_its_base_on_the_gpu_and_samples(tmp_path, data_dir, arch):
    """The frozen VQ-VAE follows the prior to the GPU; its codes are computed there once."""
    from studio.engine.sample import load_run_model, sample_job

    model = {**TINY_MODELS["ar.vq_prior"], "architecture": arch}
    _messages, records = train(tmp_path, "ar.vq_prior", data_dir, model=model)
    assert all(math.isfinite(r["bits_per_code"]) for r in records if "bits_per_code" in r)
    prior = load_run_model(tmp_path / "run", CUDA)
    assert prior.vq.device.type == "cuda" and not any(
        p.requires_grad for p in prior.vq.parameters()
    )
    out = run_sync(sample_job(tmp_path / "run", 4, seed=1, model=prior, top_k=4, top_p=0.9))
    assert out.ok and out.result.shape == (4, 16, 16, 3)
