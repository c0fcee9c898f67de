"""Device and precision choice, and what the status line reports about the device."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from studio.core import gcpolicy
from studio.core.errors import StudioError
from studio.core.options import DEVICE_CHOICES, PRECISION_CHOICES  # noqa: F401 (declared there)


def resolve_device(preference: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU. An explicit choice must exist."""
    pref = (preference or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(pref)
    except RuntimeError:
        raise StudioError(
            f"Unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StudioError(
                "CUDA was asked for, but this torch build sees no NVIDIA GPU. Use --device cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise StudioError(
                f"There is no GPU {device.index}; this machine has {torch.cuda.device_count()}."
            )
    if device.type == "mps" and not (torch.backends.mps.is_available()):
        raise StudioError("Apple MPS was asked for but is not available here. Use --device cpu.")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({torch.get_num_threads()} threads)"


def bf16_native(device: torch.device) -> bool:
    """True on a CUDA GPU with bf16 in hardware (Ampere and later), not emulated."""
    if device.type != "cuda":
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no emulation argument
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """What training on ``device`` computes in: "fp32", "bf16" or "fp16".

    Mixed precision applies on a CUDA GPU only (CPU autocast is slower than fp32 for these
    small convolutional models). ``auto`` and ``bf16`` give bf16 where the GPU has it in
    hardware and fp16 (with gradient scaling, see ``StepRunner``) where it does not, as on
    pre-Ampere cards. ``fp32`` forces full precision; ``fp16`` forces fp16.
    """
    if precision not in PRECISION_CHOICES:
        raise StudioError(
            f"precision must be one of {', '.join(PRECISION_CHOICES)}, not {precision!r}."
        )
    if precision == "fp32" or device.type != "cuda":
        return "fp32"
    if precision in ("auto", "bf16") and bf16_native(device):
        return "bf16"
    return "fp16"


def autocast_factory(device: torch.device, precision: str = "auto") -> Callable[[], Any]:
    """A zero-argument factory of the autocast context for training steps, in the precision
    :func:`resolve_precision` picks. fp16 needs gradient scaling as well (the trainer's
    ``StepRunner`` adds it); bf16 has fp32's range and does not."""
    resolved = resolve_precision(device, precision)
    if resolved == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def precision_message(device: torch.device, precision: str) -> str | None:
    """A line for the run's log about the training precision, or None for plain fp32 on
    a device where nothing else was possible."""
    resolved = resolve_precision(device, precision)
    if resolved == "bf16":
        return "Precision: bf16 autocast."
    if resolved == "fp16":
        why = "" if precision == "fp16" else " (this GPU has no bf16)"
        return f"Precision: fp16 autocast with gradient scaling{why}."
    if precision in ("bf16", "fp16"):
        return f"Precision: {precision} applies to CUDA GPUs only; training in fp32 here."
    return None


def memory_in_use(device: torch.device) -> int:
    """Bytes in use: allocated GPU memory, or this process's resident memory on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    if device.type == "mps":
        with contextlib.suppress(Exception):
            return int(torch.mps.current_allocated_memory())
    return process_rss()


def is_out_of_memory(err: BaseException) -> bool:
    """True for a device or host allocator failure: torch's out-of-memory error, Python's
    MemoryError, or a RuntimeError saying so (CPU allocators, older CUDA builds)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(err, (oom, MemoryError)):
        return True
    if isinstance(err, RuntimeError):
        text = str(err).lower()
        return "out of memory" in text or "can't allocate memory" in text
    return False


def free_memory() -> None:
    """Collect garbage and return cached device memory after an out-of-memory error. Call it
    outside the ``except`` block (the exception's traceback keeps the failed step's tensors
    alive). The collection runs on the GUI thread when one owns it (:mod:`studio.core.gcpolicy`);
    CUDA is not initialised just for this."""
    gcpolicy.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if (
        mps is not None
        and getattr(torch.backends, "mps", None)
        and torch.backends.mps.is_available()
    ):
        mps.empty_cache()


def process_rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return 0


def step_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    """A generator whose stream depends only on (seed, step): resume replays it exactly."""
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 0x9E3779B1 + step * 0x85EBCA77 + 0x165667B1) % (2**63))
    return gen


def cpu_generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed % (2**63))
    return gen


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
