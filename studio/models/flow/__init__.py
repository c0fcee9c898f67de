"""Normalizing flows: exact likelihood, exact latents, one-pass sampling.

``FlowModel`` holds what NICE, RealNVP and Glow share: uniform dequantisation of the 8-bit
data, the exact negative log-likelihood in bits/dim as the loss, gradient clipping with a
linear learning-rate warm-up, temperature sampling, and ``encode``/``decode``/likelihood.
Each model only builds its ``MultiScaleFlow`` (see ``layers.py``).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from studio.models.base import (
    Batch,
    Capability,
    GenerativeModel,
    ModelConfig,
    SampleStep,
    StepContext,
    eval_mode,
    setting,
)
from studio.models.capabilities import TEMPERATURE, LatentSpec
from studio.models.configs import learning_rate, lr_warmup, network_width
from studio.models.flow.layers import (
    BINS,
    DATA_SCALE,
    LOG2,
    MultiScaleFlow,
    dequantize,
    dequantize_logdet,
    quantize_back,
    standard_normal_logp,
    to_bits_per_dim,
)
from studio.models.latent_inpaint import LatentInpainting, LatentPlan, LatentView, noise_like
from studio.models.pooling import pooled

LOSS_NAMES = ("bpd", "logdet", "grad_norm")
#: What every flow can do: exact likelihood, an exact latent both ways, inpainting with it.
CAPABILITIES = (
    Capability.TRAIN
    | Capability.SAMPLE
    | Capability.LATENT
    | Capability.LIKELIHOOD
    | Capability.INPAINT
)
VIEW_TEMPERATURE = 0.7  # a flow's samples at T=1 are noisy; 0.7 is the usual viewing choice


@dataclass
class FlowConfig(ModelConfig):
    lr: float = learning_rate(1e-3)
    warmup_steps: int = lr_warmup(200, help="learning rate ramps up linearly")
    max_grad_norm: float = setting(
        50.0,
        label="Gradient clipping",
        help="largest gradient norm per step; flows diverge without it",
        minimum=0.01,
        maximum=1000.0,
    )


# Settings the flows share; each family places them among its own.


def multiscale_levels(label: str) -> Any:
    """How many times the flow squeezes and factors out half its channels."""
    return setting(
        3,
        label=label,
        help="multi-scale levels; each halves the image size",
        minimum=1,
        maximum=6,
        main=True,
    )


def coupling_width(default: int) -> Any:
    return network_width(
        default, help="channels of each coupling's conv net", maximum=512, main=True
    )


def factored_prior(default: bool) -> Any:
    return setting(
        default, label="Learned prior", help="predict each factored-out half from the rest"
    )


class FlowModel(LatentInpainting, GenerativeModel):
    """Base of the flow family. Subclasses set ``self.flow`` in ``__init__``."""

    conditions = ("temperature",)
    sampling_options = (TEMPERATURE,)
    config: FlowConfig
    flow: MultiScaleFlow

    @property
    def dims(self) -> int:
        c = self.config
        return c.channels * c.resolution * c.resolution

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # -- likelihood ----------------------------------------------------------------------
    def _log_likelihood(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(log p in nats per image, flow log|det|) for dequantised data ``x`` in pixel units.

        log p(pixels) = log N(f(x)) + log|det df/dx| + log|det dx/dpixels|; a uniformly
        dequantised density in pixel units lower-bounds the 8-bit data's log-likelihood."""
        z, logdet = self.flow(x)
        exact = torch.float64 if z.dtype == torch.float64 else torch.float32  # never bf16
        z, logdet = z.to(exact), logdet.to(exact)
        ll = standard_normal_logp(z) + logdet + dequantize_logdet(self.dims)
        return ll, logdet

    def _inputs(self, images: Tensor) -> Tensor:
        return images.to(self.device, self._dtype())

    @torch.no_grad()
    def log_likelihood(self, images: Tensor) -> Tensor:
        """Per-image log-likelihood in nats of images in [-1, 1] read as 8-bit data.

        Deterministic: each pixel is dequantised to its bin's midpoint."""
        with eval_mode(self):
            return self._log_likelihood(dequantize(self._inputs(images), 0.5))[0]

    def bits_per_dim(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """Per-image negative log-likelihood in bits per dimension (8 = no better than noise).
        ``labels`` is ignored (the likelihood protocol's signature)."""
        return to_bits_per_dim(self.log_likelihood(images), self.dims)

    def example_losses(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """Each image's training loss (bits/dim, uniformly dequantised with noise from
        ``generator``), with gradients: what EWC's Fisher estimate differentiates."""
        x = self._inputs(batch.images)
        noise = torch.rand(x.shape, generator=generator).to(x.device, x.dtype)
        return to_bits_per_dim(self._log_likelihood(dequantize(x, noise))[0], self.dims)

    # -- latents -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Exact latent of each image: B x (C * H * W), standard normal under the model."""
        with eval_mode(self):
            return self.flow(dequantize(self._inputs(images), 0.5))[0]

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """The exact inverse of ``encode``: latents -> images in [-1, 1]."""
        c = self.config
        with eval_mode(self):
            x = self.flow.inverse(z.to(self.device, self._dtype()))
        return quantize_back(x).reshape(-1, c.channels, c.resolution, c.resolution)

    # -- the latent protocol (studio.models.capabilities.LatentFamily) ---------------------------
    def latent_spec(self) -> LatentSpec:
        return LatentSpec(
            (self.dims,),
            encoder="the exact inverse",
            temperature=VIEW_TEMPERATURE,
            analysed=300,
            regress=True,
            directions="PCA of the pixels of {n} decoded samples, mapped back to z by linear "
            "regression (a flow's latent is isotropic, so PCA of z alone finds nothing)",
            image_directions="PCA of the flow's exact latents for {n} of your images",
        )

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        return torch.randn(n, self.dims, generator=generator) * temperature

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        c = self.config
        x = self.flow.inverse(z.to(self._dtype()))
        # quantize_back without its clamp (a clamp has no gradient); callers clamp.
        pixels = (x / DATA_SCALE + 0.5) * BINS - 0.5
        images = (pixels / 127.5 - 1).float().reshape(len(z), c.channels, *[c.resolution] * 2)
        return torch.nan_to_num(images, nan=0.0)

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        return self.encode(images).reshape(len(images), -1)

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        return z, pooled(self.decode_latents(z, labels))

    def inpaint_view(self, labels: Tensor | None) -> LatentView:
        return _FlowInpaint(self, labels)

    # -- training ------------------------------------------------------------------------
    supports_accumulation = True

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.optimizers = {"flow": torch.optim.Adam(self.parameters(), lr=self.config.lr)}
        return self.optimizers

    def default_warmup_steps(self) -> int:
        return self.config.warmup_steps

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        images = batch.images
        noise = ctx.rand(*images.shape, device=images.device).to(images.dtype)
        x = dequantize(images, noise)  # uniform dequantisation in pixel units
        with ctx.autocast():
            ll, logdet = self._log_likelihood(x)
        bpd = to_bits_per_dim(ll, self.dims).mean()
        # Warm-up (default_warmup_steps) and clipping happen in optimizer_step.
        grad_norm = self.optimizer_step("flow", bpd, ctx, clip=c.max_grad_norm)
        out = {
            "bpd": bpd.detach(),
            # The flow's mean log|det| in bits/dim: how much of the fit is volume change.
            "logdet": logdet.detach().float().mean() / (self.dims * LOG2),
        }
        if grad_norm is not None:  # None after a micro-batch that did not step
            out["grad_norm"] = grad_norm
        return out

    # -- sampling ------------------------------------------------------------------------
    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Generator[SampleStep, None, Tensor]:
        """``temperature`` (default 1) scales the base Gaussian's std; 0 gives the decoded
        zero latent, 0.6-0.8 trades variety for cleaner images."""
        self.check_conditions(conditions)
        temperature = float(conditions.get("temperature", 1.0))
        if not (math.isfinite(temperature) and 0.0 <= temperature <= 10.0):
            raise ValueError(f"temperature must be between 0 and 10, got {temperature}")
        z = torch.randn(n, self.dims, generator=generator) * temperature  # on the CPU: seeded
        images = self.decode(z)
        yield SampleStep(1, 1, images)
        return images


def check_divisible(resolution: int, factor: int, what: str) -> None:
    """Raise a clear error when the image size does not halve ``log2(factor)`` times."""
    if resolution % factor or resolution < factor:
        raise ValueError(
            f"{what} needs the resolution to be a multiple of {factor}; got {resolution}. "
            "Use fewer levels or a larger resolution."
        )


class _FlowInpaint(LatentView):
    """Inpainting starts from the flow's exact encoding of the image, the hole filled by noise."""

    def start(self, x: Tensor, hole: Tensor, plan: LatentPlan, gen: torch.Generator) -> Tensor:
        filled = torch.where(hole, (0.5 * noise_like(x, gen)).clamp(-1, 1), x)
        return self.model.encode(filled).float()
