"""The trainer's speed options, applied to a built model: TF32, channels_last, fused AdamW,
``torch.compile`` (optionally with CUDA graphs) with an eager fallback, CPU threads, and on
the CPU keeping freed memory for reuse (glibc).

Every option is ``auto`` by default where that is safe, and each one reports what it did in a
line the trainer shows. ``apply_speed`` runs after a checkpoint was loaded, so converted
optimizers keep their state and the options may differ between a run and its resume.

Compile is the fragile one (PERFORMANCE.md: a stride assertion in a ``ConvTranspose2d``
backward, recompile limits, ~50 s for the first step), so it is wrapped twice:

* each network's call goes through :class:`_CompiledCall`: a compile that raises when it is
  set up or at a call switches every network back to eager and repeats that call eagerly;
* :meth:`Speed.guard` snapshots weights, optimizer state and RNG before the first compiled
  step; an error anywhere in that step (the backward is compiled lazily, at its first use)
  restores the snapshot and runs the step again, eagerly.

Only training calls are compiled (module in train mode, gradients on): sampling, peeks and
no-grad passes stay eager, so a network compiles once for its one training shape and precision.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import inspect
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from studio.core import options
from studio.engine.runs import TrainConfig
from studio.models.base import GenerativeModel
from studio.models.dropout import use_fast_dropout
from studio.models.shards import ShardPool

CompileFn = Callable[..., Callable[..., Any]]


def check_options(config: TrainConfig) -> None:
    """Refuse option values the trainer does not know, naming the setting and what is allowed
    (the ranges and choices are declared once, in :mod:`studio.core.options`)."""
    config.check()


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["compile=on", "accumulate=2"]`` -> TrainConfig keyword arguments, typed and checked."""
    return dict(options.parse_option(pair) for pair in pairs)


