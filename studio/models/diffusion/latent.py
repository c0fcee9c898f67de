"""A pixel-space DDPM's latent: the start noise x_T of deterministic DDIM.

:class:`DDIMLatent` is the family's side of the latent protocols
(:class:`studio.models.capabilities.LatentFamily` and ``OdeLatentFamily``): decoding runs
DDIM steps of the EMA UNet from the noise (with classifier-free guidance for a
class-conditional model), encoding runs them backward (:mod:`.inversion`). The explorer's
step-by-step space over it is :class:`studio.engine.latent_diffusion.DiffusionLatentSpace`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch
from torch import Tensor

from studio.models.capabilities import LatentSpec
from studio.models.pooling import pooled

MAX_STEPS = 1000
DEFAULT_STEPS = 20  # the protocol's one-call decode and encode use this many DDIM steps


def _drain(gen: Generator[Any, None, Any]) -> Any:
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


class DDIMLatent:
    """Mixed into a UNet diffusion family with ``ema_unet``, ``scheduler`` and a config
    holding ``num_train_timesteps``, ``prediction_type``, ``num_classes`` and ``guidance``."""

    config: Any
    ema_unet: Any
    scheduler: Any

    def latent_spec(self) -> LatentSpec:
        c = self.config
        return LatentSpec(
            (int(c.channels), int(c.resolution), int(c.resolution)),
            encoder="DDIM inversion",
            analysed=128,
            regress=True,
            directions="PCA of the pixels of {n} decoded samples, mapped back to the noise by "
            "linear regression",
            ode=True,
        )

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        c = self.config
        return torch.randn(n, c.channels * c.resolution**2, generator=generator) * temperature

    # -- the ODE ------------------------------------------------------------------------------
    def ode_max_steps(self) -> int:
        return min(MAX_STEPS, int(self.config.num_train_timesteps))

    def ode_guidance(self) -> float:
        return float(self.config.guidance) if self.config.num_classes else 1.0

    def ode_path(self, steps: int) -> Any:
        from studio.models.diffusion.inversion import ddim_path
        from studio.models.diffusion.samplers import make_sampler

        sched = make_sampler("ddim", self.scheduler.config)
        sched.set_timesteps(int(steps))  # the Sample workspace's DDIM timesteps ("trailing")
        return ddim_path(self.scheduler.alphas_cumprod, sched.timesteps)

    def _model_fn(self, labels: Tensor | None, guidance: float) -> Any:
        from studio.models.diffusion.samplers import guided_output

        unet, null = self.ema_unet, int(self.config.num_classes)

        def fn(x: Tensor, t: Tensor) -> Tensor:
            return guided_output(unet, x, t, labels, null, guidance).float()

        return fn

    def ode_decode_iter(
        self, z: Tensor, labels: Tensor | None, path: Any, guidance: float
    ) -> Generator[int, None, Tensor]:
        from studio.models.diffusion.inversion import ddim_decode_iter

        fn = self._model_fn(labels, guidance)
        out = yield from ddim_decode_iter(fn, z.float(), path, self.config.prediction_type)
        return torch.nan_to_num(out, nan=0.0).clamp(-1, 1)

    def ode_invert_iter(
        self, images: Tensor, labels: Tensor | None, path: Any, guidance: float, refine: int
    ) -> Generator[int, None, Tensor]:
        from studio.models.diffusion.inversion import ddim_invert_iter

        fn = self._model_fn(labels, guidance)
        pred = self.config.prediction_type
        return (yield from ddim_invert_iter(fn, images.float(), path, pred, int(refine)))

    # -- the one-call latent protocol ---------------------------------------------------------
    def _shaped(self, z: Tensor) -> Tensor:
        return z.reshape(len(z), *self.latent_spec().shape)

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        path = self.ode_path(DEFAULT_STEPS)
        return _drain(self.ode_decode_iter(self._shaped(z), labels, path, self.ode_guidance()))

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        path = self.ode_path(DEFAULT_STEPS)
        z = _drain(self.ode_invert_iter(images, labels, path, self.ode_guidance(), 3))
        return z.reshape(len(images), -1)

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        return z, pooled(self.decode_latents(z, labels))
