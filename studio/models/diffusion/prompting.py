"""Sampling a prompt-conditioned diffusion family from a prompt: text to image, image to
image and masked inpainting at the model's own resolution.

:class:`PromptSampling` is a mixin of the text family (:class:`~.text.TextDiffusion`); the
engine's Prompt bridge (:mod:`studio.engine.prompt.studio_models`) handles requests, sizes,
progress and blending, and calls these two methods of any family with ``Capability.TEXT``.
Scheduler names are the Prompt workspace's: DDIM and DPM++ 2M map onto the family's own
samplers (which keep the x0 clipping it was trained with); Euler, Euler ancestral and UniPC are
diffusers classes built from the training scheduler's configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import torch
from torch import Tensor, nn

from studio.models.base import SampleStep
from studio.models.diffusion import inpaint as diff
from studio.models.diffusion.samplers import denoise_iter

_OWN_SAMPLERS = {"ddim": "ddim", "dpmpp_2m": "dpm++"}
_DIFFUSERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


class PromptSampling:
    """Prompt sampling for a family with ``encode_prompts``, ``guided_denoiser``,
    ``unet_inputs``, an EMA UNet and a training ``scheduler``."""

    def prompt_sample_iter(
        self,
        prompt: str,
        negative: str,
        guidance: float,
        scheduler: str,
        steps: int,
        generator: torch.Generator,
        init: Tensor | None = None,
        strength: float = 1.0,
    ) -> Generator[SampleStep, None, Tensor]:
        """One image in [-1, 1] (1 x C x H x W) for ``prompt``; ``init`` (in [-1, 1], the
        model's size) noised to ``strength`` for image to image. Yields each sampler step."""
        m: Any = self
        c = m.config
        shape = m.sample_shape(1)
        denoise = m.guided_denoiser([prompt], negative, guidance)
        return (
            yield from denoise_iter(
                denoise, prompt_scheduler(m, scheduler), int(steps), m.scheduler, shape, generator,
                m.device, c.prediction_type, init=init, strength=strength,
            )
        )  # fmt: skip

    def prompt_inpaint_iter(
        self,
        prompt: str,
        negative: str,
        guidance: float,
        scheduler: str,
        steps: int,
        generator: torch.Generator,
        image: Tensor,
        hole: Tensor,
    ) -> Generator[SampleStep, None, Tensor]:
        """``image`` (1 x C x H x W in [-1, 1], the model's size) with ``hole`` (1 x 1 x H x W,
        1 = regenerate) filled by masked DDIM or DPM-Solver++ under the prompt, with guidance.
        Each step's preview is the current estimate."""
        m: Any = self
        sampler = "ddim" if scheduler == "ddim" else "dpm++"
        plan = diff.DiffusionPlan(diff.MASKED, steps=int(steps), sampler=sampler)
        view = _InpaintView(m, prompt, negative)
        labels = torch.zeros(1, dtype=torch.long, device=m.device)
        previews: list[Tensor] = []

        def keep(images: Tensor) -> Any:
            previews.append(images)
            return None  # the caller makes the progress image from the preview

        run = diff.masked_sample(view, image, hole, 1, generator, plan, labels, guidance, keep)  # type: ignore[arg-type]
        while True:
            try:
                p = next(run)
            except StopIteration as done:
                return done.value
            yield SampleStep(
                int(p.step), int(p.total or plan.steps), previews.pop() if previews else None
            )


def prompt_scheduler(model: Any, name: str) -> Any:
    """A fresh sampler for a Prompt workspace scheduler name."""
    if name in _OWN_SAMPLERS:
        return _OWN_SAMPLERS[name]
    import diffusers

    return getattr(diffusers, _DIFFUSERS[name]).from_config(model.scheduler.config)


class _PromptAsClasses(nn.Module):
    """A prompt-conditioned UNet presented as a class-conditional one: class 0 is the prompt,
    class 1 (the "null" class) the negative prompt. The class-label inpainting samplers in
    :mod:`studio.models.diffusion.inpaint` can then drive it with guidance unchanged."""

    def __init__(
        self, unet: nn.Module, hidden: Tensor, mask: Tensor, unet_inputs: Callable[..., Any]
    ) -> None:
        super().__init__()
        self.unet, self.hidden, self.mask = unet, hidden, mask
        self.unet_inputs = unet_inputs  # the family's conditioning keywords for its UNet

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Any:
        if class_labels is None:
            class_labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        pick = class_labels.long().to(self.hidden.device)
        hidden, mask = self.hidden.index_select(0, pick), self.mask.index_select(0, pick)
        return self.unet(x, t, **self.unet_inputs(hidden, mask))


class _InpaintView:
    """What ``studio.models.diffusion.inpaint.masked_sample`` reads from a model."""

    def __init__(self, model: Any, prompt: str, negative: str) -> None:
        from types import SimpleNamespace

        c = model.config
        self.config = SimpleNamespace(
            num_train_timesteps=c.num_train_timesteps,
            num_classes=1,
            prediction_type=c.prediction_type,
        )
        self.device = model.device
        self.scheduler = model.scheduler
        with torch.no_grad():
            hidden, mask = model.encode_prompts([prompt, negative])
        self.ema_unet = _PromptAsClasses(model.ema["unet"], hidden, mask, model.unet_inputs)