@dataclass
class Speed:
    """What :func:`apply_speed` turned on, and the compile fallback's state."""

    device: torch.device
    channels_last: bool = False
    cuda_graphs: bool = False
    compiled: list[nn.Module] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    compile_failed: bool = False
    _verified: bool = False
    shards: ShardPool | None = None  # CPU: the batch split across threads

    def close(self) -> None:
        """Stop the shard threads (the run is over)."""
        if self.shards is not None:
            self.shards.close()
            self.shards = None

    @property
    def compiling(self) -> bool:
        return bool(self.compiled) and not self.compile_failed

    def take_messages(self) -> list[str]:
        out, self.messages = self.messages, []
        return out

    def fall_back(self, err: BaseException) -> None:
        """Send every compiled network back to eager; say so once."""
        self._eager()
        if self.compile_failed:
            return
        self.compile_failed = True
        text = str(err).strip().splitlines()
        reason = type(err).__name__ + (f": {text[0][:200]}" if text else "")
        self.messages.append(
            f"torch.compile failed ({reason}); training goes on without it (eager)."
        )

    def _eager(self) -> None:
        for module in self.compiled:
            module._compiled_call_impl = None

    def prepare_inputs(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def before_step(self) -> None:
        if self.cuda_graphs and self.compiling:
            # CUDA-graph trees reuse output buffers; a new step must be marked as such.
            with contextlib.suppress(AttributeError):
                torch.compiler.cudagraph_mark_step_begin()

    def guard(
        self, model: GenerativeModel, run: Callable[[], Any], generator: torch.Generator
    ) -> Any:
        """Run one training step. Until a compiled step has succeeded, an error in it restores
        the state from before the step and repeats it eagerly, with the same RNG streams; an
        error that the eager step repeats is the step's own and is raised."""
        if not self.compiling or self._verified:
            return run()
        snap = _snapshot(model, generator)
        try:
            out = run()
        except Exception as err:
            first = err
        else:
            self._verified = True
            return out
        _restore(model, generator, snap)
        self._eager()
        try:
            out = run()
        except Exception as eager_err:
            self.compile_failed = True
            raise eager_err from first
        self.fall_back(first)
        return out


class _CompiledCall:
    """Stands in for ``module._compiled_call_impl``: the compiled call for training passes,
    eager for everything else, and eager for good after the first failure."""

    def __init__(self, module: nn.Module, compiled: Callable[..., Any], speed: Speed) -> None:
        self.module, self.compiled, self.speed = module, compiled, speed

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        m = self.module
        if self.speed.compile_failed or not (m.training and torch.is_grad_enabled()):
            return m._call_impl(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:
            self.speed.fall_back(err)
            return m._call_impl(*args, **kwargs)


# -- applying the options -------------------------------------------------------------------


def apply_speed(
    model: GenerativeModel,
    config: TrainConfig,
    device: torch.device,
    compile_fn: CompileFn | None = None,
) -> Speed:
    """Apply ``config``'s speed options to ``model`` (after any checkpoint was loaded)."""
    check_options(config)
    speed = Speed(device)
    cuda = device.type == "cuda"
    done: list[str] = []
    _apply_threads(config, device, done)
    if _wants(config.reuse_cpu_memory, device.type == "cpu" and not _malloc_env_set()):
        if reuse_freed_memory():
            done.append("freed memory kept for reuse")
        elif config.reuse_cpu_memory == "on":
            speed.messages.append("reuse_cpu_memory needs Linux with glibc: option ignored here.")
    _apply_tf32(config.tf32, cuda, speed, done)
    if _wants(config.fast_dropout, device.type == "cpu"):
        if device.type != "cpu":
            speed.messages.append("fast_dropout applies to CPU training only: option ignored here.")
        elif use_fast_dropout(model):
            done.append("fast dropout")
    # a model with a diffusers UNet has imported diffusers already; others never need it
    if _wants(config.lean_unet, device.type == "cpu") and "diffusers" in sys.modules:
        from studio.models.lean_unet import use_lean_unet

        if use_lean_unet(model):
            done.append("lean UNet blocks")
    if _wants(config.channels_last, cuda and _is_convolutional(model)):
        model.to(memory_format=torch.channels_last)
        for opt in model.optimizers.values():
            _match_state_layout(opt)
        speed.channels_last = True
        done.append("channels_last")
    fused = fused_adam_supported(device)
    if _wants(config.fused_adamw, fused):  # auto: the fused kernel wherever torch has one
        kinds = {
            name: convert_optimizer(opt, fused=fused) for name, opt in model.optimizers.items()
        }
        for name, (opt, _) in kinds.items():
            model.optimizers[name] = opt
        used = sorted({k for _, k in kinds.values()})
        if used:
            done.append(" + ".join(used) + " Adam")
    _apply_shards(model, config, device, speed, done)
    graphs = bool(config.cuda_graphs)
    if graphs and not cuda:
        speed.messages.append("CUDA graphs need an NVIDIA GPU: option ignored here.")
        graphs = False
    if graphs or _wants(config.compile, cuda):
        mode = "reduce-overhead" if graphs else None
        _compile_networks(model, speed, compile_fn or torch.compile, mode)
        if speed.compiling:
            speed.cuda_graphs = graphs
            done.append(
                "torch.compile"
                + (" + CUDA graphs" if graphs else "")
                + " (the first step compiles)"
            )
    if done:
        speed.messages.insert(0, "Speed options: " + ", ".join(done) + ".")
    return speed


def _apply_shards(
    model: GenerativeModel, config: TrainConfig, device: torch.device, speed: Speed, done: list[str]
) -> None:
    """CPU: split each batch across ``cpu_shards`` threads (studio.models.shards) where the
    family allows it and every dropout draws from a per-thread generator. Off by default: on
    2 cores it measured no faster than torch's own threads (docs/performance.md)."""
    threads = torch.get_num_threads()
    wanted = config.cpu_shards
    if wanted < 2:
        return
    why = ""
    if device.type != "cpu":
        why = "it applies to CPU training only"
    elif not type(model).shardable:
        why = f"{type(model).info.display_name} does not support it"
    elif config.compile == "on" or config.cuda_graphs:
        why = "a compiled network runs whole batches"
    elif any(type(m) is nn.Dropout and m.p > 0 for m in model.modules()):
        why = "it needs fast_dropout (torch's dropout shares one generator across threads)"
    elif config.batch_size // max(1, config.accumulate) < 2 * wanted:
        why = f"the batch is too small for {wanted} shards"
    if why:
        speed.messages.append(f"cpu_shards={wanted} ignored: {why}.")
        return
    speed.shards = ShardPool(wanted, max(1, threads // wanted))
    done.append(f"batch split across {wanted} threads")


def _wants(option: str, auto: bool) -> bool:
    return option == "on" or (option == "auto" and auto)


def _is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())


def _apply_tf32(option: str, cuda: bool, speed: Speed, done: list[str]) -> None:
    if option == "auto" and not cuda:
        return
    if not cuda:
        if option == "on":
            speed.messages.append("TF32 applies to NVIDIA GPUs only: option ignored here.")
        return
    on = option != "off"
    # TF32 is process-wide: it stays set for later work in this process (sampling included).
    torch.set_float32_matmul_precision("high" if on else "highest")
    with contextlib.suppress(AttributeError, RuntimeError):
        torch.backends.cudnn.allow_tf32 = on
    if on:
        done.append("TF32 matmuls")


def physical_cores() -> int:
    """CPU cores this process may use, counting each core once (not its hyper-threads) and
    respecting CPU affinity and a cgroup CPU quota."""
    try:
        logical = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        logical = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
        if quota != "max":
            logical = min(logical, max(1, int(int(quota) / int(period))))
    siblings = 1
    with contextlib.suppress(OSError, ValueError):
        text = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text(
            encoding="ascii"
        )
        siblings = sum(
            (int(b) - int(a) + 1) if "-" in part else 1
            for part in text.strip().split(",")
            for a, _, b in [part.partition("-")]
        )
    return max(1, logical // max(1, siblings))


def _apply_threads(config: TrainConfig, device: torch.device, done: list[str]) -> None:
    """CPU training: ``cpu_threads`` when given; otherwise one thread per physical core (at
    most 16), unless OMP_NUM_THREADS already says how many."""
    if device.type != "cpu":
        return
    if config.cpu_threads > 0:
        threads = config.cpu_threads
    elif os.environ.get("OMP_NUM_THREADS"):
        done.append(f"{torch.get_num_threads()} CPU threads (OMP_NUM_THREADS)")
        return
    else:
        threads = min(16, physical_cores())
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only possible before any parallel work started
        torch.set_num_interop_threads(max(1, min(4, threads // 2)))
    done.append(f"{torch.get_num_threads()} CPU threads")


# -- the CPU allocator ---------------------------------------------------------------------------

# glibc's mallopt parameters. Above the trim threshold, free memory at the top of a heap goes
# back to the kernel; blocks above the mmap threshold get their own mapping, unmapped on free.
# The top pad also keeps a thread's arena (the GUI trains on its engine thread) from
# deleting and re-creating its heaps every step.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP_BYTES = 1 << 30  # free memory a heap may hold before glibc trims it
_PAD_BYTES = 64 << 20  # address space reserved past a heap's top (touched only when used)
_MMAP_BYTES = 256 << 20  # blocks this large or larger still get their own mapping
_reusing = False


def _libc() -> Any:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _malloc_env_set() -> bool:
    """The user tuned glibc's allocator already (MALLOC_*_ variables or GLIBC_TUNABLES)."""
    names = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or any(
        name in os.environ for name in names
    )


def reuse_freed_memory() -> bool:
    """Keep the memory a training step frees inside the process, for the next step.

    A step allocates and frees the same large activation and gradient buffers every time.
    glibc returns them to the kernel (a block above its mmap threshold is unmapped; free memory
    above the trim threshold at the top of a heap is trimmed), so the next step faults each
    page in again and the kernel zeroes it: 1,200 to 6,200 page faults and 6 to 22 ms of system
    time per step for the small benchmark DDPM at batch 16 (docs/performance.md). Fixed,
    higher thresholds end that. Process-wide and permanent (glibc cannot return to its adaptive
    thresholds); :func:`release_freed_memory` hands the kept memory back when a run ends.
    Returns False where the C library is not glibc."""
    global _reusing
    if _reusing:
        return True
    libc = _libc()
    if libc is None:
        return False
    settings = (
        (_M_MMAP_THRESHOLD, _MMAP_BYTES),
        (_M_TRIM_THRESHOLD, _KEEP_BYTES),
        (_M_TOP_PAD, _PAD_BYTES),
    )
    _reusing = all([libc.mallopt(param, value) == 1 for param, value in settings])
    return _reusing


def release_freed_memory() -> None:
    """Give the free memory kept by :func:`reuse_freed_memory` back to the kernel."""
    if _reusing and (libc := _libc()) is not None:
        libc.malloc_trim(0)


# -- optimizers -------------------------------------------------------------------------------


def fused_adam_supported(device: torch.device) -> bool:
    """Whether torch has a fused Adam/AdamW kernel for ``device`` (CUDA; the CPU since torch
    2.4, where it is one vectorised pass per tensor instead of about ten small ops)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without the helper: trust CUDA only
        return device.type == "cuda"
    return device.type in _get_fused_kernels_supported_devices()


def convert_optimizer(opt: torch.optim.Optimizer, fused: bool) -> tuple[torch.optim.Optimizer, str]:
    """The same Adam/AdamW (param groups, state, hyper-parameters) using the fused kernel
    (``fused``) or the foreach one. Other optimizers come back unchanged (kind "")."""
    if type(opt) not in (torch.optim.Adam, torch.optim.AdamW):
        return opt, ""
    kind = "fused" if fused else "foreach"
    state = opt.state_dict()
    for group in state["param_groups"]:
        group["fused"], group["foreach"] = (True, False) if fused else (None, True)
    groups = [{k: v for k, v in g.items()} for g in opt.param_groups]
    # Only what the constructor takes: AdamW's defaults also hold "decoupled_weight_decay",
    # which AdamW.__init__ does not accept (it always decouples).
    accepted = inspect.signature(type(opt).__init__).parameters
    defaults = {k: v for k, v in opt.defaults.items() if k in accepted}
    defaults["fused"], defaults["foreach"] = (True, None) if fused else (None, True)
    new = type(opt)(groups, **defaults)
    new.load_state_dict(state)  # moves "step" onto the device for the fused kernel
    for hook_dict in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
        getattr(new, hook_dict).update(getattr(opt, hook_dict))
    return new, kind


def _match_state_layout(opt: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state (contiguous) its parameter's memory format."""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.dim() == 4:
                    opt.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


# -- compile -----------------------------------------------------------------------------------


def _compile_networks(
    model: GenerativeModel, speed: Speed, compile_fn: CompileFn, mode: str | None
) -> None:
    kwargs: dict[str, Any] = {"dynamic": False}
    if mode:
        kwargs["mode"] = mode
    for name, module in model.networks().items():
        try:
            compiled = compile_fn(module._call_impl, **kwargs)
        except Exception as err:  # a missing compiler, an unsupported platform...
            speed.compiled.append(module)
            speed.fall_back(err)
            speed.messages[-1] = speed.messages[-1].replace("failed", f"failed for {name}", 1)
            return
        module._compiled_call_impl = _CompiledCall(module, compiled, speed)
        speed.compiled.append(module)


def _snapshot(model: GenerativeModel, generator: torch.Generator) -> dict[str, Any]:
    return {
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizers": {name: _clone(opt.state_dict()) for name, opt in model.optimizers.items()},
        "extra": copy.deepcopy(model.extra_state()),
        "generator": generator.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }


def _restore(model: GenerativeModel, generator: torch.Generator, snap: dict[str, Any]) -> None:
    with torch.no_grad():
        model.load_state_dict(snap["weights"])
    for name, opt in model.optimizers.items():
        opt.load_state_dict(snap["optimizers"][name])
        opt.zero_grad(set_to_none=True)
    model.load_extra_state(snap["extra"])
    generator.set_state(snap["generator"])
    torch.set_rng_state(snap["cpu_rng"])
    if snap["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(snap["cuda_rng"])


def _clone(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_clone(v) for v in tree]
    return copy.deepcopy(tree)
