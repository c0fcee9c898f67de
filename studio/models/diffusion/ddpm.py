"""DDPM (Ho et al. 2020): a diffusers UNet2DModel trained to undo Gaussian noise.

The network is diffusers' ``UNet2DModel`` and the noise process diffusers' ``DDPMScheduler``,
so a saved model folder is also a diffusers ``DDPMPipeline`` folder. ``backbone=dit`` swaps the
UNet for a diffusion transformer (``dit.py``; saved as a ``DiTTransformer2DModel`` folder). An
EMA copy of the network (the weights samples come from) lives beside the trained one as a
submodule, so it is part of ``state_dict`` and of every checkpoint.

With classes the model is class-conditional with classifier-free guidance (Ho & Salimans
2022): labels are replaced by a null class (index ``num_classes``) with probability
``cond_drop_prob`` in training, and sampling mixes conditional and unconditional outputs.
``CONDITIONAL`` is declared on the class, but a model built with ``num_classes == 0`` (a
dataset without class subfolders) is a plain unconditional DDPM: its instance ``conditions``
leave out ``label`` and ``guidance``, and passing either raises a ValueError.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from collections.abc import Generator as Gen
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.utils.constants import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file
from torch import Tensor, nn

from studio.core import atomic
from studio.models.base import (
    MODEL_CONFIG,
    Batch,
    Capability,
    FamilyInfo,
    GenerativeModel,
    ModelConfig,
    SampleStep,
    StepContext,
    class_labels,
    eval_mode,
    setting,
)
from studio.models.capabilities import option_default
from studio.models.configs import learning_rate, lr_warmup, network_width
from studio.models.diffusion.dit import (
    ClassDiT,
    backbone_setting,
    check_dit_config,
    dit_layers_setting,
    dit_size_setting,
    dit_width_setting,
    patch_size_setting,
)
from studio.models.diffusion.export import CLASS_NAMES_FILE, class_record, export_diffusion
from studio.models.diffusion.inpaint import DiffusionInpainting
from studio.models.diffusion.latent import DDIMLatent
from studio.models.diffusion.samplers import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SAMPLERS,
    SAMPLING_OPTIONS,
    clips,
    guided_output,
    make_sampler,
    predicted_x0,
)
from studio.models.diffusion.scoring import Denoiser, DenoisingScore
from studio.models.export import ExportContext, ExportNotes

SCHEDULES = ("linear", "squaredcos_cap_v2")
PREDICTIONS = ("epsilon", "v_prediction")


def auto_mults(resolution: int) -> tuple[int, ...]:
    """Channel multipliers per level: the lowest level sits at 4x4 up to 32 px, 8x8 above."""
    if resolution <= 8:
        return (1, 2)
    if resolution <= 16:
        return (1, 2, 2)
    if resolution <= 32:
        return (1, 2, 2, 2)  # the DDPM paper's CIFAR-10 network
    if resolution <= 64:
        return (1, 2, 3, 4)  # improved DDPM's 64 px network
    return (1, 1, 2, 3, 4)


@dataclass
class DDPMConfig(ModelConfig):
    width: int = network_width(64, help="channels of the first UNet level", main=True)
    channel_mults: str = setting(
        "auto",
        label="Channel multipliers",
        help="per level, e.g. 1,2,2,2; auto picks by resolution",
    )
    layers_per_block: int = setting(2, label="Layers per level", minimum=1, maximum=4)
    attention_res: int = setting(
        16,
        label="Attention at <= N px",
        help="self-attention at maps this small or smaller; 0 = none",
        choices=(0, 4, 8, 16, 32),
    )
    backbone: str = backbone_setting(
        "unet (convolutional, the default) or dit (a diffusion transformer on patches)", main=True
    )
    dit_size: str = dit_size_setting()
    patch_size: int = patch_size_setting(
        "pixels per side of one DiT token; 2 is finer and slower; must divide the resolution"
    )
    dit_layers: int = dit_layers_setting()
    dit_width: int = dit_width_setting()
    dropout: float = setting(0.1, label="Dropout", minimum=0.0, maximum=0.5)
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
        help="linear (DDPM) or cosine (squaredcos_cap_v2: better for small images)",
        choices=SCHEDULES,
        main=True,
    )
    prediction_type: str = setting(
        "epsilon",
        label="Predict",
        help="the noise (epsilon) or the velocity v",
        choices=PREDICTIONS,
    )
    lr: float = learning_rate(2e-4)
    weight_decay: float = setting(0.0, label="Weight decay", minimum=0.0, maximum=0.1)
    warmup_steps: int = lr_warmup(200, help="learning rate ramps up over these steps")
    grad_clip: float = setting(
        1.0, label="Gradient clip", help="max gradient norm; 0 = off", minimum=0.0, maximum=100.0
    )
    ema_decay: float = setting(
        0.999,
        label="EMA decay",
        help="samples use this average of the weights",
        minimum=0.0,
        maximum=0.99999,
        main=True,
    )
    cond_drop_prob: float = setting(
        0.1,
        label="Label dropout",
        help="classifier-free guidance: train unconditional this often",
        minimum=0.0,
        maximum=1.0,
    )
    guidance: float = setting(
        3.0,
        label="Guidance scale",
        help="default for class-conditional sampling; 1 = plain conditional",
        minimum=0.0,
        maximum=20.0,
    )

    def __post_init__(self) -> None:
        if self.beta_schedule not in SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {', '.join(SCHEDULES)}")
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTIONS)}")
        check_dit_config(self)
        if self.backbone == "dit":
            return
        mults = self.mults()
        if self.resolution % 2 ** (len(mults) - 1) or self.resolution >> (len(mults) - 1) < 2:
            raise ValueError(f"{len(mults)} UNet levels do not fit resolution {self.resolution}")

    def mults(self) -> tuple[int, ...]:
        if self.channel_mults.strip().lower() == "auto":
            return auto_mults(self.resolution)
        try:
            mults = tuple(int(m) for m in self.channel_mults.split(","))
        except ValueError:
            mults = ()
        if not mults or min(mults) < 1:
            raise ValueError(
                f"channel multipliers must look like 1,2,2,2, not {self.channel_mults!r}"
            )
        return mults


def unet_levels(c: DDPMConfig) -> tuple[tuple[int, ...], int, list[bool]]:
    """The UNet's channels per level, GroupNorm groups that divide every width, and which
    levels have (self- or cross-) attention: those whose maps are ``attention_res`` or smaller."""
    chans = tuple(c.width * m for m in c.mults())
    groups = math.gcd(32, *chans)
    sizes = [c.resolution >> i for i in range(len(chans))]
    return chans, groups, [0 < size <= c.attention_res for size in sizes]


def build_unet(c: DDPMConfig) -> UNet2DModel:
    chans, groups, attn = unet_levels(c)  # the groups also set the attention head size
    return UNet2DModel(
        sample_size=c.resolution,
        in_channels=c.channels,
        out_channels=c.channels,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=chans,
        layers_per_block=c.layers_per_block,
        dropout=c.dropout,
        attention_head_dim=groups,
        norm_num_groups=groups,
        add_attention=attn[-1],  # the middle block sits at the lowest level
        num_class_embeds=c.num_classes + 1 if c.num_classes else None,  # + the null class
    )


def build_network(c: DDPMConfig) -> nn.Module:
    """The denoiser the config asks for: the UNet, or a DiT behind the UNet's call."""
    return ClassDiT(c) if c.backbone == "dit" else build_unet(c)


