"""Data-parallel training under an existing launcher (``torchrun`` or ``accelerate launch``).

The launcher starts one process per GPU (or CPU slot) and sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; ``studio train`` then runs unchanged. Families own their optimizers and do
their own backward passes (a GAN has two), so instead of wrapping each network in
DistributedDataParallel, every optimizer gets a pre-step hook that averages its gradients
across processes in one flattened all-reduce. Parameters and buffers start identical (the run's
seed fixes the initial weights; rank 0's copy is broadcast anyway), each process trains on its
own slice of every global batch, and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from studio.core.errors import StudioError


@dataclass
class Distributed:
    """One process's place in a data-parallel run; a no-op when ``world_size`` is 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    _owns_group: bool = False
    _hooks: list[Any] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, preference: str = "auto") -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = preference != "cpu" and torch.cuda.is_available()
        device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        owns = False
        if not dist.is_initialized():
            try:
                dist.init_process_group("nccl" if use_cuda else "gloo")
            except (RuntimeError, ValueError) as err:
                raise StudioError(f"Could not join the distributed run: {err}") from err
            owns = True
        return cls(rank, world, local, device, owns)

    # -- setup ---------------------------------------------------------------------------
    def prepare(self, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Make every process start from rank 0's weights and average gradients each step."""
        if not self.enabled:
            return
        self.broadcast_state(model)
        for opt in optimizers.values():
            self._hooks.append(opt.register_step_pre_hook(self._average_grads))

    def _average_grads(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def broadcast_state(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers (batch-norm statistics, say) to every rank."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor.data, src=0)

    def agree(self, text: str) -> str:
        """Rank 0's ``text`` on every rank: a run folder named from the clock must be one
        folder, and each process has its own clock."""
        if not self.enabled:
            return text
        device = self._comm_device()
        data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)
        size = torch.tensor([len(data)], dtype=torch.int64, device=device)
        dist.broadcast(size, src=0)
        if not self.is_main:
            data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
        dist.broadcast(data, src=0)
        return bytes(data.cpu().tolist()).decode("utf-8")

    # -- per step ------------------------------------------------------------------------
    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global batch's indices."""
        return indices[self.rank :: self.world_size] if self.enabled else indices

    def seed(self, seed: int) -> int:
        """A per-rank seed: each process draws different noise for its slice of the batch."""
        return seed if self.rank == 0 else seed * 1_000_003 + self.rank

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (all ranks stop at the same step)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        if not self.enabled or not metrics:
            return metrics
        names = sorted(metrics)
        t = torch.tensor(
            [metrics[k] for k in names], dtype=torch.float64, device=self._comm_device()
        )
        dist.all_reduce(t)
        return dict(zip(names, (t / self.world_size).tolist()))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False

    def _comm_device(self) -> torch.device:
        return (
            self.device
            if self.device is not None and self.device.type == "cuda"
            else torch.device("cpu")
        )
