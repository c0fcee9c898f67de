"""Diffusion super-resolution in the manner of SR3 (Saharia et al. 2021): a DDPM whose UNet sees
the noisy high-resolution image and, stacked as channels, the low-resolution input upsampled
(bicubic) to the same size; it learns to denoise toward the sharp image.

By default (``residual``, as SRDiff, Li et al. 2022) what is diffused is not the sharp image but
its difference from the bicubic upsample, times ``residual_scale``, and the network predicts
that clean residual (``prediction_type="sample"``) from a zero-initialised output layer: an
untrained model returns the bicubic image exactly and training adds detail. SR3's original
parameterisation (the sharp image, epsilon prediction) is ``residual=False,
prediction_type="epsilon"``: what runs saved before the setting get (``legacy_defaults``).
With epsilon prediction and few training steps, the x0 implied early in sampling is
``(x_t - sqrt(1 - a) eps) / sqrt(a)`` with ``a`` near 0: any error in eps is magnified and
clamped to +-1, so short runs came out as saturated blotches, far below their own input.

It trains on one folder (``Capability.SINGLE_FOLDER``): each training image's input is made
from the image itself, on the fly, by :meth:`SuperRes.paired_inputs` (a mild Gaussian blur, an
antialiased bicubic downsample by ``scale``, a little Gaussian noise, each drawn per image from
the step's generator: the same seed gives the same inputs). The noise process, the EMA, the
optimiser and the samplers (DDIM, DPM-Solver++ at few steps) are DDPM's
(:mod:`studio.models.diffusion.ddpm`, :mod:`studio.models.diffusion.samplers`).

The UNet is fully convolutional, so it upscales an input of any height and width (padded by
reflection to what its levels need, cropped back); large images go through
:mod:`studio.engine.upscale` in overlapping tiles.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Generator as Gen
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.utils.constants import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file
from torch import Tensor, nn

from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    ModelConfig,
    SampleStep,
    StepContext,
    any_size_inputs,
    eval_mode,
    setting,
)
from studio.models.configs import learning_rate, lr_warmup, network_width
from studio.models.diffusion.ddpm import (
    DDPM,
    PREDICTIONS,
    SCHEDULES,
    UNetDiffusion,
    auto_mults,
    build_scheduler,
    step_rng,
)
from studio.models.diffusion.dit import (
    ClassDiT,
    backbone_setting,
    check_dit_config,
    dit_layers_setting,
    dit_size_setting,
    dit_width_setting,
    patch_size_setting,
)
from studio.models.diffusion.samplers import SAMPLING_OPTIONS, denoise_iter

SCALES = (2, 4)
# DDPM's predictions plus the clean image itself ("sample"): with the residual, a network that
# outputs zero then returns the bicubic upsample, so training starts from bicubic's quality.
SR_PREDICTIONS = (*PREDICTIONS, "sample")


#: Super-resolution's sampler steps by default (DDPM keeps its full chain).
SR_DEFAULT_STEPS = (("ddpm", 1000), ("ddim", 4), ("dpm++", 4))


@dataclass
class SuperResConfig(ModelConfig):
    """``resolution`` is the output's (the training crops'); inputs are ``resolution / scale``."""

    scale: int = setting(
        2,
        label="Scale",
        help="how many times larger the output is than the input, each side",
        choices=SCALES,
        main=True,
    )
    blur: float = setting(
        0.6,
        label="Input blur",
        help="largest Gaussian blur (sigma, in input pixels) of the made inputs; each image "
        "draws one from 0 to this",
        minimum=0.0,
        maximum=3.0,
    )
    input_noise: float = setting(
        0.02,
        label="Input noise",
        help="largest noise (std, on the -1..1 scale) added to the made inputs; 0 = none",
        minimum=0.0,
        maximum=0.2,
    )
    width: int = network_width(64, help="channels of the first UNet level", main=True)
    layers_per_block: int = setting(2, label="Layers per level", minimum=1, maximum=4)
    attention_res: int = setting(
        0,
        label="Attention at <= N px",
        help="self-attention at maps this small or smaller; 0 = none (any input size stays cheap)",
        choices=(0, 4, 8, 16, 32),
    )
    backbone: str = backbone_setting(
        "unet (convolutional, the default) or dit (a diffusion transformer on patches of "
        "the noisy image and the upsampled input)"
    )
    dit_size: str = dit_size_setting()
    patch_size: int = patch_size_setting(
        "pixels per side of one DiT token (of the output); must divide the resolution"
    )
    dit_layers: int = dit_layers_setting()
    dit_width: int = dit_width_setting()
    dropout: float = setting(0.0, label="Dropout", minimum=0.0, maximum=0.5)
    num_train_timesteps: int = setting(
        1000,
        label="Noise steps",
        help="length of the training noise process",
        minimum=10,
        maximum=4000,
    )
    beta_schedule: str = setting(
        "linear",
        label="Noise schedule",
        help="linear (DDPM) or cosine (squaredcos_cap_v2)",
        choices=SCHEDULES,
    )
    prediction_type: str = setting(
        "sample",
        label="Predict",
        help="what the network outputs: the clean image (sample; an untrained residual model "
        "then returns bicubic), the noise (epsilon, SR3's) or the velocity v",
        choices=SR_PREDICTIONS,
    )
    residual: bool = setting(
        True,
        label="Learn the residual over bicubic",
        help="the diffusion models the difference between the sharp image and the bicubic "
        "upsample of its input (SRDiff), so a fresh model starts at bicubic quality and "
        "training adds the detail; off: it models the sharp image itself (SR3, and runs "
        "saved before this setting)",
    )
    residual_scale: float = setting(
        2.0,
        label="Residual scale",
        help="the residual is multiplied by this before the diffusion models it (residuals "
        "are small; larger values give them more weight against the noise; residuals beyond "
        "1 / scale are clipped)",
        minimum=0.5,
        maximum=8.0,
    )
    lr: float = learning_rate(1e-4)
    weight_decay: float = setting(0.0, label="Weight decay", minimum=0.0, maximum=0.1)
    warmup_steps: int = lr_warmup(200, help="learning rate ramps up over these steps")
    grad_clip: float = setting(
        1.0, label="Gradient clip", help="max gradient norm; 0 = off", minimum=0.0, maximum=100.0
    )
    ema_decay: float = setting(
        0.999,
        label="EMA decay",
        help="outputs use this average of the weights",
        minimum=0.0,
        maximum=0.99999,
        main=True,
    )
    guidance: ClassVar[float] = 1.0  # no classes: the shared sampler checks read it
    # Runs saved before these settings existed trained the sharp image with epsilon
    # prediction; loading or resuming them keeps that.
    legacy_defaults: ClassVar[dict[str, Any]] = {"residual": False, "prediction_type": "epsilon"}

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(str, SCALES))}")
        if self.resolution % self.scale:
            raise ValueError(f"the resolution {self.resolution} is not a multiple of {self.scale}")
        if self.beta_schedule not in SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {', '.join(SCHEDULES)}")
        if self.prediction_type not in SR_PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {', '.join(SR_PREDICTIONS)}")
        check_dit_config(self)

    def mults(self) -> tuple[int, ...]:
        return auto_mults(self.resolution)


def build_network(c: SuperResConfig) -> nn.Module:
    """The denoiser: the UNet, or with ``backbone=dit`` a DiT, each taking twice the image's
    channels (the noisy image and the upsampled input) and unconditional otherwise."""
    return ClassDiT(c, in_channels=2 * c.channels) if c.backbone == "dit" else build_unet(c)


def build_unet(c: SuperResConfig) -> UNet2DModel:
    """DDPM's UNet with twice the input channels: the noisy image and the upsampled input."""
    chans = tuple(c.width * m for m in c.mults())
    groups = math.gcd(32, *chans)
    attn = [0 < (c.resolution >> i) <= c.attention_res for i in range(len(chans))]
    return UNet2DModel(
        sample_size=c.resolution,
        in_channels=2 * c.channels,
        out_channels=c.channels,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=chans,
        layers_per_block=c.layers_per_block,
        dropout=c.dropout,
        attention_head_dim=groups,
        norm_num_groups=groups,
        add_attention=attn[-1],
    )


