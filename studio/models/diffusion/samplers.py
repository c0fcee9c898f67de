"""Sampling pieces shared by diffusion models: sampler choice, guidance, x0 previews.

The samplers are diffusers schedulers rebuilt ``from_config`` of the training scheduler, so a
model trained with one noise process can be sampled by DDPM (ancestral, slow, the reference),
DDIM (deterministic, ~50 steps) or DPM-Solver++ (deterministic, ~20 steps).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import Tensor, nn

from studio.core.options import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS  # noqa: F401 (re-exported)
from studio.models.base import SampleStep
from studio.models.capabilities import SamplingOption

# The names, the default and the step counts are declared once, in studio.core.options.

#: The diffusion families' sampling knobs, as data (Compare's sampling row, --with).
SAMPLING_OPTIONS = (
    SamplingOption(
        "sampler",
        "choice",
        DEFAULT_SAMPLER,
        "Sampler",
        "ddpm: the full chain; ddim and dpm++ take far fewer steps",
        choices=tuple(SAMPLERS),
    ),
    SamplingOption(
        "steps",
        "int",
        None,
        "Steps",
        "sampler steps (more is slower and usually cleaner)",
        minimum=1,
        maximum=1000,
        defaults_by="sampler",
        defaults=tuple(DEFAULT_STEPS.items()),
    ),
    SamplingOption(
        "guidance",
        "float",
        None,
        "Guidance",
        "classifier-free guidance of class-conditional models (default: the model's)",
        minimum=0.0,
        maximum=20.0,
    ),
)


def clips(train_config: Any) -> bool:
    """Whether the noise process clips the predicted clean sample to [-1, 1]: pixels do;
    latents (latent diffusion, whose scaled latents go past 1) do not."""
    return bool(train_config.get("clip_sample", True))


def make_sampler(name: str, train_config: Any) -> Any:
    """A fresh diffusers scheduler for one sampling run (they keep per-run state)."""
    if name == "ddpm":
        return DDPMScheduler.from_config(train_config)
    if name == "ddim":
        return DDIMScheduler.from_config(train_config)  # eta = 0: deterministic
    if name == "dpm++":
        extra: dict[str, Any] = {}
        if train_config["beta_schedule"] == "squaredcos_cap_v2":
            # The cosine schedule's last steps are almost pure noise; diffusers advises clipping
            # lambda there so the solver's first step stays stable.
            extra["lambda_min_clipped"] = -5.1
        return DPMSolverMultistepScheduler.from_config(
            train_config,
            algorithm_type="dpmsolver++",
            solver_order=2,
            variance_type=None,  # "fixed_small" is a DDPM notion; the solver needs None here
            # With sample_max_value 1 dynamic thresholding is a plain clamp of x0 to [-1, 1],
            # the same as DDPM/DDIM's clip_sample.
            thresholding=clips(train_config),
            sample_max_value=1.0,
            **extra,
        )
    raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")


def guided_output(
    unet: nn.Module,
    x: Tensor,
    t: Tensor,
    labels: Tensor | None,
    null_label: int,
    guidance: float,
) -> Tensor:
    """The UNet's output at ``(x, t)``, with classifier-free guidance when ``labels`` is given.

    Guidance mixes ``uncond + w * (cond - uncond)``: w = 1 is the plain conditional model (one
    pass), w = 0 the unconditional one; otherwise both run in one batched call.
    """
    t = t.reshape(-1).expand(x.shape[0]).to(x.device)
    if labels is None:
        return unet(x, t).sample
    if guidance == 1.0:
        return unet(x, t, class_labels=labels).sample
    null = torch.full_like(labels, null_label)
    both = unet(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([labels, null]))
    cond, uncond = both.sample.chunk(2)
    return uncond + guidance * (cond - uncond)


def predicted_x0(
    alphas_cumprod: Tensor,
    x: Tensor,
    output: Tensor,
    t: Tensor,
    prediction_type: str,
    clip: bool = True,
) -> Tensor:
    """The clean image implied by the model output at step ``t`` (for previews), in [-1, 1]
    (not clamped with ``clip=False``: latents)."""
    a = alphas_cumprod.to(x.device)[t.to(x.device).long()].float().reshape(-1, 1, 1, 1)
    if prediction_type == "v_prediction":
        x0 = a.sqrt() * x - (1 - a).sqrt() * output
    elif prediction_type == "sample":
        x0 = output
    else:
        x0 = (x - (1 - a).sqrt() * output) / a.sqrt()
    return x0.clamp(-1, 1) if clip else x0


def denoise_iter(
    denoise: Callable[[Tensor, Tensor], Tensor],
    sampler: str | Any,
    steps: int,
    train_scheduler: Any,
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device,
    prediction_type: str,
    init: Tensor | None = None,
    strength: float = 1.0,
) -> Generator[SampleStep, None, Tensor]:
    """Run ``sampler`` (a name from :data:`SAMPLERS`, or a fresh diffusers scheduler) for
    ``steps`` from noise drawn on the CPU ``generator``.

    ``denoise(x_scaled, t)`` is the (guided) model output. With ``init`` (images in [-1, 1])
    only the last ``strength`` share of the steps runs, from ``init`` noised to that point
    (image-to-image, as diffusers' img2img pipelines do). Yields a :class:`SampleStep` per
    step with about eight x0 previews on the way and returns the images clamped to [-1, 1]
    (latents, from a noise process that does not clip, are neither clamped nor previewed
    clamped).
    """
    clip = clips(train_scheduler.config)
    sched = make_sampler(sampler, train_scheduler.config) if isinstance(sampler, str) else sampler
    sched.set_timesteps(steps, device=device)
    timesteps = sched.timesteps
    noise = torch.randn(shape, generator=generator).to(device)
    if init is None:
        x = noise * sched.init_noise_sigma
    else:
        run = min(steps, max(1, int(steps * strength)))
        begin = (steps - run) * getattr(sched, "order", 1)
        timesteps = timesteps[begin:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(begin)
        x = sched.add_noise(init.to(device).float(), noise, timesteps[:1].repeat(shape[0]))
    total = len(timesteps)
    every = max(1, total // 8)
    for i, t in enumerate(timesteps):
        out = denoise(sched.scale_model_input(x, t), t)
        # A CPU generator: diffusers draws any step noise on the CPU and moves it.
        x = sched.step(out, t, x, generator=generator).prev_sample
        preview = None
        if i + 1 == total:
            preview = x.clamp(-1, 1) if clip else x
        elif (i + 1) % every == 0:
            alphas = train_scheduler.alphas_cumprod
            preview = predicted_x0(alphas, x, out, t, prediction_type, clip)
        yield SampleStep(i + 1, total, preview)
    return x.clamp(-1, 1) if clip else x
