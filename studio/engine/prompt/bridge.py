"""The bridge between a diffusers pipeline call and a Studio job: :func:`run_pipeline`.

A pipeline call runs its whole denoising loop and only calls back (``callback_on_step_end``)
between steps; a callback cannot ``yield``. So the job runs the call on a small worker thread
that it owns, and the callback talks to the job through a queue: after each step it checks the
cancel token (raising :class:`Cancelled` inside the pipeline, so a cancelled image is never
decoded), and it posts the step, with a cheap latent preview every ``preview_every`` steps. The
job, on the engine thread, takes the posts off the queue and yields them as they come, so
previews arrive while the image is being made. The worker is always joined before the job goes
on (on cancel, error, or ``close()`` too), so one pipeline is never used by two threads. The
alternative, driving the denoising loop ourselves, would mean re-implementing every pipeline
(txt2img, img2img, inpaint, SD and SDXL) and tracking diffusers' changes; the thread costs one
queue post per step.

Previews are the latents mapped to RGB by a fixed 4 x 3 linear map (an approximation of the SD
VAE, no decode), computed on the device and copied to the host without blocking the worker (a
CUDA event marks when the copy is done; the job, not the worker, waits for it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch
from PIL import Image

from studio.core.jobs import CancelToken, Progress

PREVIEW_MAX = 512  # previews are upsampled to at most this many pixels on their long side

# SD latents (as the denoising loop holds them) -> RGB in [-1, 1]: a least-squares fit of the
# SD VAE's decoder colours, widely used for live previews. Rows: latent channels.
LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)


# -- previews -----------------------------------------------------------------------------------


def latent_preview(latents: torch.Tensor) -> torch.Tensor:
    """The first latent of a batch as an h x w x 3 uint8 image, on the latents' device."""
    x = latents[0].float()
    if x.shape[0] == len(LATENT_RGB):
        rgb = torch.einsum("chw,cr->hwr", x, torch.tensor(LATENT_RGB, device=x.device))
    else:  # another latent layout: show its first three channels
        x = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
        rgb = x.permute(1, 2, 0) / x.abs().amax().clamp_min(1e-6)
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _preview_to_host(small: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Start the copy to the host; on CUDA without waiting (an event marks when it is done)."""
    if small.device.type != "cuda":
        return small.cpu(), None
    host = torch.empty(small.shape, dtype=small.dtype, pin_memory=True)
    host.copy_(small, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _upsample(preview: np.ndarray, factor: int) -> np.ndarray:
    h, w = preview.shape[:2]
    scale = min(factor, PREVIEW_MAX / max(h, w))
    if scale <= 1:
        return preview
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(preview).resize(size, Image.BILINEAR))


# -- running one pipeline call on a worker thread ------------------------------------------------


class _Abort(Exception):
    """Raised in the pipeline callback when the job was closed without a cancel."""


def run_pipeline(
    pipe: Any,
    kwargs: dict[str, Any],
    token: CancelToken,
    *,
    preview_every: int,
    on_step: Callable[[int, np.ndarray | None], Progress],
) -> Generator[Progress, None, Any]:
    """Call ``pipe(**kwargs)`` on a worker thread and yield ``on_step(step, preview)`` after
    every denoising step as it happens; return the pipeline's output.

    A cancelled token raises :class:`Cancelled` inside the pipeline at the next step, so no
    image is decoded; the job re-raises it. The worker is joined before this returns or raises.
    """
    posts: queue.SimpleQueue = queue.SimpleQueue()
    closing = threading.Event()

    def callback(_pipe: Any, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if closing.is_set():
            raise _Abort()
        token.check()
        preview = None
        if preview_every and (i + 1) % preview_every == 0 and "latents" in tensors:
            preview = _preview_to_host(latent_preview(tensors["latents"]))
        posts.put(("step", i + 1, preview))
        return {}

    def work() -> None:
        try:
            out = pipe(
                **kwargs,
                callback_on_step_end=callback,
                callback_on_step_end_tensor_inputs=["latents"],
            )
            posts.put(("done", out, None))
        except BaseException as err:  # noqa: BLE001 - handed to the job, which re-raises it
            posts.put(("error", err, None))

    worker = threading.Thread(target=work, name="studio-generate", daemon=True)
    factor = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    worker.start()
    try:
        while True:
            what, value, preview = posts.get()
            if what == "done":
                return value
            if what == "error":
                raise value
            image = None
            if preview is not None:
                host, event = preview
                if event is not None:
                    event.synchronize()
                image = _upsample(host.numpy(), factor)
            yield on_step(value, image)
    finally:
        closing.set()
        worker.join()
