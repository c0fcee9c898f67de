"""How a Stable Diffusion pipeline uses memory: precision, slicing, tiling, CPU offload.

A :class:`MemoryPlan` is one rung of a ladder, from fastest to lightest:

* ``full``: everything on the device, no slicing (fastest).
* ``balanced``: attention computed in slices and the VAE decoding one image at a time; a
  little slower, much smaller peaks.
* ``low``: ``balanced`` plus VAE tiling (large images decode tile by tile) and model CPU
  offload (each model moves to the GPU only while it runs; needs the ``accelerate`` package).

``memory="auto"`` picks a rung from the free GPU memory (:func:`choose_plan`); the other values
force one. When a generation runs out of memory anyway, the job frees memory and retries one
rung lighter (:func:`lighter`); after the lightest rung :func:`out_of_memory_error` says what
to change. Precision (:func:`resolve_dtype`) is chosen once per load and is not part of the
ladder: changing it would mean loading the model again.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch

from studio.core.errors import StudioError
from studio.engine.device import bf16_native

RUNGS = ("full", "balanced", "low")
GIB = 1024**3


@dataclass(frozen=True)
class MemoryPlan:
    rung: str
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False
    note: str = ""

    def describe(self) -> str:
        parts = [
            name
            for name, on in (
                ("attention slicing", self.attention_slicing),
                ("VAE slicing", self.vae_slicing),
                ("VAE tiling", self.vae_tiling),
                ("model CPU offload", self.cpu_offload),
            )
            if on
        ]
        text = f"memory: {self.rung}" + (f" ({', '.join(parts)})" if parts else "")
        return text + (f"; {self.note}" if self.note else "")


def offload_available() -> bool:
    """Model CPU offload needs the ``accelerate`` package."""
    return importlib.util.find_spec("accelerate") is not None


def plan_for(rung: str, device: torch.device) -> MemoryPlan:
    """The settings of ``rung`` on ``device`` (offload only on CUDA, and only with accelerate)."""
    if rung not in RUNGS:
        raise StudioError(f"memory must be one of auto, {', '.join(RUNGS)}, not {rung!r}.")
    if rung == "full":
        return MemoryPlan("full")
    if rung == "balanced":
        return MemoryPlan("balanced", attention_slicing=True, vae_slicing=True)
    offload, note = False, ""
    if device.type == "cuda":
        offload = offload_available()
        if not offload:
            note = "model CPU offload skipped: it needs the accelerate package (pip install accelerate)"
    return MemoryPlan(
        "low",
        attention_slicing=True,
        vae_slicing=True,
        vae_tiling=True,
        cpu_offload=offload,
        note=note,
    )


def estimate_bytes(width: int, height: int, dtype: torch.dtype) -> int:
    """A rough peak of activations for one image (UNet with guidance, then the VAE decode).

    Measured shape, not a promise: about 3 GiB at 512 x 512 in 16-bit, growing with the pixel
    count (the VAE decode dominates at large sizes), twice that in fp32.
    """
    megapixels = width * height / 1e6
    per_element = 4 if dtype == torch.float32 else 2
    return int((0.5 + 10.0 * megapixels) * GIB * per_element / 2)


def free_bytes(device: torch.device) -> int | None:
    """Free memory on a CUDA device, or None where it cannot be asked."""
    if device.type != "cuda":
        return None
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 - a driver that cannot answer: assume nothing
        return None
    return int(free)


def choose_plan(
    memory: str,
    device: torch.device,
    width: int,
    height: int,
    dtype: torch.dtype,
    *,
    free: int | None = None,
) -> MemoryPlan:
    """``memory`` = a rung name forces it; "auto" picks from free memory (full off CUDA).

    Call after the model's weights are on the device, so ``free`` is what is left for the
    activations: room for the estimate -> full; for half of it -> balanced; less -> low.
    """
    if memory != "auto":
        return plan_for(memory, device)
    free = free_bytes(device) if free is None else free
    if free is None:
        return plan_for("full", device)
    need = estimate_bytes(width, height, dtype)
    if free >= need:
        return plan_for("full", device)
    if free >= need // 2:
        return plan_for("balanced", device)
    return plan_for("low", device)


def lighter(plan: MemoryPlan, device: torch.device) -> MemoryPlan | None:
    """The next lighter rung, or None after the lightest."""
    index = RUNGS.index(plan.rung)
    return plan_for(RUNGS[index + 1], device) if index + 1 < len(RUNGS) else None


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto": bf16 on a CUDA GPU that has it in hardware (not emulated), else fp16 on a GPU;
    fp32 on the CPU."""
    if name == "fp32":
        return torch.float32
    if name == "fp16":
        return torch.float16
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if bf16_native(device) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
        dtype, str(dtype)
    )


# -- applying a plan ---------------------------------------------------------------------------


def apply_plan(pipe: Any, plan: MemoryPlan) -> None:
    """Switch slicing and tiling on ``pipe`` to match ``plan`` (offload is set up at load).

    Only what changed is touched: switching attention slicing replaces every attention
    processor, which is not free.
    """
    current: MemoryPlan | None = getattr(pipe, "_studio_memory_plan", None)
    if current is None or current.attention_slicing != plan.attention_slicing:
        if plan.attention_slicing:
            pipe.enable_attention_slicing()
        elif current is not None:
            pipe.disable_attention_slicing()
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        if current is None or current.vae_slicing != plan.vae_slicing:
            (vae.enable_slicing if plan.vae_slicing else vae.disable_slicing)()
        if current is None or current.vae_tiling != plan.vae_tiling:
            (vae.enable_tiling if plan.vae_tiling else vae.disable_tiling)()
    pipe._studio_memory_plan = plan


# -- out of memory -----------------------------------------------------------------------------


def out_of_memory_error(
    width: int, height: int, plan: MemoryPlan, device: torch.device
) -> StudioError:
    """The message after the lightest rung failed too: exactly what to change."""
    tips = [
        f"a smaller size (now {width}x{height}; try {min(width, 512)}x{min(height, 512)} or less)"
    ]
    if device.type == "cuda" and not plan.cpu_offload:
        tips.append("installing the accelerate package so memory=low can offload models to the CPU")
    tips.append("closing other programs that use the GPU")
    if device.type != "cpu":
        tips.append("device cpu (slow, but bounded by system memory)")
    return StudioError(
        f"Out of memory on {device.type.upper()} even at the lightest memory setting "
        f"({plan.describe()}). Try " + ", ".join(tips) + "."
    )


# -- torch.compile -----------------------------------------------------------------------------


def compile_unet(pipe: Any) -> bool:
    """Compile the UNet in place (``nn.Module.compile``); False where torch cannot compile.

    Compilation itself happens at the first call, so a failure there surfaces while
    generating: :func:`uncompile_unet` then puts the eager UNet back.
    """
    unet = getattr(pipe, "unet", None)
    if unet is None or getattr(unet, "_compiled_call_impl", None) is not None:
        return unet is not None
    try:
        unet.compile(fullgraph=False, dynamic=False)
    except Exception:  # noqa: BLE001 - no compiler here: eager it is
        return False
    return True


def uncompile_unet(pipe: Any) -> None:
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        unet._compiled_call_impl = None
