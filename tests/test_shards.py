"""Batch shards on CPU threads (speed option ``cpu_shards``): the same step as the whole batch,
deterministic, the right thread counts, and the threads end with the run."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import make_tiny_dataset, tiny_model, tiny_train_config
from torch import nn

from studio.core.jobs import CancelToken, run_sync
from studio.engine.runs import RunFolder
from studio.engine.schedule import StepRunner
from studio.engine.speed import apply_speed
from studio.engine.train import train_job
from studio.models.base import Batch
from studio.models.shards import ShardPool, shard_rows

CPU = torch.device("cpu")


@pytest.fixture
def two_threads():
    """Shards share the torch threads: give the test 2 whatever the machine has."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=16, size=16, classes=2)


def test_shard_rows_cover_the_batch_in_order():
    assert shard_rows(10, 3) == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert shard_rows(2, 4) == [slice(0, 1), slice(1, 2)]
    assert shard_rows(8, 2) == [slice(0, 4), slice(4, 8)]


def shard_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("studio-shard")]


def test_workers_run_their_own_thread_count_and_leave_the_callers(two_threads):
    pool = ShardPool(2, 1)
    try:
        counts = [f.result() for f in [pool._pool.submit(torch.get_num_threads) for _ in range(4)]]
        assert counts == [1, 1, 1, 1]
        assert torch.get_num_threads() == 2
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert seen == [2]  # threads started later get the caller's count again
        assert len(shard_threads()) == 2
    finally:
        pool.close()
    assert shard_threads() == []


def test_sharded_loss_and_gradients_equal_the_whole_batch(two_threads):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.SiLU(),
                        nn.Conv2d(8, 3, 3, padding=1))  # fmt: skip
    x, y = torch.randn(7, 3, 8, 8), torch.randn(7, 3, 8, 8)

    def loss_of(rows: slice) -> torch.Tensor:
        return ((net(x[rows]) - y[rows]) ** 2).sum() / y.numel()

    whole = loss_of(slice(None))
    whole.backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    pool = ShardPool(3, 1)
    try:
        loss = pool.loss(loss_of, 7, list(net.parameters()), seed=1)
        (loss * 0.5).backward()  # a scale on the loss (accumulation, loss scaling) reaches them
    finally:
        pool.close()
    torch.testing.assert_close(loss, whole)
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p.grad, 0.5 * e, rtol=1e-5, atol=1e-6)


def test_an_error_in_a_shard_reaches_the_caller(two_threads):
    pool = ShardPool(2, 1)
    w = torch.ones(3, requires_grad=True)

    def loss_of(rows: slice) -> torch.Tensor:
        if rows.start:
            raise ValueError("shard failed")
        return w.sum()

    try:
        with pytest.raises(ValueError, match="shard failed"):
            pool.loss(loss_of, 4, [w], seed=0)
    finally:
        pool.close()


def run_steps(model, cfg, speed, steps=3) -> list[float]:
    runner = StepRunner(model, cfg, lambda: torch.autocast("cpu", enabled=False), 8, speed)
    out = []
    for step in range(steps):
        x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(step)) * 2 - 1
        labels = torch.tensor([0, 1] * 4)
        losses = runner.run(Batch(x, labels), step, torch.Generator().manual_seed(100 + step))
        out.append(float(losses[-1]["loss"]))
    return out


def test_a_sharded_ddpm_trains_like_the_whole_batch_and_repeats_exactly(data_dir, two_threads):
    key = "diffusion.ddpm"
    runs = {}
    for name, shards in (("whole", 1), ("sharded", 2), ("again", 2)):
        model = tiny_model(key)
        cfg = tiny_train_config(key, data_dir, batch_size=8, cpu_shards=shards, cpu_threads=2)
        speed = apply_speed(model, cfg, CPU)
        assert (speed.shards is not None) is (shards == 2)
        try:
            runs[name] = run_steps(model, cfg, speed)
        finally:
            speed.close()
    assert runs["sharded"] == runs["again"]  # deterministic: dropout per shard, sums in order
    assert runs["sharded"] != runs["whole"]  # other dropout masks: the shards were used
    for a, b in zip(runs["sharded"], runs["whole"]):
        assert a == pytest.approx(b, rel=0.03)


@pytest.mark.parametrize(
    ("key", "options", "sharded", "said"),
    [
        ("diffusion.ddpm", {"cpu_shards": 2}, True, None),
        ("diffusion.ddpm", {}, False, None),  # off by default
        ("diffusion.ddpm", {"cpu_shards": 2, "fast_dropout": "off"}, False, "needs fast_dropout"),
        ("diffusion.ddpm", {"cpu_shards": 2, "batch_size": 2}, False, "too small"),
        ("diffusion.ddpm", {"cpu_shards": 2, "compile": "on"}, False, "compiled network"),
        ("gan.dcgan", {"cpu_shards": 2}, False, "does not support it"),  # batch norm
    ],
)
def test_when_batches_are_sharded(data_dir, two_threads, key, options, sharded, said):
    model = tiny_model(key)
    cfg = tiny_train_config(key, data_dir, **{"batch_size": 8, "cpu_threads": 2, **options})
    speed = apply_speed(model, cfg, CPU)
    try:
        assert (speed.shards is not None) is sharded
        text = " ".join(speed.messages)
        assert ("batch split across 2 threads" in text) is sharded
        if said:
            assert said in text
    finally:
        speed.close()


def test_train_job_shards_and_its_threads_end_with_the_run(tmp_path, data_dir, two_threads):
    cfg = tiny_train_config(
        "diffusion.ddpm", data_dir, steps=3, batch_size=8, cpu_threads=2, cpu_shards=2
    )
    progress: list[str] = []
    token = CancelToken()
    out = run_sync(
        train_job(tmp_path / "run", token, cfg),
        token,
        lambda p: progress.append(p.message or "") or shard_threads() and progress.append("live"),
    )
    assert out.ok, out.error
    assert "live" in progress  # shard threads ran during the run
    assert any("batch split across 2 threads" in m for m in progress)
    assert shard_threads() == []
    assert RunFolder(tmp_path / "run").read_metrics()


def test_the_option_parses_and_refuses_counts_below_one():
    from studio.core.errors import StudioError
    from studio.engine.speed import parse_options

    assert parse_options(["cpu-shards=2"]) == {"cpu_shards": 2}
    with pytest.raises(StudioError, match="cpu_shards"):
        parse_options(["cpu_shards=0"])