def ema_decay_at(decay: float, updates: int) -> float:
    """EMA decay after ``updates`` earlier updates: warms up as (1 + n) / (10 + n) so the
    average follows the weights early on instead of staying stuck near the initialisation."""
    return min(decay, (1 + updates) / (10 + updates))


@contextlib.contextmanager
def step_rng(ctx: StepContext, device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Dropout draws from torch's global RNG: seed it from the step's generator for the block
    (without a host sync) and restore it after, so a step replays exactly on resume."""
    if not enabled:
        yield
        return
    # Micro-batches of one step (gradient accumulation) each get their own dropout masks.
    seed = (ctx.generator.initial_seed() * 0x9E3779B1 + ctx.step + ctx.micro * 0x2545F491) % 2**63
    accel = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(
        devices=accel, device_type=None if device.type == "cpu" else device.type
    ):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            torch.cuda.default_generators[index].manual_seed(seed)
        elif accel:
            torch.get_device_module(device.type).manual_seed(seed)
        yield


def build_scheduler(c: DDPMConfig, clip: bool = True) -> DDPMScheduler:
    """The training noise process (samplers are rebuilt from its config). ``clip``: the
    samplers clip the predicted clean sample to [-1, 1] (pixels; not latents)."""
    return DDPMScheduler(
        num_train_timesteps=c.num_train_timesteps,
        beta_schedule=c.beta_schedule,
        prediction_type=c.prediction_type,
        clip_sample=clip,
        # "trailing" makes short schedules start at the last (pure-noise) step.
        timestep_spacing="trailing",
    )


class UNetDiffusion(DenoisingScore, GenerativeModel):
    """What DDPM and the text model share: the training objective on ``self.scheduler``'s
    noise process, AdamW with warm-up and clipping, an EMA of the trained networks (the
    weights samples come from) and the checks of the sampling options. A subclass builds
    ``self.unet`` and says which networks are trained (``_trained``) and averaged
    (``_ema_pairs``)."""

    config: DDPMConfig
    unet: nn.Module
    scheduler: DDPMScheduler
    supports_accumulation = True

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__(config)
        self._ema_updates = 0

    def _trained(self) -> list[nn.Module]:
        raise NotImplementedError

    def sample_shape(self, n: int) -> tuple[int, int, int, int]:
        """The shape of ``n`` samples the network denoises: images here, latent grids in
        latent diffusion."""
        c = self.config
        return (n, c.channels, c.resolution, c.resolution)

    def network_config(self) -> DDPMConfig:
        """The settings the denoising network is built from: the model's own (pixels); a
        latent diffusion family answers a copy shaped like its latent grid."""
        return self.config

    def uses_dit(self) -> bool:
        """Whether the network is a diffusion transformer (``backbone=dit``); a family without
        that setting has a UNet."""
        return getattr(self.config, "backbone", "unet") == "dit"

    def _ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(EMA copy, trained network) pairs."""
        raise NotImplementedError

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        params = [p for m in self._trained() for p in m.parameters()]
        self.optimizers = {"unet": torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)}
        return self.optimizers

    def networks(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}  # not the EMA copies: they only sample

    def default_warmup_steps(self) -> int:
        return self.config.warmup_steps

    def noised(self, x0: Tensor, ctx: StepContext) -> tuple[Tensor, Tensor, Tensor]:
        """``(t, x_t, target)`` for clean images ``x0``: timesteps and noise are drawn from the
        step's generator, the target is the noise or the velocity."""
        c, dev = self.config, x0.device
        gen = ctx.generator
        shape = (x0.shape[0],)
        t = torch.randint(0, c.num_train_timesteps, shape, generator=gen, device=gen.device).to(dev)
        noise = ctx.randn(*x0.shape).to(dev)
        x_t = self.scheduler.add_noise(x0, noise, t)
        if c.prediction_type == "epsilon":
            target = noise
        elif c.prediction_type == "sample":  # the clean image itself (super-resolution's)
            target = x0
        else:
            target = self.scheduler.get_velocity(x0, noise, t)
        return t, x_t, target

    def finish_step(self, loss: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        """Backward and step (warm-up as a function of the step, so a resume is exact;
        clipping; accumulation), then update the EMA; the step's losses."""
        grad_norm = self.optimizer_step("unet", loss, ctx, clip=self.config.grad_clip)
        if grad_norm is None:  # a micro-batch that only accumulated gradients
            return {"loss": loss.detach()}
        self.update_ema()
        return {"loss": loss.detach(), "grad_norm": grad_norm}

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * weights, as one fused op over all tensors."""
        decay = ema_decay_at(self.config.ema_decay, self._ema_updates)
        for ema, raw in self._ema_pairs():
            ema_params, raw_params, ema_bufs, raw_bufs = self._ema_tensors(ema, raw)
            torch._foreach_lerp_(ema_params, raw_params, 1.0 - decay)
            if ema_bufs:
                torch._foreach_copy_(ema_bufs, raw_bufs)
        self._ema_updates += 1

    def _ema_tensors(self, ema: nn.Module, raw: nn.Module) -> tuple[list[Tensor], ...]:
        """The pair's parameters and buffers, listed on first use: each listing walks every
        module (four walks of a UNet's ~170 modules every step otherwise). Moving, loading,
        channels_last, compiling and the CPU speed swaps keep the same tensor objects; code
        that replaces a network's parameters or buffers must clear ``_ema_lists``."""
        cache = self.__dict__.setdefault("_ema_lists", {})
        hit = cache.get((id(ema), id(raw)))
        if hit is not None and hit[0] is ema and hit[1] is raw:
            return hit[2:]
        lists = (
            list(ema.parameters()),
            list(raw.parameters()),
            list(ema.buffers()),
            list(raw.buffers()),
        )
        cache[(id(ema), id(raw))] = (ema, raw, *lists)
        return lists

    def extra_state(self) -> dict[str, Any]:
        return {"ema_updates": self._ema_updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._ema_updates = int(state.get("ema_updates", 0))

    # -- sampling ------------------------------------------------------------------------
    def parse_sampling(self, conditions: dict[str, Any]) -> tuple[str, int, float]:
        """Checked ``(sampler, steps, guidance)`` from sampling conditions (defaults filled)."""
        given = {k: v for k, v in conditions.items() if v is not None}
        self.check_conditions(given)
        name = str(given.get("sampler", DEFAULT_SAMPLER)).lower()
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
        default = option_default(self.sampling_options, "steps", {"sampler": name})
        steps = int(given.get("steps", default or DEFAULT_STEPS[name]))
        if not 1 <= steps <= self.config.num_train_timesteps:
            raise ValueError(
                f"steps must be between 1 and {self.config.num_train_timesteps}, got {steps}"
            )
        guidance = float(given.get("guidance", self.config.guidance))
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        return name, steps, guidance


class DDPM(DDIMLatent, DiffusionInpainting, UNetDiffusion):
    info = FamilyInfo(
        key="diffusion.ddpm",
        kind="diffusion",
        display_name="DDPM",
        summary="Diffusion: steady training and varied, faithful samples, but slow to train and "
        "each sample takes many network passes.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.CONDITIONAL
        | Capability.LATENT
        | Capability.INPAINT,
        loss_names=("loss", "grad_norm"),
    )
    Config = DDPMConfig
    config: DDPMConfig
    conditions = ("label", "steps", "sampler", "guidance")
    sampling_options = SAMPLING_OPTIONS
    shardable = True  # GroupNorm, attention and convolutions: each sample on its own

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__(config)
        if config.num_classes < 0:
            raise ValueError("num_classes must be >= 0")
        if not config.num_classes:  # unconditional: no label, no guidance
            self.conditions = ("steps", "sampler")  # type: ignore[misc]
        self.unet = build_network(self.network_config())  # named unet whichever the backbone
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
        self.scheduler = build_scheduler(config)

    def _trained(self) -> list[nn.Module]:
        return [self.unet]

    def _ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.ema_unet, self.unet)]

    # -- training ------------------------------------------------------------------------
    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        t, x_t, target = self.noised(batch.images, ctx)
        labels = self._train_labels(batch, ctx)
        if ctx.shards is not None:  # CPU: the batch split across threads

            def loss_of(rows: slice) -> Tensor:
                cond = None if labels is None else labels[rows]
                with ctx.autocast():
                    pred = self.unet(x_t[rows], t[rows], class_labels=cond).sample
                sq = F.mse_loss(pred.float(), target[rows].float(), reduction="sum")
                return sq / target.numel()

            seed = ctx.generator.initial_seed() + ctx.step * 0x2545F491 + ctx.micro
            loss = ctx.shards.loss(loss_of, x_t.shape[0], list(self.unet.parameters()), seed)
            return self.finish_step(loss, ctx)
        with ctx.autocast(), step_rng(ctx, x_t.device, enabled=c.dropout > 0):
            pred = self.unet(x_t, t, class_labels=labels).sample
        loss = F.mse_loss(pred.float(), target.float())
        return self.finish_step(loss, ctx)

    def _train_labels(self, batch: Batch, ctx: StepContext) -> Tensor | None:
        nc = self.config.num_classes
        if not nc:
            return None
        if batch.labels is None:
            raise ValueError("this DDPM is class-conditional: the batch needs labels")
        labels = batch.labels.long()
        drop = ctx.rand(labels.shape[0]).to(labels.device) < self.config.cond_drop_prob
        return torch.where(drop, torch.full_like(labels, nc), labels)

    def score_denoiser(self, n: int, labels: Tensor | None) -> Denoiser:
        """The EMA network for the denoising score: given ``labels``, conditioned on them; a
        class-conditional model given none uses its null class (unconditional)."""
        nc = self.config.num_classes
        if nc and labels is None:
            labels = torch.full((n,), nc, dtype=torch.long, device=self.device)
        labels = None if labels is None else labels.to(self.device)
        unet = self.ema_unet

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            with eval_mode(unet):
                return guided_output(unet, x, t, labels if nc else None, nc, 1.0)

        return denoise

    # -- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def sample_iter(
        self, n: int, generator: torch.Generator, *, use_ema: bool = True, **conditions: Any
    ) -> Gen[SampleStep, None, Tensor]:
        """Denoise ``n`` images. Conditions: sampler ("ddpm", "ddim", "dpm++"; default dpm++),
        steps (defaults 1000 / 50 / 20), and for a class-conditional model label (None cycles
        through the classes) and guidance. ``use_ema=False`` samples the raw trained weights."""
        c, device = self.config, self.device
        given = {k: v for k, v in conditions.items() if v is not None}
        if not c.num_classes and {"label", "guidance"} & set(given):
            raise ValueError(
                "This DDPM was trained without classes, so it takes no label or guidance "
                "(train on a folder with one subfolder per class to get a conditional model)."
            )
        name, steps, guidance = self.parse_sampling(given)
        labels = None
        if c.num_classes:
            labels = class_labels(n, c.num_classes, given.get("label"), device)

        sched = make_sampler(name, self.scheduler.config)
        sched.set_timesteps(steps, device=device)
        unet = self.ema_unet if use_ema else self.unet
        clip = clips(self.scheduler.config)  # pixels are clipped to [-1, 1]; latents are not
        x = torch.randn(self.sample_shape(n), generator=generator).to(device)
        x = x * sched.init_noise_sigma
        total = len(sched.timesteps)
        every = max(1, total // 8)
        for i, t in enumerate(sched.timesteps):
            with eval_mode(unet):  # entered per step: nothing stays switched while suspended
                out = guided_output(
                    unet, sched.scale_model_input(x, t), t, labels, c.num_classes, guidance
                )
            # A CPU generator: diffusers draws any step noise on the CPU and moves it.
            x = sched.step(out, t, x, generator=generator).prev_sample
            preview = None
            if i + 1 == total:
                preview = x.clamp(-1, 1) if clip else x
            elif (i + 1) % every == 0:
                alphas = self.scheduler.alphas_cumprod
                preview = predicted_x0(alphas, x, out, t, c.prediction_type, clip)
            yield SampleStep(i + 1, total, preview)
        return x.clamp(-1, 1) if clip else x

    # -- export: diffusers folders (studio export) ---------------------------------------------
    def save_run_files(self, folder: Path, context: ExportContext) -> None:
        """A class-conditional run's ``model/`` folder gets ``class_names.json`` (the names in
        label order and the null class of guidance), as its export does."""
        if int(getattr(self.config, "num_classes", 0)) > 0:
            atomic.write_json(Path(folder) / CLASS_NAMES_FILE, class_record(self, context))

    export_formats = ("diffusers", "safetensors")

    def export_files(self, folder: Path, fmt: str, context: ExportContext) -> ExportNotes:
        """``unet/`` or ``transformer/``, ``scheduler/``, ``model_index.json`` and, with classes,
        ``class_names.json`` (``--format diffusers``); or one safetensors file and its json."""
        return export_diffusion(self, folder, fmt, context)

    # -- persistence: a diffusers DDPMPipeline folder plus studio.json -------------------------
    def save(self, folder: str | Path) -> None:
        """Write ``unet/`` (EMA weights), ``unet_raw/`` (trained weights), ``scheduler/`` and
        ``model_index.json`` in diffusers' layout, then ``studio.json``. A DiT writes
        ``transformer/`` and ``transformer_raw/`` (``DiTTransformer2DModel`` folders) and no
        ``model_index.json``: diffusers' DiT pipeline expects a VAE, which a pixel model has not.

        Each file is written in a hidden temp folder beside its destination, fsynced and renamed
        over the old file, so a crash leaves every file whole (old or new). A crash between
        files can mix old and new weights files; within one run each is still a valid model.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        dit = self.uses_dit()
        name = "transformer" if dit else "unet"
        ema, raw = (self.ema_unet.net, self.unet.net) if dit else (self.ema_unet, self.unet)
        _replace_files(folder, name, lambda p: _save_unet(ema, p))
        _replace_files(folder, f"{name}_raw", lambda p: _save_unet(raw, p))
        _replace_files(folder, "scheduler", self.scheduler.save_pretrained)
        if not dit:
            index = {
                "_class_name": "DDPMPipeline",
                "_diffusers_version": diffusers.__version__,
                "scheduler": ["diffusers", "DDPMScheduler"],
                "unet": ["diffusers", "UNet2DModel"],
            }
            atomic.write_json(folder / "model_index.json", index)
        atomic.write_json(folder / MODEL_CONFIG, self.describe())

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> DDPM:
        folder = Path(folder)
        meta = json.loads((folder / MODEL_CONFIG).read_text(encoding="utf-8"))
        model = cls(cls.Config.from_saved(meta["config"]))
        dit = model.uses_dit()
        name = "transformer" if dit else "unet"
        ema_net, raw_net = (
            (model.ema_unet.net, model.unet.net) if dit else (model.ema_unet, model.unet)
        )
        ema = load_file(str(folder / name / SAFETENSORS_WEIGHTS_NAME), device="cpu")
        ema_net.load_state_dict(ema)
        raw_path = folder / f"{name}_raw" / SAFETENSORS_WEIGHTS_NAME
        raw_net.load_state_dict(load_file(str(raw_path)) if raw_path.exists() else ema)
        return model.to(device)


def _save_unet(unet: nn.Module, path: Path) -> None:
    """A diffusers model's ``save_pretrained`` folder (config and safetensors weights)."""
    weights = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    unet.save_pretrained(path, safe_serialization=True, state_dict=weights)


def _replace_files(folder: Path, name: str, write: Callable[[Path], Any]) -> None:
    """``write`` fills a temp folder; each file then atomically replaces ``folder/name/file``."""
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", suffix=".tmp", dir=folder) as tmp:
        write(Path(tmp))
        # Weights before configs, so a new config never describes old weights.
        for path in sorted(Path(tmp).iterdir(), key=lambda p: p.suffix == ".json"):
            atomic.give_ordinary_mode(path)  # safetensors writes 0600
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(path, target / path.name)
        atomic.fsync_dir(target)
