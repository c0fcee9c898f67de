"""Diffusion inpainting for the DDPM family: RePaint and a one-pass masked sampler.

:class:`DiffusionInpainting` is the family's side of the inpainting protocol
(:class:`studio.models.capabilities.InpaintFamily`); the engine only calls it.

Both work at the model's resolution on a batch of variations that share one known image
``x0`` (1 x C x R x R in [-1, 1]) and one binary mask (1 x 1 x R x R, 1 = regenerate).

* **RePaint** (Lugmayr et al. 2022). At each reverse step the unknown region comes from the
  model's reverse step (the DDPM posterior given the predicted x0) and the known region from
  the original noised to the same step, q(x_t | x_0). Resampling: after reaching a jump point
  the whole image is re-noised ``jump`` steps back up (one draw from q(x_t' | x_t), which the
  forward process allows in one go) and denoised again, ``resample`` times, so the generated
  region can adapt to the known one. The steps form a coarse "trailing" grid over the
  model's training timesteps, the spacing diffusers' DDIM uses, on the model's own alphas.
* **Masked DDIM / DPM-Solver++**: a plain diffusers sampler whose state is overwritten in the
  known region by the original noised to the next timestep after every step. Cheap (one pass,
  no resampling) but the generated part can clash with the known part at the seam.

The EMA UNet samples, with classifier-free guidance where the model has classes. Progress
counts UNet evaluations (a guided evaluation is one batched call of twice the batch).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.models.base import eval_mode
from studio.models.capabilities import InpaintSettings
from studio.models.diffusion.samplers import clips, guided_output, make_sampler, predicted_x0

REPAINT = "repaint"
MASKED = "masked"
METHODS = (REPAINT, MASKED)
PREVIEWS = 20  # about this many previews per run

Preview = Callable[[Tensor], np.ndarray]


@dataclass(frozen=True)
class DiffusionPlan:
    """How a diffusion inpainting run samples.

    ``steps`` is the coarse schedule's length; RePaint also has ``jump`` (how many steps it
    goes back up) and ``resample`` (how many times it goes back from each jump point; 0 = no
    resampling). The masked method uses ``sampler`` ("ddim" or "dpm++").
    """

    method: str
    steps: int
    jump: int = 1
    resample: int = 0
    sampler: str = "ddim"

    @property
    def evaluations(self) -> int:
        """The exact number of UNet evaluations the plan makes."""
        if self.method == REPAINT:
            return repaint_evaluations(self.steps, self.jump, self.resample)
        return self.steps

    def describe(self) -> str:
        if self.method == REPAINT:
            jump = min(self.jump, self.steps)
            return (
                f"RePaint: {self.steps} steps, {self.resample} resamplings of {jump}-step jumps "
                f"= {self.evaluations} UNet evaluations"
            )
        name = "DPM-Solver++" if self.sampler == "dpm++" else "DDIM"
        return f"masked {name}: {self.steps} steps = {self.evaluations} UNet evaluations"


@dataclass(frozen=True)
class Preset:
    """A named plan with its description for the user (which states its UNet count)."""

    plan: DiffusionPlan
    description: str


# The descriptions state the counts literally; tests check them against real UNet calls.
PRESETS: dict[str, dict[str, Preset]] = {
    REPAINT: {
        "fast": Preset(
            DiffusionPlan(REPAINT, steps=50, jump=5, resample=2),
            "RePaint, 50 steps, every 5-step segment resampled 2 more times: 150 UNet evaluations.",
        ),
        "quality": Preset(
            DiffusionPlan(REPAINT, steps=100, jump=10, resample=4),
            "RePaint, 100 steps, every 10-step segment resampled 4 more times: "
            "500 UNet evaluations.",
        ),
    },
    MASKED: {
        "fast": Preset(
            DiffusionPlan(MASKED, steps=25, sampler="dpm++"),
            "Masked DPM-Solver++, 25 steps: 25 UNet evaluations (one pass, no resampling).",
        ),
        "quality": Preset(
            DiffusionPlan(MASKED, steps=100, sampler="ddim"),
            "Masked DDIM, 100 steps: 100 UNet evaluations (one pass, no resampling).",
        ),
    },
}


# -- the RePaint schedule --------------------------------------------------------------------


def repaint_evaluations(steps: int, jump: int, resample: int) -> int:
    """UNet evaluations of a RePaint schedule: ``steps + resample * jump * (steps // jump)``.

    Jump points sit at positions 0, jump, 2 jump, ... that leave room to go ``jump`` up
    (``steps // jump`` of them); each is revisited ``resample`` times, costing ``jump`` extra
    denoising steps per visit. ``jump`` is clamped to 1..steps.
    """
    jump = max(1, min(jump, steps))
    return steps + resample * jump * (steps // jump)


def repaint_path(steps: int, jump: int, resample: int) -> list[int]:
    """The positions RePaint visits, from ``steps`` (pure noise) to 0 (the clean image).

    A move down by one is a denoising step (one UNet evaluation); a move up by ``jump`` is a
    re-noising draw from the forward process (no network).
    """
    if steps < 1 or resample < 0:
        raise ValueError("steps must be >= 1 and resample >= 0")
    jump = max(1, min(jump, steps))
    left = {k: resample for k in range(0, steps - jump + 1, jump)}
    k, path = steps, [steps]
    while True:
        if left.get(k, 0) > 0:
            left[k] -= 1
            k += jump
        elif k == 0:
            return path
        else:
            k -= 1
        path.append(k)


def grid_timesteps(steps: int, train_steps: int) -> list[int]:
    """Training timesteps of positions 1..steps ("trailing" spacing: position ``steps`` is
    the last, pure-noise timestep). Strictly increasing for steps <= train_steps."""
    return [round(k * train_steps / steps) - 1 for k in range(1, steps + 1)]


# -- sampling ----------------------------------------------------------------------------------


def _randn(shape: torch.Size, generator: torch.Generator, device: torch.device) -> Tensor:
    # Drawn on the CPU so the same seed gives the same noise on every device.
    return torch.randn(shape, generator=generator).to(device)


def _every(total: int) -> int:
    return max(1, total // PREVIEWS)


@torch.no_grad()
def repaint(
    model: torch.nn.Module,
    x0: Tensor,
    mask: Tensor,
    n: int,
    generator: torch.Generator,
    plan: DiffusionPlan,
    labels: Tensor | None = None,
    guidance: float = 1.0,
    preview: Preview | None = None,
) -> Generator[Progress, None, Tensor]:
    """RePaint ``n`` variations; yields one Progress per UNet evaluation and returns the
    N x C x R x R result in [-1, 1], exactly ``x0`` wherever ``mask`` is 0. (Latents, from a
    noise process that does not clip, are not clamped.)"""
    c = model.config
    clip = clips(model.scheduler.config)
    device = model.device
    unet = model.ema_unet
    alphas = model.scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    taus = grid_timesteps(plan.steps, c.num_train_timesteps)

    def abar(k: int) -> Tensor:  # position 0 is the clean image
        return torch.ones((), device=device) if k == 0 else alphas[taus[k - 1]]

    x0 = x0.to(device).float().expand(n, -1, -1, -1)
    hole = mask.to(device) > 0.5
    path = repaint_path(plan.steps, plan.jump, plan.resample)
    total = plan.evaluations
    every = _every(total)

    x = _randn(x0.shape, generator, device)
    a = abar(plan.steps)
    x = torch.where(hole, x, a.sqrt() * x0 + (1 - a).sqrt() * _randn(x0.shape, generator, device))
    done = 0
    for k_from, k_to in zip(path, path[1:]):
        a_t, a_s = abar(k_from), abar(k_to)
        if k_to > k_from:  # re-noise: one draw from q(x_to | x_from)
            ratio = a_s / a_t
            x = ratio.sqrt() * x + (1 - ratio).sqrt() * _randn(x.shape, generator, device)
            continue
        t = torch.tensor(taus[k_from - 1], device=device)
        with eval_mode(unet):  # entered per step: nothing stays switched while suspended
            out = guided_output(unet, x, t, labels, c.num_classes, guidance)
        x0_hat = predicted_x0(alphas, x, out, t, c.prediction_type, clip)
        if k_to == 0:
            unknown, known = x0_hat, x0
        else:
            # The DDPM posterior q(x_s | x_t, x0_hat) across a skip of several steps.
            a_ts = a_t / a_s
            beta = 1 - a_ts
            mean = (a_s.sqrt() * beta * x0_hat + a_ts.sqrt() * (1 - a_s) * x) / (1 - a_t)
            var = beta * (1 - a_s) / (1 - a_t)
            unknown = mean + var.sqrt() * _randn(x.shape, generator, device)
            known = a_s.sqrt() * x0 + (1 - a_s).sqrt() * _randn(x.shape, generator, device)
        x = torch.where(hole, unknown, known)
        done += 1
        image = None
        if preview is not None and (done % every == 0 or done == total):
            image = preview(torch.where(hole, x0_hat, x0))
        yield Progress("inpaint", done, total, message="RePaint", image=image)
    return x.clamp(-1, 1) if clip else x


@torch.no_grad()
def masked_sample(
    model: torch.nn.Module,
    x0: Tensor,
    mask: Tensor,
    n: int,
    generator: torch.Generator,
    plan: DiffusionPlan,
    labels: Tensor | None = None,
    guidance: float = 1.0,
    preview: Preview | None = None,
) -> Generator[Progress, None, Tensor]:
    """Masked DDIM / DPM-Solver++: after every sampler step the known region is replaced by
    ``x0`` noised to the next timestep (the clean ``x0`` after the last)."""
    c = model.config
    clip = clips(model.scheduler.config)
    device = model.device
    unet = model.ema_unet
    alphas = model.scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    sched = make_sampler(plan.sampler, model.scheduler.config)
    sched.set_timesteps(plan.steps, device=device)
    steps = list(sched.timesteps)
    total = len(steps)
    every = _every(total)

    x0 = x0.to(device).float().expand(n, -1, -1, -1)
    hole = mask.to(device) > 0.5

    def known_at(index: int) -> Tensor:
        if index >= total:
            return x0
        a = alphas[steps[index].long()]
        return a.sqrt() * x0 + (1 - a).sqrt() * _randn(x0.shape, generator, device)

    x = _randn(x0.shape, generator, device) * sched.init_noise_sigma
    x = torch.where(hole, x, known_at(0))
    for i, t in enumerate(steps):
        with eval_mode(unet):
            out = guided_output(
                unet, sched.scale_model_input(x, t), t, labels, c.num_classes, guidance
            )
        before = x
        x = sched.step(out, t, x, generator=generator).prev_sample
        x = torch.where(hole, x, known_at(i + 1))
        image = None
        if preview is not None and ((i + 1) % every == 0 or i + 1 == total):
            shown = x if i + 1 == total else predicted_x0(alphas, before, out, t, c.prediction_type)
            shown = shown.clamp(-1, 1) if clip else shown
            image = preview(torch.where(hole, shown, x0))
        yield Progress("inpaint", i + 1, total, message="masked sampling", image=image)
    return torch.where(hole, x.clamp(-1, 1) if clip else x, x0)


# -- the inpainting protocol ------------------------------------------------------------------


class DiffusionInpainting:
    """RePaint or masked sampling with the EMA UNet: mixed into a UNet diffusion family."""

    inpaint_methods: tuple[str, ...] = METHODS
    inpaint_method_labels: dict[str, str] = {REPAINT: "RePaint", MASKED: "Masked DDIM / DPM++"}

    @classmethod
    def inpaint_presets(cls, method: str = "") -> dict[str, str]:
        return {name: p.description for name, p in PRESETS[method or REPAINT].items()}

    def inpaint_plan(self, settings: InpaintSettings) -> DiffusionPlan:
        method = settings.method or REPAINT
        if method not in PRESETS:
            raise StudioError(f"Inpainting: method must be one of {', '.join(METHODS)}.")
        if settings.preset not in PRESETS[method]:
            raise StudioError(f"Inpainting: preset must be one of {', '.join(PRESETS[method])}.")
        plan = PRESETS[method][settings.preset].plan
        return plan if settings.steps is None else replace(plan, steps=settings.steps)

    def inpaint_describe(self, settings: InpaintSettings) -> str:
        return self.inpaint_plan(settings).describe()

    def inpaint_iter(
        self,
        x0: Tensor,
        hole: Tensor,
        n: int,
        generator: torch.Generator,
        settings: InpaintSettings,
        labels: Tensor | None,
        preview: Preview | None,
    ) -> Generator[Progress, None, Tensor]:
        c = self.config  # type: ignore[attr-defined]
        plan = self.inpaint_plan(settings)
        if plan.steps > c.num_train_timesteps:
            raise StudioError(f"steps must be at most {c.num_train_timesteps} for this model.")
        guidance = settings.guidance
        guidance = float(getattr(c, "guidance", 1.0)) if guidance is None else float(guidance)
        if guidance < 0:
            raise StudioError("guidance must be >= 0.")
        run = repaint if plan.method == REPAINT else masked_sample
        return (yield from run(self, x0, hole, n, generator, plan, labels, guidance, preview))
