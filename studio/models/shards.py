"""Batch shards on CPU threads: one training step's batch split across threads of one process.

On a CPU, torch parallelises each operation over its threads, and the small convolutions and
element-wise operations of a small model keep two threads only ~80% busy (measured for the
DDPM UNet of ``benchmarks/train_speed.py --quick`` on 2 cores). Splitting the batch into
contiguous shards, each run forward and backward on a thread of its own with fewer intra-op
threads, keeps the cores busier: the heavy operations release the GIL, so the shards overlap.

The maths is the batch's: each shard's loss is its part of the batch loss (a sum over its rows
divided by the batch's element count), and the shards' gradients are added in shard order, so
a step is deterministic and equal to the unsharded step up to float rounding. Only families
whose networks treat every sample on its own may shard (no batch norm; GroupNorm, attention
and convolutions are per sample); dropout must be :class:`~studio.models.dropout.FastDropout`,
which draws from each shard's own generator (torch's global generator is shared by threads,
so plain ``nn.Dropout`` would make the masks depend on thread timing).

:class:`ShardPool` owns the threads; the trainer puts it in ``StepContext.shards``. A family
calls :meth:`ShardPool.loss` with a function of a row slice and hands the returned loss to
``optimizer_step`` as usual: its backward adds the precomputed gradients.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from studio.models.dropout import thread_generator

LossOfRows = Callable[[slice], Tensor]


class _Precomputed(torch.autograd.Function):
    """A loss value whose backward hands out gradients computed beforehand: ``backward(g)``
    gives each parameter ``g * grad``, so loss scaling and accumulation work unchanged."""

    @staticmethod
    def forward(ctx, value: Tensor, grads: Sequence[Tensor | None], *params: Tensor) -> Tensor:  # type: ignore[override]
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grads = [None if grad is None else grad * g for grad in ctx.grads]
        ctx.grads = ()
        return (None, None, *grads)


def shard_rows(n: int, shards: int) -> list[slice]:
    """``n`` rows as at most ``shards`` contiguous slices, the first ones one row longer."""
    shards = max(1, min(shards, n))
    size, extra = divmod(n, shards)
    out, start = [], 0
    for i in range(shards):
        stop = start + size + (1 if i < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out


class ShardPool:
    """``shards`` worker threads, each running torch with ``threads_each`` intra-op threads."""

    def __init__(self, shards: int, threads_each: int) -> None:
        if shards < 2:
            raise ValueError("a shard pool needs at least 2 shards")
        self.shards, self.threads_each = shards, max(1, threads_each)
        total = torch.get_num_threads()
        ready = threading.Barrier(shards)

        def start() -> None:
            # torch keeps the intra-op thread count per thread (OpenMP) and sets it from a
            # process-wide default on a thread's first use: use it first, then set it (which
            # also sets that default for threads created later; restored below).
            torch.get_num_threads()
            torch.set_num_threads(self.threads_each)
            ready.wait()

        self._pool = ThreadPoolExecutor(shards, thread_name_prefix="studio-shard")
        # Start every worker now (each waits at the barrier, so they are distinct threads).
        for future in [self._pool.submit(start) for _ in range(shards)]:
            future.result()
        torch.set_num_threads(total)

    def loss(
        self,
        loss_of: LossOfRows,
        n: int,
        params: Sequence[Tensor],
        seed: int,
    ) -> Tensor:
        """The batch loss, computed shard by shard on the pool's threads; its backward gives
        ``params`` the summed gradients. ``loss_of(rows)`` returns the loss of those rows as
        its share of the batch loss (it enters autocast itself: autocast is per thread);
        ``seed`` seeds each shard's dropout generator (with the shard's index)."""
        rows = shard_rows(n, self.shards)
        params = [p for p in params if p.requires_grad]

        def run(i: int, part: slice) -> tuple[Tensor, tuple[Tensor | None, ...]]:
            gen = torch.Generator().manual_seed((seed + 0x9E3779B97F4A7C15 * (i + 1)) % 2**63)
            with torch.enable_grad(), thread_generator(gen):
                value = loss_of(part)
                grads = torch.autograd.grad(value, params, allow_unused=True)
            return value.detach(), grads

        results = [f.result() for f in [self._pool.submit(run, i, r) for i, r in enumerate(rows)]]
        value = results[0][0]
        summed = list(results[0][1])
        for other_value, other_grads in results[1:]:
            value = value + other_value
            for j, grad in enumerate(other_grads):
                if grad is None:
                    continue
                summed[j] = grad if summed[j] is None else summed[j].add_(grad)
        return _Precomputed.apply(value, summed, *params)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
