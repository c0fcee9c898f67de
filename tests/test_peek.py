"""Peek while training, engine level (no Qt): peeks between steps see the live weights and
leave training bit-identical; the paused trainer keeps yielding; the cost is reported."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_dataset, tiny_train_config
from safetensors.torch import load_file

from studio.core.jobs import CancelToken, Progress, run_sync
from studio.engine import live, peek
from studio.engine.train import train_job

STEPS = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("peekdata") / "d", n=16, size=16)


def _config(key: str, data: Path, **overrides):
    return tiny_train_config(key, data, **{"steps": STEPS, **overrides})


def _fast(key: str) -> dict[str, object]:
    return {"steps": 2, "sampler": "ddim"} if key.startswith("diffusion") else {}


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the run's newest checkpoint (model and optimizer state)."""
    state = sorted((run / "state").glob("step_*"))[-1]
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(state.glob("*.safetensors")):
        if f.name != "rng.safetensors":
            tensors.update({f"{f.name}/{k}": v for k, v in load_file(str(f)).items()})
    return tensors


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


@pytest.mark.parametrize("key", ["gan.dcgan", "diffusion.ddpm"])
def test_peeks_between_steps_leave_training_bit_identical(tmp_path, data, key):
    plain = tmp_path / "plain"
    out = run_sync(train_job(plain, CancelToken(), _config(key, data)))
    assert out.ok, out.details

    peeked = tmp_path / "peeked"
    token = CancelToken()
    results: list[peek.PeekResult] = []
    seen_cost: list[float] = []
    paused_reports = 0

    def on_progress(progress: Progress) -> None:
        # The interleaving point: the engine thread runs interactive jobs right here.
        nonlocal paused_reports
        if "peek_cost" in progress.info:
            seen_cost.append(progress.info["peek_cost"])
        if progress.stage == "paused":
            paused_reports += 1
            if paused_reports == 1:
                got = run_sync(peek.sample_peek(peeked, 2, seed=7, **_fast(key)))
                assert got.ok, got.details
                results.append(got.result)
            elif paused_reports == 3:
                token.resume()
            return
        if progress.stage != "train" or progress.step == 0:
            return
        got = run_sync(peek.sample_peek(peeked, 3, seed=progress.step, **_fast(key)))
        assert got.ok, got.details
        results.append(got.result)
        live.charge(0.001)  # as the engine thread does after interleaved work
        if progress.step == 2 and not token.paused and paused_reports == 0:
            token.pause()

    out = run_sync(train_job(peeked, token, _config(key, data)), token, on_progress)
    assert out.ok, out.details
    assert out.result.step == STEPS
    assert paused_reports >= 3  # the paused trainer kept yielding, and a peek ran while paused
    assert len(results) >= STEPS
    for result in results:
        assert result.live and result.step is not None
        assert result.images.shape[1:] == (16, 16, 3) and result.images.dtype == np.uint8
        assert result.grid.ndim == 3
    assert seen_cost and max(seen_cost) > 0
    _assert_identical(_final_weights(plain), _final_weights(peeked))

    # Training over: the same request is answered from the run's saved model.
    after = run_sync(peek.sample_peek(peeked, 2, seed=1))
    assert after.ok and not after.result.live and after.result.step is None
    assert not live.is_live(peeked)


def test_peek_sees_current_weights_not_the_files(tmp_path, data):
    run = tmp_path / "run"
    token = CancelToken()
    grids: dict[int, np.ndarray] = {}

    def on_progress(progress: Progress) -> None:
        if progress.stage == "train" and progress.step in (1, 4) and progress.step not in grids:
            got = run_sync(peek.sample_peek(run, 2, seed=3))
            assert got.ok and got.result.live
            assert not (run / "model").exists()  # nothing saved yet: the weights are live
            grids[progress.step] = got.result.images

    config = _config("gan.dcgan", data, steps=4, checkpoint_every=1000)
    assert run_sync(train_job(run, token, config), token, on_progress).ok
    assert not np.array_equal(grids[1], grids[4])  # the same seed shows training progress