# -- the degradation: how a training image's input is made ----------------------------------------


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Each image of ``x`` blurred with its own Gaussian of std ``sigma[i]`` (pixels; 0 = none),
    separably, reflecting at the borders."""
    radius = max(1, math.ceil(3 * float(sigma.max()))) if len(sigma) else 1
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    s = sigma.to(x.device, torch.float32).clamp_min(1e-3)[:, None]
    k = torch.exp(-(taps[None] ** 2) / (2 * s**2))
    k = k / k.sum(1, keepdim=True)  # N x taps; sigma ~0 gives (0 .. 1 .. 0)
    n, ch, h, w = x.shape
    pad = min(radius, h - 1, w - 1)
    if pad < radius:  # an image smaller than the kernel: trim the kernel
        k = k[:, radius - pad : radius + pad + 1]
        k = k / k.sum(1, keepdim=True)
    y = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect") if pad else x.float()
    y = y.reshape(1, n * ch, *y.shape[-2:])
    kk = k.repeat_interleave(ch, 0)  # one kernel per (image, channel)
    y = F.conv2d(y, kk[:, None, None, :], groups=n * ch)
    y = F.conv2d(y, kk[:, None, :, None], groups=n * ch)
    return y.reshape(n, ch, h, w)


def degrade(
    images: Tensor, scale: int, blur: float, noise: float, generator: torch.Generator
) -> Tensor:
    """Low-resolution inputs of ``images`` (N x C x H x W in [-1, 1]): blurred (sigma drawn in
    [0, ``blur``] input pixels, i.e. times ``scale`` here), downsampled by ``scale`` (bicubic,
    antialiased), noised (std drawn in [0, ``noise``]); all draws from ``generator``."""
    n = images.shape[0]
    draws = torch.rand(2, n, generator=generator, device=generator.device).to(images.device)
    x = images.float()
    if blur > 0:
        x = gaussian_blur(x, draws[0] * blur * scale)
    h, w = images.shape[-2] // scale, images.shape[-1] // scale
    x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    if noise > 0:
        eps = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        x = x + eps * (draws[1] * noise).reshape(-1, 1, 1, 1)
    return x.clamp(-1, 1)


def upsample(x: Tensor, scale: int) -> Tensor:
    """Bicubic upsampling by ``scale``, clamped to [-1, 1]: the baseline, and what the UNet sees."""
    return F.interpolate(x.float(), scale_factor=scale, mode="bicubic", align_corners=False).clamp(
        -1, 1
    )


# -- the family -------------------------------------------------------------------------------------


class SuperRes(UNetDiffusion):
    info = FamilyInfo(
        key="i2i.superres",
        kind="i2i",
        display_name="Super-resolution (SR3)",
        summary="Diffusion upscaling x2 or x4, trained on one folder of images: sharper than "
        "bicubic, but each output takes a few dozen network passes.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.PAIRED
        | Capability.SINGLE_FOLDER,
        loss_names=("loss", "grad_norm"),
        about=(
            "Upscales images 2x or 4x (the Scale setting) by diffusion, as SR3 does: a DDPM's "
            "UNet denoises the high-resolution image while it sees the low-resolution input, "
            "upsampled bicubically, stacked beside it as extra channels. It trains on ONE "
            "folder of images: each training image's low-resolution input is made from it on "
            "the fly (a mild blur, a bicubic downsample, a little noise, drawn from the run's "
            "seed), so any collection of sharp images of the kind you want to upscale will do. "
            "By default (the residual setting, as SRDiff) the diffusion models only the "
            "difference between the sharp image and the bicubic upsample, and the network "
            "predicts the clean residual from a zero-initialised last layer: a fresh run "
            "returns exactly bicubic and training adds the detail, so even a short run does "
            "not fall below bicubic. Outputs are sampled with DPM-Solver++ (4 steps by "
            "default) or DDIM; after a short training run 1 to 4 steps give the highest "
            "PSNR/SSIM (close to the average plausible image), and more steps add texture, "
            "sharper but partly invented. The network is fully convolutional, so it upscales "
            "images of any size: `studio upscale --run RUN --image IMG --out OUT` cuts large "
            "ones into overlapping tiles and blends them without seams. Sample grids show "
            "held-out images as input (upsampled bicubically) | output | original rows, and the "
            "run logs their PSNR and SSIM beside bicubic's (`heldout_psnr`, "
            "`heldout_psnr_bicubic`, `heldout_ssim`, `heldout_ssim_bicubic`): the model "
            "earns its keep when it beats bicubic."
        ),
    )
    Config = SuperResConfig
    config: SuperResConfig  # type: ignore[assignment]
    conditions = ("image", "steps", "sampler")
    # Few sampler steps by default: after a short run 1 to 4 steps score highest against the
    # originals and more add texture (docs/quality.md, the super-resolution benchmark).
    sampling_options = tuple(
        replace(o, defaults=SR_DEFAULT_STEPS) if o.name == "steps" else o
        for o in SAMPLING_OPTIONS
        if o.name != "guidance"
    )
    translates_any_size = True
    shardable = False
    latent_note = "Super-resolution has no latent space: it upscales an input image."
    scores = ()  # it upscales inputs: nothing to score an image against

    def __init__(self, config: SuperResConfig) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        self.unet = build_network(config)  # named unet whichever the backbone, as DDPM's
        if config.residual and config.prediction_type == "sample" and config.backbone != "dit":
            # The last layer starts at zero: the fresh model predicts a zero residual, i.e.
            # returns the bicubic upsample, and training moves it from there (a DiT's output
            # projection starts at zero already: adaLN-zero).
            torch.nn.init.zeros_(self.unet.conv_out.weight)
            torch.nn.init.zeros_(self.unet.conv_out.bias)
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
        self.scheduler = build_scheduler(config)  # type: ignore[arg-type]

    _trained = DDPM._trained
    _ema_pairs = DDPM._ema_pairs

    @classmethod
    def scale_for(cls, config: ModelConfig) -> int:
        return int(getattr(config, "scale", 1))

    def paired_inputs(self, images: Tensor, generator: torch.Generator) -> Tensor:
        c = self.config
        return degrade(images, c.scale, c.blur, c.input_noise, generator)

    # -- training ------------------------------------------------------------------------
    def to_diffused(self, images: Tensor, cond: Tensor) -> Tensor:
        """What the diffusion models for sharp ``images`` whose input upsamples to ``cond``:
        the images themselves, or (``residual``) their scaled difference from ``cond``."""
        c = self.config
        if not c.residual:
            return images
        return ((images.float() - cond.float()) * c.residual_scale).clamp(-1, 1)

    def from_diffused(self, x: Tensor, cond: Tensor) -> Tensor:
        """The image in [-1, 1] for a sampled ``x`` (the inverse of :meth:`to_diffused`)."""
        c = self.config
        if not c.residual:
            return x
        return (cond + x / c.residual_scale).clamp(-1, 1)

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        cond = upsample(self.paired_inputs(batch.images, ctx.generator), c.scale)
        x0 = self.to_diffused(batch.images, cond).to(batch.images.dtype)
        t, x_t, target = self.noised(x0, ctx)
        with ctx.autocast(), step_rng(ctx, x_t.device, enabled=c.dropout > 0):
            pred = self.unet(torch.cat([x_t, cond.to(x_t.dtype)], 1), t).sample
        loss = F.mse_loss(pred.float(), target.float())
        return self.finish_step(loss, ctx)

    # -- sampling ------------------------------------------------------------------------
    def _levels_multiple(self) -> int:
        if self.uses_dit():  # whole patches
            return self.config.patch_size
        return 2 ** (len(self.config.mults()) - 1)

    @torch.no_grad()
    def sample_iter(
        self, n: int, generator: torch.Generator, *, use_ema: bool = True, **conditions: Any
    ) -> Gen[SampleStep, None, Tensor]:
        """Upscale the ``image`` condition (``m x C x h x w`` in [-1, 1], or one ``C x h x w``,
        any size) into ``n`` outputs of ``h * scale x w * scale``: input ``i % m`` for output
        ``i``, each from its own noise. Conditions: sampler and steps, as DDPM's."""
        c, device = self.config, self.device
        given = {k: v for k, v in conditions.items() if v is not None}
        image = given.pop("image", None)
        name, steps, _ = self.parse_sampling(given)
        x = any_size_inputs(
            self,
            image,
            n,
            f"{self.info.display_name} upscales images: give it an input image "
            "(studio upscale --run RUN --image IMG --out OUT)",
        )
        cond = upsample(x, c.scale)
        h, w = cond.shape[-2:]
        # The UNet halves the map at each level (a DiT cuts whole patches): pad (reflecting) to
        # a multiple, crop after.
        m = self._levels_multiple()
        ph, pw = -h % m, -w % m
        if self.uses_dit():  # diffusers' DiT unpatchifies square token grids only
            side = max(h + ph, w + pw)
            ph, pw = side - h, side - w
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            cond = F.pad(cond, (0, pw, 0, ph), mode=mode)
        unet = self.ema_unet if use_ema else self.unet

        def denoise(xt: Tensor, t: Tensor) -> Tensor:
            tt = t.reshape(-1).expand(xt.shape[0]).to(xt.device)
            with eval_mode(unet):
                return unet(torch.cat([xt, cond], 1), tt).sample

        steps_iter = denoise_iter(
            denoise,
            name,
            steps,
            self.scheduler,
            tuple(cond.shape[:1]) + (c.channels,) + tuple(cond.shape[2:]),
            generator,
            device,
            c.prediction_type,
        )
        while True:
            try:
                step = next(steps_iter)
            except StopIteration as done:
                out = done.value
                break
            preview = None
            if step.preview is not None:
                preview = self.from_diffused(step.preview, cond)[..., :h, :w]
            yield SampleStep(step.step, step.total, preview)
        return self.from_diffused(out, cond)[..., :h, :w]

    # -- persistence: DDPM's diffusers layout (the UNet takes 2 x channels) ---------------------
    save = DDPM.save

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> SuperRes:
        from studio.models.base import MODEL_CONFIG

        folder = Path(folder)
        meta = json.loads((folder / MODEL_CONFIG).read_text(encoding="utf-8"))
        model = cls(cls.Config.from_saved(meta["config"]))
        dit = model.uses_dit()
        name = "transformer" if dit else "unet"  # as DDPM.save writes them
        ema_net, raw_net = (
            (model.ema_unet.net, model.unet.net) if dit else (model.ema_unet, model.unet)
        )
        ema = load_file(str(folder / name / SAFETENSORS_WEIGHTS_NAME), device="cpu")
        ema_net.load_state_dict(ema)
        raw_path = folder / f"{name}_raw" / SAFETENSORS_WEIGHTS_NAME
        raw_net.load_state_dict(load_file(str(raw_path)) if raw_path.exists() else ema)
        return model.to(device)
