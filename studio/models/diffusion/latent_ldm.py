"""Latent diffusion (Rombach et al. 2022, the recipe behind Stable Diffusion): DDPM or the
text-to-image model of this folder, run in the latent grid of a frozen autoencoder run.

The autoencoder is another run (the ``autoencoder`` setting: any family with
``Capability.AUTOENCODER``, which implements
:class:`~studio.models.capabilities.AutoencoderFamily`), loaded frozen through the base-run
mechanism (:mod:`studio.models.base_runs`: its path and a hash of its weights are recorded; a
missing or changed run is a ``BaseRunError`` naming it). Training images are encoded once,
before training (``training_features``: the posterior *mean*, ``encode_to_grid`` without a
generator; or, when the autoencoder also offers ``encode_posterior(images) -> (mean, std)``,
both, and each step draws a fresh posterior sample as Stable Diffusion does), and the latents
are multiplied by a scaling factor, 1 / their standard deviation measured over every training
latent before the first step (Stable Diffusion's ``scaling_factor``; a ``scaling_factor``
setting above 0 is used as given). The factor is a buffer of the model (saved in every checkpoint and in
``model.safetensors``), the ``scaling_factor`` of the saved config (``studio.json``) and of
the diffusers ``vae/config.json``, and sampling divides by it before decoding.

Everything else is the pixel families' code, run on latents: the networks (UNet or DiT, sized
for the latent grid by :meth:`network_config`), the noise process (without clipping: scaled
latents go past 1), training, EMA, samplers, classifier-free guidance, inpainting (the mask
shrunk to the latent grid; the known latents blended in at every step, as Stable Diffusion
does) and DDIM inversion for Explore (the start noise, as for DDPM). Previews and results are
decoded by the autoencoder.

Two families, as for pixels: :class:`LatentDiffusion` (``diffusion.latent``: unconditional or
class-conditional, as ``diffusion.ddpm``) and :class:`LatentTextDiffusion`
(``diffusion.latent_text``: caption-conditioned, as ``diffusion.text``, the Prompt workspace's
text to image, image to image and inpainting). The run's ``model/`` folder is also a diffusers
multi-component folder (:func:`save_diffusers_layout`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Generator
from pathlib import Path
from typing import Any

import diffusers
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.core import atomic
from studio.core.errors import BaseRunError
from studio.core.jobs import Progress
from studio.core.schema import RunRequirement, run_setting
from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    GenerativeModel,
    SampleStep,
    StepContext,
    setting,
)
from studio.models.base_runs import attach_base_runs
from studio.models.capabilities import (
    DENOISING,
    AutoencoderFamily,
    AutoencoderSpec,
    InpaintSettings,
    LatentSpec,
    Preview,
    ScoreBatch,
)
from studio.models.diffusion.ddpm import (
    DDPM,
    DDPMConfig,
    _replace_files,
    _save_unet,
    build_scheduler,
)
from studio.models.diffusion.export import export_latent
from studio.models.diffusion.scoring import SCORE_LEVELS
from studio.models.diffusion.text import TextDiffusion, TextDiffusionConfig
from studio.models.export import ExportContext, ExportNotes

AUTOENCODER = "autoencoder"
REQUIRES = RunRequirement(
    capabilities=Capability.AUTOENCODER,
    what="an autoencoder run (an image autoencoder or a VQ-VAE)",
)
SCALE_BUFFER = "latent_scaling"


def autoencoder_setting() -> Any:
    return run_setting(
        label="Autoencoder run",
        requires=REQUIRES,
        help="the trained autoencoder whose latent grid this model learns (frozen); its "
        "decoder draws the images",
    )


def scaling_setting() -> Any:
    return setting(
        0.0,
        label="Latent scaling",
        help="multiplies the autoencoder's latents (Stable Diffusion's scaling factor); "
        "0 = 1 / their standard deviation, measured on the training latents when training "
        "starts",
        minimum=0.0,
        maximum=1e6,
    )


@dataclasses.dataclass
class LatentDiffusionConfig(DDPMConfig):
    autoencoder: str = autoencoder_setting()
    scaling_factor: float = scaling_setting()


@dataclasses.dataclass
class LatentTextDiffusionConfig(TextDiffusionConfig):
    autoencoder: str = autoencoder_setting()
    scaling_factor: float = scaling_setting()


class FirstStage:
    """What both latent families add to their pixel family (mixed in before it): the frozen
    autoencoder, the scaling factor, the latent shapes, encoding and decoding around the pixel
    family's training, sampling and scores, and the save layout."""

    config: Any
    scheduler: Any
    _bases: dict[str, Any]
    _scale: float
    _stats: Tensor | None

    # -- the autoencoder ---------------------------------------------------------------------
    @property
    def autoencoder(self) -> Any:
        return self.base(AUTOENCODER)  # type: ignore[attr-defined]

    def first_stage_spec(self) -> AutoencoderSpec:
        """The autoencoder's grid; attaches the autoencoder run the first time (the pixel
        family's constructor asks for the network's shape before anything else)."""
        c = self.config
        if AUTOENCODER not in self._bases:
            attach_base_runs(self)
            ae = self._bases[AUTOENCODER]
            if not isinstance(ae, AutoencoderFamily):
                raise BaseRunError(
                    f"The autoencoder run {c.autoencoder} ({ae.info.display_name}) does not "
                    "hand out a latent grid."
                )
            if int(ae.config.channels) != int(c.channels):
                raise BaseRunError(
                    f"The autoencoder run {c.autoencoder} works on {ae.config.channels}-channel "
                    f"images, this model on {c.channels}: train both on the same images."
                )
        spec = self._bases[AUTOENCODER].autoencoder_spec()
        if c.resolution % spec.downsample:
            raise BaseRunError(
                f"The autoencoder run {c.autoencoder} shrinks images {spec.downsample}x: the "
                f"resolution ({c.resolution}) must be a multiple of {spec.downsample}."
            )
        return spec

    def network_config(self) -> Any:
        """The config the denoiser is built from: the latent grid's channels and side."""
        spec = self.first_stage_spec()
        c = self.config
        side = c.resolution // spec.downsample
        try:
            return dataclasses.replace(c, channels=spec.channels, resolution=side)
        except ValueError as err:
            raise ValueError(f"on the {side} x {side} latent grid: {err}") from None

    def sample_shape(self, n: int) -> tuple[int, int, int, int]:
        spec = self.first_stage_spec()
        side = self.config.resolution // spec.downsample
        return (n, spec.channels, side, side)

    # -- the scaling factor ------------------------------------------------------------------
    def init_first_stage(self) -> None:
        """Call at the end of the constructor: the noise process without clipping and the
        scaling factor's buffer."""
        self.scheduler = build_scheduler(self.config, clip=False)
        value = float(self.config.scaling_factor)
        self.register_buffer(SCALE_BUFFER, torch.tensor(value, dtype=torch.float32))  # type: ignore[attr-defined]
        self._scale = float(getattr(self, SCALE_BUFFER))
        self._stats = None  # sum, sum of squares and count of the training latents

    def latent_scale(self) -> float:
        """The scaling factor: measured as soon as the training latents are all encoded (so
        the trainer's first sample grid uses it too); 1 before (an untrained model)."""
        if self._scale <= 0 and self._stats is not None:
            self._measure_scale(None)
        return self._scale if self._scale > 0 else 1.0

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)  # type: ignore[misc]
        self._scale = float(getattr(self, SCALE_BUFFER))
        if self._scale > 0:
            self.config.scaling_factor = self._scale
        return out

    def _measure_scale(self, z: Tensor | None) -> None:
        """1 / the standard deviation of every training latent (``training_features`` summed
        them), or of the batch's ``z`` when they were not computed up front."""
        if self._stats is not None:
            s, ss, n = self._stats.tolist()
        else:
            assert z is not None
            zd = z.detach().double()
            s, ss, n = float(zd.sum()), float(zd.square().sum()), float(zd.numel())
        var = (ss - s * s / n) / max(1.0, n - 1.0)
        value = float(torch.tensor(1.0 / math.sqrt(max(var, 1e-12)), dtype=torch.float32))
        getattr(self, SCALE_BUFFER).fill_(value)
        self._scale = value
        self.config.scaling_factor = value

    # -- latents -----------------------------------------------------------------------------
    @torch.no_grad()
    def to_latents(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] -> scaled latents (the posterior mean)."""
        device = self.device  # type: ignore[attr-defined]
        z = self.autoencoder.encode_to_grid(images.to(device).float())
        return z.float() * self.latent_scale()

    @torch.no_grad()
    def to_images(self, latents: Tensor) -> Tensor:
        """Scaled latents -> images in [-1, 1]."""
        return self.autoencoder.decode_from_grid(latents.float() / self.latent_scale()).clamp(-1, 1)

    def latent_hole(self, hole: Tensor) -> Tensor:
        """A pixel mask (1 x 1 x R x R, 1 = regenerate) on the latent grid: a latent cell is
        regenerated when any of its pixels is."""
        d = self.first_stage_spec().downsample
        return F.max_pool2d((hole.float() > 0.5).float(), d)

    def _posterior(self) -> Any:
        """The autoencoder's optional ``encode_posterior(images) -> (mean, std)`` (a KL
        autoencoder's Gaussian posterior), or None: the protocol's mean is used."""
        hook = getattr(self.autoencoder, "encode_posterior", None)
        return hook if callable(hook) else None

    @torch.no_grad()
    def training_features(self, images: Tensor) -> Tensor:
        """Once per training image, unscaled: the posterior mean, or its mean and standard
        deviation side by side (channels) when the autoencoder offers them, so each step draws
        a fresh sample (as Stable Diffusion does). Their statistics give the scaling factor."""
        x = images.to(self.device).float()  # type: ignore[attr-defined]
        posterior = self._posterior()
        if posterior is not None:
            mean, std = (t.float() for t in posterior(x))
            md = mean.double()
            second = md.square() + std.double().square()  # E[z^2] of the posterior
            features = torch.cat([mean, std], dim=1)
        else:
            mean = features = self.autoencoder.encode_to_grid(x).float()
            md = mean.double()
            second = md.square()
        n = torch.tensor(float(mean.numel()), dtype=torch.float64, device=mean.device)
        stats = torch.stack([md.sum(), second.sum(), n])
        self._stats = stats if self._stats is None else self._stats + stats
        return features

    def latent_batch(self, batch: Batch, ctx: StepContext | None = None) -> Batch:
        """The batch with its images replaced by their scaled latents (a posterior sample
        from ``ctx``'s generator where the features hold a mean and a spread)."""
        if batch.features is not None:
            z = batch.features.to(self.device).float()  # type: ignore[attr-defined]
            channels = self.first_stage_spec().channels
            if z.shape[1] == 2 * channels:
                mean, std = z[:, :channels], z[:, channels:]
                noise = ctx.randn(*mean.shape) if ctx is not None else torch.zeros_like(mean)
                z = mean + std * noise.to(mean.device)
        else:
            with torch.no_grad():
                z = self.autoencoder.encode_to_grid(batch.images).float()
        if self._scale <= 0:
            self._measure_scale(z)
        return dataclasses.replace(batch, images=z * self._scale, features=None)

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        return super().train_step(self.latent_batch(batch, ctx), ctx)  # type: ignore[misc]

    def training_notes(self) -> list[str]:
        notes = list(super().training_notes())  # type: ignore[misc]
        spec = self.first_stage_spec()
        side = self.config.resolution // spec.downsample
        how = (
            f"{self._scale:.5g} (given or measured before)"
            if self._scale > 0
            else "1 / the standard deviation of the training latents, measured once they are encoded"
        )
        what = (
            "the posterior mean and spread of each training image, encoded once; each step "
            "draws a sample"
            if self._posterior() is not None
            else "the posterior mean of each training image, encoded once"
        )
        notes.append(
            f"Latent diffusion on {self.config.autoencoder}: {spec.channels} x {side} x {side} "
            f"latents ({what}); scaling {how}."
        )
        return notes

    # -- sampling: the pixel family's, on latents, decoded -----------------------------------
    def _decoded(
        self, steps: Generator[SampleStep, None, Tensor]
    ) -> Generator[SampleStep, None, Tensor]:
        """The pixel family's steps with each latent preview decoded; returns the latents."""
        while True:
            try:
                report = next(steps)
            except StopIteration as done:
                return done.value
            if report.preview is not None:
                report = SampleStep(report.step, report.total, self.to_images(report.preview))
            yield report

    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Generator[SampleStep, None, Tensor]:
        z = yield from self._decoded(super().sample_iter(n, generator, **conditions))  # type: ignore[misc]
        return self.to_images(z)

    def sample_latents(self, n: int, generator: torch.Generator, **conditions: Any) -> Tensor:
        """The scaled latents :meth:`sample_iter` decodes, for the same seed and conditions."""
        steps = super().sample_iter(n, generator, **conditions)  # type: ignore[misc]
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    # -- anomaly score: the denoising error, in pixels ---------------------------------------
    @torch.no_grad()
    def anomaly_scores(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ScoreBatch:
        """The images' latents noised to the fixed levels, denoised, decoded and compared with
        the images (so the autoencoder's own error counts too)."""
        from studio.models.diffusion.samplers import predicted_x0

        c, device = self.config, self.device  # type: ignore[attr-defined]
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        x = images.to(device).float()
        z0 = self.to_latents(x)
        n = len(x)
        denoise = self.score_denoiser(n, labels)  # type: ignore[attr-defined]
        alphas = self.scheduler.alphas_cumprod
        total = torch.zeros(n, *x.shape[2:], device=device)
        shown = x
        for i, level in enumerate(SCORE_LEVELS):
            step = int(round(level * (c.num_train_timesteps - 1)))
            t = torch.full((n,), step, dtype=torch.long, device=device)
            noise = torch.randn(z0.shape, generator=gen).to(device)
            z_t = self.scheduler.add_noise(z0, noise, t)
            out = denoise(z_t, t).float()
            guess = self.to_images(predicted_x0(alphas, z_t, out, t, c.prediction_type, False))
            total += ((guess - x).square() / 4).mean(1)
            if i == 1:
                shown = guess
        error = total / len(SCORE_LEVELS)
        return ScoreBatch(
            {DENOISING.name: error.flatten(1).mean(1).cpu()},
            error_map=error.cpu(),
            reconstruction=shown.cpu(),
        )

    # -- export (studio export) ---------------------------------------------------------------
    def export_files(self, folder: Path, fmt: str, context: ExportContext) -> ExportNotes:
        """The saved diffusers layout without ``model.safetensors`` (the studio's own raw
        weights), plus class names or the text encoder (``--format diffusers``); or one
        safetensors file with the EMA network, the diffusers autoencoder and the factor."""
        caption = isinstance(self, TextDiffusion)
        vae = diffusers_vae(self.autoencoder)
        return export_latent(self, folder, fmt, context, vae, caption=caption)

    # -- persistence -------------------------------------------------------------------------
    def export_network(self) -> nn.Module:
        """The EMA denoiser as the diffusers model it is (UNet or transformer)."""
        raise NotImplementedError

    def save(self, folder: str | Path) -> None:
        """The diffusers layout (:func:`save_diffusers_layout`), then ``model.safetensors``
        and ``studio.json`` (the studio's own copy: trained and EMA weights, the text
        encoder, the scaling factor), the config last."""
        save_diffusers_layout(self, folder)
        GenerativeModel.save(self, folder)  # type: ignore[arg-type]

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> Any:
        return GenerativeModel.load.__func__(cls, folder, device)  # type: ignore[attr-defined]


def diffusers_vae(autoencoder: Any) -> nn.Module | None:
    """The autoencoder as a diffusers model (``AutoencoderKL``, ``VQModel``) when its family
    can say so (an optional ``diffusers_vae()`` method); None otherwise."""
    hook = getattr(autoencoder, "diffusers_vae", None)
    return hook() if callable(hook) else None


def save_diffusers_layout(model: Any, folder: str | Path) -> dict[str, Any]:
    """Write a latent diffusion model as a diffusers multi-component folder: ``unet/`` or
    ``transformer/`` (the EMA weights), ``scheduler/`` (the training noise process: build any
    sampler ``from_pretrained(folder, subfolder="scheduler")``), ``vae/`` (the autoencoder, its
    ``scaling_factor`` set to the model's) where its family can write a diffusers model, and
    ``model_index.json`` naming them (``_studio_scaling_factor`` holds the factor in every
    case). Returns the index. Each file replaces the old one atomically. Used by the family's
    ``save`` and open to an exporter."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = model.export_network()
    name = "transformer" if model.uses_dit() else "unet"
    scale = float(model.latent_scale())
    _replace_files(folder, name, lambda p: _save_unet(net, p))
    _replace_files(folder, "scheduler", model.scheduler.save_pretrained)
    index: dict[str, Any] = {
        "_class_name": "DiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        name: ["diffusers", type(net).__name__],
        "scheduler": ["diffusers", type(model.scheduler).__name__],
    }
    vae = diffusers_vae(model.autoencoder)
    if vae is not None:

        def write_vae(path: Path) -> None:
            _save_unet(vae, path)
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            config["scaling_factor"] = scale
            (path / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")

        _replace_files(folder, "vae", write_vae)
        index["vae"] = ["diffusers", type(vae).__name__]
    index["_studio_scaling_factor"] = scale
    index["_studio_autoencoder"] = str(model.config.autoencoder)
    atomic.write_json(folder / "model_index.json", index)
    return index


ABOUT = (
    "Built on an autoencoder run chosen when the run is created (any family that hands out a "
    "latent grid: an image autoencoder such as ae.kl, or a VQ-VAE, whose continuous "
    "pre-quantisation grid is modelled and quantised before decoding, as in LDM; its path "
    "and a hash of its weights are recorded, and a moved or retrained autoencoder is refused "
    "with its name). Each training image is encoded once, before training (the posterior "
    "mean, or its mean and spread where the autoencoder offers them, a fresh sample drawn "
    "each step); the latents are scaled by 1 / their standard deviation, measured on the training "
    "latents once they are encoded, before the first step (Stable Diffusion's scaling factor, saved with the model). The "
    "denoiser (UNet, or a DiT with backbone=dit) learns the latents' distribution exactly as "
    "pixel diffusion learns pixels, on a grid 4 to 64 times smaller, so it trains and samples "
    "faster at a given resolution; samples are as sharp as the autoencoder's reconstructions. "
)


class LatentDiffusion(FirstStage, DDPM):
    info = FamilyInfo(
        key="diffusion.latent",
        kind="diffusion",
        display_name="Latent diffusion",
        summary="Diffusion in a trained autoencoder's latent grid (the recipe behind Stable "
        "Diffusion): much cheaper per image than pixel diffusion at larger sizes; needs an "
        "autoencoder run first, and is only as sharp as its reconstructions.",
        about=ABOUT
        + "Unconditional, or class-conditional with classifier-free guidance when the folder "
        "has classes. Explore's latent is the start noise of DDIM on the latents; inpainting "
        "(RePaint or masked sampling) works on the latent grid under the shrunk mask and the "
        "known pixels are pasted back. Good for: a generator at 64 px and above that trains "
        "in a fraction of pixel diffusion's time.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.CONDITIONAL
        | Capability.LATENT
        | Capability.INPAINT,
        loss_names=("loss", "grad_norm"),
    )
    Config = LatentDiffusionConfig
    config: LatentDiffusionConfig

    def __init__(self, config: LatentDiffusionConfig) -> None:
        super().__init__(config)
        self.init_first_stage()

    def export_network(self) -> nn.Module:
        return self.ema_unet.net if self.uses_dit() else self.ema_unet

    # -- Explore: the start noise of DDIM on the latents -------------------------------------
    def latent_spec(self) -> LatentSpec:
        spec = super().latent_spec()
        return dataclasses.replace(
            spec,
            shape=tuple(self.sample_shape(1)[1:]),
            encoder="the autoencoder's latents, then DDIM inversion",
        )

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        dim = math.prod(self.sample_shape(1)[1:])
        return torch.randn(n, dim, generator=generator) * temperature

    def ode_decode_iter(
        self, z: Tensor, labels: Tensor | None, path: Any, guidance: float
    ) -> Generator[int, None, Tensor]:
        from studio.models.diffusion.inversion import ddim_decode_iter

        fn = self._model_fn(labels, guidance)
        out = yield from ddim_decode_iter(fn, z.float(), path, self.config.prediction_type)
        return self.to_images(torch.nan_to_num(out, nan=0.0))

    def ode_invert_iter(
        self, images: Tensor, labels: Tensor | None, path: Any, guidance: float, refine: int
    ) -> Generator[int, None, Tensor]:
        z = self.to_latents(images)
        return (yield from super().ode_invert_iter(z, labels, path, guidance, refine))

    # -- inpainting: on the latent grid ------------------------------------------------------
    def inpaint_describe(self, settings: InpaintSettings) -> str:
        return super().inpaint_describe(settings) + " on the autoencoder's latent grid"

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
        """The image's latents inpainted under the mask shrunk to the latent grid (the known
        latents blended in at every step), then decoded; the caller pastes the known pixels
        back."""
        z0 = self.to_latents(x0)
        small = self.latent_hole(hole)
        show = None if preview is None else (lambda z: preview(self.to_images(z)))
        z = yield from super().inpaint_iter(z0, small, n, generator, settings, labels, show)
        return self.to_images(z)


class LatentTextDiffusion(FirstStage, TextDiffusion):
    info = FamilyInfo(
        key="diffusion.latent_text",
        kind="diffusion",
        display_name="Latent text-to-image diffusion",
        summary="Text-to-image diffusion in a trained autoencoder's latent grid (Stable "
        "Diffusion's recipe, trained on your captions): larger images for the same cost; "
        "needs an autoencoder run and captions.",
        about=ABOUT
        + "Caption-conditioned through the text encoder of text-to-image diffusion (a small "
        "transformer trained with it on the folder's captions, or a frozen pretrained CLIP), "
        "with classifier-free guidance. In the Prompt workspace: text to image, image to image "
        "(the image is encoded, noised to the strength and denoised) and inpainting with the "
        "canvas mask (the mask shrunk to the latent grid, the known latents blended in at "
        "every step, as Stable Diffusion does). Good for: your own small Stable Diffusion "
        "that knows only your pictures.",
        capabilities=Capability.TRAIN | Capability.SAMPLE | Capability.TEXT,
        loss_names=("loss", "grad_norm"),
    )
    Config = LatentTextDiffusionConfig
    config: LatentTextDiffusionConfig
    latent_note = (
        "runs cannot be explored yet: the explorer inverts unconditional or class-conditional "
        "diffusion runs (pixels or latents) only. Use Sample or the Prompt workspace with this "
        "run."
    )

    def __init__(self, config: LatentTextDiffusionConfig) -> None:
        super().__init__(config)
        self.init_first_stage()

    def export_network(self) -> nn.Module:
        return self.ema["unet"].net if self.uses_dit() else self.ema["unet"]

    # -- the Prompt workspace ----------------------------------------------------------------
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
        """Text to image; image to image encodes ``init`` and noises its latents."""
        z0 = None if init is None else self.to_latents(init)
        z = yield from self._decoded(
            super().prompt_sample_iter(
                prompt, negative, guidance, scheduler, steps, generator, init=z0, strength=strength
            )
        )
        return self.to_images(z)

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
        """Masked sampling of the image's latents under the mask shrunk to the latent grid,
        decoded (the Prompt bridge then keeps the original pixels outside the mask)."""
        z0, small = self.to_latents(image), self.latent_hole(hole)
        z = yield from self._decoded(
            super().prompt_inpaint_iter(
                prompt, negative, guidance, scheduler, steps, generator, z0, small
            )
        )
        return self.to_images(z)