def test_borrowed_restores_modes_flags_and_global_rng():
    model_cls = __import__("studio.models.registry", fromlist=["get_family"]).get_family(
        "gan.dcgan"
    )
    model = model_cls(model_cls.Config.from_dict({"resolution": 16, "latent_dim": 8, "width": 8}))
    model.train()
    list(model.parameters())[0].requires_grad_(False)  # a frozen one stays frozen
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    before = torch.get_rng_state()
    with peek.borrowed(model):
        assert not model.training and not torch.is_grad_enabled()
        torch.rand(10)  # a stray global draw inside a peek
        for p in model.parameters():
            p.requires_grad_(False)
    assert torch.equal(torch.get_rng_state(), before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
    assert torch.is_grad_enabled()


def test_live_model_only_on_its_own_thread(tmp_path):
    entry = live.register(tmp_path / "r", object())
    try:
        assert live.get(tmp_path / "r") is entry
        assert live.is_live(tmp_path / "r")
        seen: list[object] = []
        t = threading.Thread(target=lambda: seen.append(live.get(tmp_path / "r")))
        t.start()
        t.join()
        assert seen == [None]  # another thread must not touch a training model
    finally:
        live.unregister(tmp_path / "r")
    assert live.get(tmp_path / "r") is None and not live.is_live(tmp_path / "r")


def test_peek_cost_is_the_share_of_wall_time(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    entry = live.LiveRun(Path("x"), object())
    clock[0] += 1.0
    entry.charge(0.25)
    assert entry.info()["peek_cost"] == pytest.approx(0.25)
    token = CancelToken()
    entry.token = token
    token.pause()
    entry.charge(5.0)  # while paused, peeks cost training nothing
    assert entry.interleaved_s == pytest.approx(0.25)


def test_decode_and_inpaint_with_live_models(tmp_path, data):
    from studio.engine.inpaint import InpaintRequest

    run = tmp_path / "vae"
    token = CancelToken()
    done: dict[str, object] = {}

    def on_progress(progress: Progress) -> None:
        if progress.stage != "train" or progress.step != 2 or done:
            return
        z = np.zeros(4, np.float32)
        got = run_sync(peek.decode_peek(run, z))
        assert got.ok, got.details
        done["decode"] = got.result
        mask = np.zeros((16, 16), np.float32)
        mask[4:10, 4:10] = 1
        image = np.full((16, 16, 3), 90, np.uint8)
        request = InpaintRequest(image=image, mask=mask, seed=1, feather=1.0, steps=3)
        got = run_sync(peek.inpaint_peek(run, request))
        assert got.ok, got.details
        done["inpaint"] = got.result

    config = _config("vae.conv", data, steps=3)
    assert run_sync(train_job(run, token, config), token, on_progress).ok
    assert done["decode"].shape == (16, 16, 3)
    (painted,) = done["inpaint"]
    assert painted.shape == (16, 16, 3)
    assert np.array_equal(painted[0], np.full((16, 3), 90, np.uint8))  # far from the mask: kept


def test_peek_cost_covers_the_whole_run_by_kind_and_leaves_pauses_out(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    token = CancelToken()
    entry = live.LiveRun(Path("x"), object(), token)
    clock[0] += 1.0
    entry.charge(0.15, "Explore")
    entry.charge(0.09, "Canvas")
    assert entry.info()["peek_cost"] == pytest.approx(0.24)
    clock[0] += 1.0  # a log interval with no interleaved work: the run's share halves, not 0
    info = entry.info()
    assert info["peek_cost"] == pytest.approx(0.12)
    assert info["peek_kinds"] == pytest.approx({"Explore": 0.075, "Canvas": 0.045})
    token.pause()
    paused = entry.while_paused(token, Progress("paused", 3))
    next(paused)
    clock[0] += 10.0  # ten seconds paused are no training time
    token.resume()
    assert list(paused) == []
    assert entry.info()["peek_cost"] == pytest.approx(0.12)
