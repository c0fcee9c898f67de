"""Pieces shared by the GAN family: a DCGAN-shaped generator and discriminator, the penalties,
and :class:`GANModel`, the base every GAN here subclasses (networks, optimizers, sampling).

Both networks scale with the resolution: the generator starts from a 4x4 map and doubles it
until it reaches the image size; the discriminator mirrors it. Widths halve as the maps grow,
from ``width * 2**(levels - 1)`` down to ``width``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Generator as Gen
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _sn

from studio.models.base import (
    Batch,
    GenerativeModel,
    ModelConfig,
    SampleStep,
    class_labels,
    eval_mode,
    setting,
)
from studio.models.capabilities import PROJECTION, LatentSpec
from studio.models.configs import learning_rate, network_width
from studio.models.gan.augment import AUTO_LIMIT, MODES, AugmentPipe, resolve_mode
from studio.models.gan.growing import (
    GrowingDiscriminator,
    GrowingGenerator,
    Stage,
    as_tensor_metrics,
    growth_schedule,
    reals_at,
    set_stage,
    stage_sizes,
    upscale,
)
from studio.models.latent_inpaint import LatentInpainting
from studio.models.pooling import pooled


def levels_for(resolution: int) -> int:
    levels = int(math.log2(resolution)) - 2  # 4x4 -> resolution
    if 2 ** (levels + 2) != resolution or levels < 1:
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return levels


def init_dcgan_weights(module: nn.Module) -> None:
    """The DCGAN paper's init: N(0, 0.02) for convolutions, N(1, 0.02) for batch-norm scales.

    Spectrally normalised weights keep their default init: the normalisation removes the
    scale anyway, and their power-iteration vectors were warmed up for those weights.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if not parametrize.is_parametrized(m, "weight"):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(GrowingGenerator):
    """z (and an optional class embedding) -> image in [-1, 1].

    ``grow`` (progressive growing) adds a to-RGB layer per smaller size (``grow_to_rgb``):
    like the last layer, a transposed convolution that doubles the maps, then tanh."""

    def __init__(
        self,
        latent_dim: int,
        width: int,
        resolution: int,
        channels: int,
        num_classes: int = 0,
        grow: bool = False,
    ) -> None:
        super().__init__()
        levels = levels_for(resolution)
        self.latent_dim, self.resolution = latent_dim, resolution
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        top = width * 2 ** (levels - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, top, 4, 1, 0, bias=False),
            nn.BatchNorm2d(top),
            nn.ReLU(inplace=True),
        ]
        ch = top
        for _ in range(levels - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(inplace=True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        # The maps that make a size-r image are r/2 px wide, with width * resolution / r
        # channels; empty without growing, so the saved weights stay as they were.
        self.grow_to_rgb = nn.ModuleDict(
            {
                str(r): nn.ConvTranspose2d(width * resolution // r, channels, 4, 2, 1, bias=False)
                for r in (stage_sizes(resolution) if grow else ())
            }
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        x = self._input(z, labels)
        return self.grown(lambda: self.net(x), x)

    def images_at(self, resolution: int, previous: bool, x: Tensor) -> tuple[Tensor | None, Tensor]:
        # Block i (three layers: transposed conv, batch norm, ReLU) makes the 4 * 2**i px
        # maps; the image of size r is made from the r/2 px ones.
        last = int(math.log2(resolution)) - 3
        before = None
        for i in range(last + 1):
            if previous and i == last:
                before = self._to_rgb(resolution // 2, x)
            x = self.net[3 * i : 3 * i + 3](x)
        return before, self._to_rgb(resolution, x)

    def _to_rgb(self, resolution: int, maps: Tensor) -> Tensor:
        if resolution == self.resolution:
            return self.net[-2:](maps)
        return torch.tanh(self.grow_to_rgb[str(resolution)](maps))

    def _input(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: labels are required")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return z[:, :, None, None]

    def first_block(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The first block's maps (transposed conv, batch norm, ReLU): where GANSpace looks."""
        return self.net[:3](self._input(z, labels))


class Discriminator(GrowingDiscriminator):
    """image (and an optional class, by projection) -> one logit (or critic score) per image.

    ``norm`` is "batch" (DCGAN), "none" or "layer" (WGAN-GP critics must not use batch norm:
    the gradient penalty is per image, and batch norm mixes images); ``spectral`` wraps every
    convolution (and the class embedding) in spectral normalisation. ``grow`` (progressive
    growing) adds a from-RGB layer per smaller size (``grow_from_rgb``), shaped like the first.
    """

    def __init__(
        self,
        width: int,
        resolution: int,
        channels: int,
        num_classes: int = 0,
        norm: str = "batch",
        spectral: bool = False,
        grow: bool = False,
    ) -> None:
        super().__init__()
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"norm must be batch, layer or none, got {norm!r}")
        levels = levels_for(resolution)
        self.resolution = resolution
        wrap = _sn if spectral else (lambda m: m)
        layers: list[nn.Module] = [
            wrap(nn.Conv2d(channels, width, 4, 2, 1)),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        ch = width
        self._starts = [0]  # where each block (one halving) begins in ``features``
        for _ in range(levels - 1):
            self._starts.append(len(layers))
            layers.append(wrap(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm == "none")))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(ch * 2))
            elif norm == "layer":
                layers.append(nn.GroupNorm(1, ch * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = wrap(nn.Conv2d(ch, 1, 4, 1, 0))
        # Projection discriminator (Miyato & Koyama 2018): logit += <embed(y), features>.
        # Small init, like the convolutions, so the class term does not swamp the start.
        self.embed: nn.Module | None = None
        if num_classes:
            embed = nn.Embedding(num_classes, ch)
            nn.init.normal_(embed.weight, 0.0, 0.02)
            self.embed = wrap(embed)
        self._starts.append(len(layers))
        self.grow_from_rgb = nn.ModuleDict(
            {
                str(r): nn.Sequential(
                    wrap(nn.Conv2d(channels, width * resolution // r, 4, 2, 1)),
                    nn.LeakyReLU(0.2, inplace=True),
                )
                for r in (stage_sizes(resolution) if grow else ())
            }
        )

    # The stages: an image of size r enters through a layer that halves it (the first block
    # at the full size); block j >= 1 halves the resolution / 2**j px maps.
    def entry(self, resolution: int) -> Callable[[Tensor], Tensor]:
        if resolution == self.resolution:
            return self.features[: self._starts[1]]
        return self.grow_from_rgb[str(resolution)]

    def blocks_from(self, resolution: int) -> Sequence[Callable[[Tensor], Tensor]]:
        first = int(math.log2(self.resolution // resolution)) + 1
        starts = self._starts
        return [self.features[starts[j] : starts[j + 1]] for j in range(first, len(starts) - 1)]

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.features(x) if self._partial() is None else self.trunk(x)
        out = self.head(h).flatten(1).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: labels are required")
            pooled = h.sum(dim=(2, 3))
            out = out + (self.embed(labels) * pooled).sum(dim=1)
        return out


# -- losses and helpers ---------------------------------------------------------------------


def grad_norm(module: nn.Module) -> Tensor:
    """The global L2 norm of a module's gradients, as a tensor (no host sync)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def r1_penalty(d_real: Tensor, real: Tensor, scale: float = 1.0) -> Tensor:
    """R1 (Mescheder et al. 2018): mean squared gradient norm of D on real images.

    ``scale``: the loss scale of fp16 training (``StepContext.grad_scale``). The inner
    gradient is taken of the scaled output and unscaled after, so small fp16 values do not
    underflow to zero; an overflow shows up as inf and the scaler skips that step."""
    (grad,) = torch.autograd.grad(d_real.sum() * scale, real, create_graph=True)
    return (grad.float() / scale).pow(2).flatten(1).sum(1).mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    eps: Tensor,
    scale: float = 1.0,
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean of (|grad critic(x_hat)| - 1)^2 on the points
    ``x_hat = eps * real + (1 - eps) * fake``, with ``eps`` in [0, 1] per image (B x 1 x 1 x 1).
    Differentiable, so the critic's update can include it. ``scale``: as in
    :func:`r1_penalty`."""
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum() * scale, x_hat, create_graph=True)
    norm = torch.linalg.vector_norm(grad.float().flatten(1) / scale, dim=1)
    return (norm - 1).pow(2).mean()


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Gradients still flow through ``module`` but not into its weights (the G step's D)."""
    flags = [p.requires_grad for p in module.parameters()]
    try:
        for p in module.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


# -- the base model -------------------------------------------------------------------------


@dataclass
class GANConfig(ModelConfig):
    """Settings every GAN here shares; the field names are used by the CLI and the GUI."""

    latent_dim: int = setting(100, label="Latent size", minimum=2, maximum=512, main=True)
    width: int = network_width(64, help="channels of the widest-but-one layer")
    lr_g: float = learning_rate(2e-4, label="Generator learning rate")
    lr_d: float = learning_rate(2e-4, label="Discriminator learning rate")
    beta1: float = setting(0.5, label="Adam beta1", minimum=0.0, maximum=0.999)
    beta2: float = setting(0.999, label="Adam beta2", minimum=0.0, maximum=0.9999)
    spectral_norm: bool = setting(False, label="Spectral norm in D", help="steadier training")
    # Differentiable augmentation of what the discriminator sees (studio.models.gan.augment).
    augment: str = setting(
        "auto",
        label="Augmentation",
        help=f"colour, shift and cutout of every image D sees; auto = adaptive below "
        f"{AUTO_LIMIT:,} images, else off",
        choices=MODES,
    )
    augment_p: float = setting(
        1.0,
        label="Augmentation probability",
        help="fixed mode: how often each change is applied",
        minimum=0.0,
        maximum=1.0,
    )
    ada_target: float = setting(
        0.6,
        label="Adaptive target",
        help="adaptive mode: p rises while E[sign D(real)] is above this",
        minimum=0.0,
        maximum=1.0,
    )
    ada_kimg: int = setting(
        100,
        label="Adaptive speed",
        help="adaptive mode: thousands of images for p to go from 0 to 1",
        minimum=1,
        maximum=10000,
    )


def optional_classes() -> bool:
    """The ``conditional`` setting of an :class:`OptionalClassesConfig` (declared last by each
    family, so the form keeps its order)."""
    return setting(
        False,
        label="Use the folder's classes",
        help="class-conditional when the folder has one subfolder per class",
    )


@dataclass
class OptionalClassesConfig(GANConfig):
    """A GAN whose class conditioning is a setting (``conditional = optional_classes()``):
    off, it ignores the folder's classes."""

    def __post_init__(self) -> None:
        if not getattr(self, "conditional", True):
            self.num_classes = 0  # no class picker for a model that ignores classes


class GANModel(LatentInpainting, GenerativeModel):
    """A generator and a discriminator, an Adam optimizer each, one-shot sampling from z.

    Subclasses write ``train_step``; they pick the discriminator's normalisation with
    ``_d_norm`` and turn on class conditioning by returning a class count from
    ``_num_classes`` (labels then flow through ``_labels`` and ``_sample_labels``).
    """

    Config = GANConfig
    config: GANConfig
    scores = (
        PROJECTION,
    )  # no encoder: the latent is found by optimisation (studio.models.scoring)

    def __init__(self, config: GANConfig) -> None:
        super().__init__(config)
        # Progressive growing, for families that declare the setting (None: off). A model
        # built to sample (not trained here) has no stage: its networks are the full ones.
        self.growth = growth_schedule(config)
        self.stage: Stage | None = None
        self._grow_step = 0
        self.generator, self.discriminator = self._build_networks()
        self._init_weights()
        self._data_images: int | None = None  # the training folder's size, once told
        self.augment_pipe = self._make_augment_pipe()

    def _build_networks(self) -> tuple[nn.Module, nn.Module]:
        c, classes, grow = self.config, self._num_classes(), self.growth is not None
        generator = Generator(c.latent_dim, c.width, c.resolution, c.channels, classes, grow)
        discriminator = Discriminator(
            c.width,
            c.resolution,
            c.channels,
            classes,
            norm=self._d_norm(),
            spectral=c.spectral_norm,
            grow=grow,
        )
        return generator, discriminator

    # -- progressive growing (studio.models.gan.growing) --------------------------------------
    def grow_to(self, step: int) -> Stage | None:
        """Put every growing network at ``step``'s stage (nothing without growing)."""
        if self.growth is None:
            return None
        self.stage, self._grow_step = self.growth.stage(step), int(step)
        set_stage(self, self.stage)
        return self.stage

    def reals(self, images: Tensor, step: int) -> Tensor:
        """This step's real images as the networks see them: with progressive growing, at
        the step's stage (which this sets), else as they are."""
        return reals_at(images, self.grow_to(step), self._upsample_mode())

    def growth_metrics(self) -> dict[str, Tensor]:
        """The plotted stage (``resolution``, ``alpha``) while growing; none otherwise."""
        if self.stage is None:
            return {}
        return as_tensor_metrics(self.stage, self.device)

    def full_size(self, images: Tensor) -> Tensor:
        """A stage's images enlarged to the run's size (samples and grids during growth)."""
        return upscale(images, self.config.resolution, self._upsample_mode())

    def _upsample_mode(self) -> str:
        for m in self.generator.modules():
            if isinstance(m, GrowingGenerator):
                return m.upsample
        return "nearest"

    def training_phase(self) -> str:
        return "" if self.stage is None or self.growth is None else self.growth.describe(self.stage)

    def memory_probe_step(self) -> int:
        return 0 if self.growth is None else self.growth.end_step

    # -- augmentation of what D sees (studio.models.gan.augment) ------------------------------
    def _make_augment_pipe(self) -> AugmentPipe:
        c = self.config
        mode = resolve_mode(c.augment, self._data_images)
        return AugmentPipe(mode, c.augment_p, c.ada_target, c.ada_kimg)

    def prepare_for_data(self, images: int) -> None:
        self._data_images = int(images)
        self.augment_pipe = self._make_augment_pipe()
        self.grow_to(0)  # training starts small (a resumed run's state moves it on)

    def training_notes(self) -> list[str]:
        return self._augment_notes() + self._growth_notes()

    def _growth_notes(self) -> list[str]:
        g = self.growth
        if g is None:
            return []
        if not g.doublings:
            return [f"Progressive growing: nothing to grow at {g.resolution} px."]
        return [
            f"Progressive growing: from {g.start} px to {g.resolution} px, {g.phase_steps:,} "
            f"steps per phase (a fade, then a stable stage, per doubling); the full networks "
            f"train from step {g.end_step:,}. The stage is plotted as resolution and alpha."
        ]

    def _augment_notes(self) -> list[str]:
        c, pipe, n = self.config, self.augment_pipe, self._data_images
        why = ""
        if c.augment == "auto" and n is not None:
            fewer = "fewer than" if n < AUTO_LIMIT else "at least"
            why = f" (auto: the folder has {n:,} images, {fewer} {AUTO_LIMIT:,})"
        if pipe.mode == "adaptive":
            return [
                f"Augmentation: adaptive{why}. The discriminator sees every image, real and "
                "generated, through colour, shift and cutout changes with a probability p "
                f"that rises while it overfits (target {c.ada_target:g}); p is plotted as "
                "augment_p."
            ]
        if pipe.mode == "fixed":
            return [
                f"Augmentation: fixed, each change with probability {c.augment_p:g}: colour, "
                "shift and cutout of every image the discriminator sees."
            ]
        return [f"Augmentation: off{why}."] if why else []

    def see(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """``x`` as the discriminator sees it: augmented when augmentation is on."""
        return self.augment_pipe(x, generator)

    def observe_real(self, d_real: Tensor, d_fake: Tensor, step: int) -> dict[str, Tensor]:
        """Feed the discriminator's verdicts on this step's reals to the adaptive
        augmentation (for a critic: whether each real scores above the fakes' mean) and
        return the plotted augmentation values."""
        d_real, d_fake = d_real.detach(), d_fake.detach()
        centre = 0.0 if self.d_real_is_probability else d_fake.float().mean()
        self.augment_pipe.observe(torch.sign(d_real.float() - centre), step)
        return self.augment_pipe.metrics()

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.augment_pipe.enabled:
            state["augment"] = self.augment_pipe.state()
        if self.growth is not None:
            state["grow_step"] = self._grow_step  # the stage samples show until the next step
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "augment" in state:
            self.augment_pipe.load_state(state["augment"])
        if "grow_step" in state:
            self.grow_to(int(state["grow_step"]))

    def _init_weights(self) -> None:
        init_dcgan_weights(self)

    def _num_classes(self) -> int:
        return 0  # unconditional; the conditional GAN overrides this

    # The logged points a diagnosis looks at, and what "the discriminator has won" means for
    # a discriminator whose d_real is a probability (the logistic-loss GANs).
    diagnose_points: ClassVar[int] = 5
    won_loss_d: ClassVar[float] = 0.1
    won_d_real: ClassVar[float] = 0.9
    d_real_is_probability: ClassVar[bool] = True

    @classmethod
    def diagnose(cls, history: Sequence[Mapping[str, float]]) -> list[str]:
        """A discriminator that has won: loss_d near 0 and D(real) near 1 over the last
        ``diagnose_points`` logged points, so the generator learns next to nothing."""
        recent = [p for p in history if "loss_d" in p and "d_real" in p][-cls.diagnose_points :]
        if not cls.d_real_is_probability or len(recent) < cls.diagnose_points:
            return []
        if all(p["loss_d"] < cls.won_loss_d and p["d_real"] > cls.won_d_real for p in recent):
            return [
                f"The discriminator has won: loss_d has stayed near 0 and D(real) near 1 for "
                f"the last {len(recent)} logged points, so the generator gets almost no signal. "
                "Lower the discriminator learning rate (a half or a quarter of the generator's), "
                "turn on spectral norm in D or an R1 penalty, set Augmentation to adaptive "
                "(or fixed) and keep flip augmentation on, or train a WGAN-GP, whose critic "
                "does not saturate."
            ]
        return []

    def _d_norm(self) -> str:
        return "none" if self.config.spectral_norm else "batch"

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        self.optimizers = {
            "g": torch.optim.Adam(self.generator.parameters(), lr=c.lr_g, betas=betas),
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_d, betas=betas),
        }
        return self.optimizers

    def _labels(self, batch: Batch) -> Tensor | None:
        if not self._num_classes():
            return None
        if batch.labels is None:
            raise ValueError(
                f"{self.info.display_name} needs class labels: put the images in one subfolder per class"
            )
        return batch.labels

    # -- sampling ------------------------------------------------------------------------
    def latent(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` latent vectors, drawn on the CPU with ``generator`` (same seed, same z)."""
        return torch.randn(n, self.config.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images for latent vectors ``z``; a conditional model cycles the classes when
        ``labels`` is None. Eval mode, so batch-norm statistics do not move."""
        z = z.to(self.device)
        if labels is None and self._num_classes():
            labels = class_labels(len(z), self._num_classes(), None, self.device)
        if labels is not None:
            labels = labels.to(self.device)
        with eval_mode(self.generator):
            return self.full_size(self.generator(z, labels).float())

    # -- the latent protocol (studio.models.capabilities.LatentFamily) ---------------------------
    def latent_spec(self) -> LatentSpec:
        return LatentSpec(
            (self.config.latent_dim,),
            encoder="",  # none: the explorer projects by optimisation
            analysed=2000,  # only the first block runs per latent
            regress=True,
            directions="GANSpace: PCA of the generator's first-layer activations for {n} "
            "prior samples, mapped back to z by linear regression",
        )

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator) * temperature

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return self.full_size(self.generator(z, labels).float())

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        raise NotImplementedError("a GAN has no encoder")

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        return z, pooled(self.generator.first_block(z, labels))

    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Gen[SampleStep, None, Tensor]:
        self.check_conditions(conditions)
        labels = self._sample_labels(n, conditions)  # checked before any noise is drawn
        images = self.decode(self.latent(n, generator), labels)
        yield SampleStep(1, 1, images)
        return images

    def _sample_labels(self, n: int, conditions: dict[str, Any]) -> Tensor | None:
        if not self._num_classes():
            return None
        return class_labels(n, self._num_classes(), conditions.get("label"), self.device)
