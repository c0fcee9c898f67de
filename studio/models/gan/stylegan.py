"""A compact StyleGAN2 (Karras et al. 2020) for 32 to 128 px, with ADA-style augmentation.

Generator. A mapping MLP turns z into a style vector w. Synthesis starts from a learned 4x4
constant; every layer is a 3x3 convolution *modulated* by an affine map of its own w (each
input channel scaled by a style) and *demodulated* (each output channel rescaled so unit-
variance inputs give unit-variance outputs), then per-pixel noise times a learned strength,
a bias and a leaky ReLU. Each resolution adds its own RGB (a 1x1 modulated convolution) to the
upsampled RGB of the coarser ones ("skip" outputs). Weights use the equalised learning rate
(stored N(0, 1), scaled by He's constant at run time); the mapping learns at 1/100 the rate.

Styles per layer. The synthesis takes one w per layer (``num_ws``: two per resolution, the
4x4 layer, and the last RGB), so styles can be mixed: training feeds two latents, switching at
a random layer, to ``style_mixing`` of the images (the layers then cannot assume their
neighbours share a style), and ``mixed`` draws coarse layers from one latent, fine from
another. Class-conditional models add a learned class vector to w, so the latent (``u``, the
mapping's output) is class-free and the Explore workspace and inpainting work in it (Explore
in w+, one u per style layer: ``decode_layers``, grouped coarse, middle and fine).

Discriminator. Residual blocks (two 3x3 convs and a 1x1 skip, averaged down), a minibatch
standard deviation feature at 4x4 (the spread across images: collapse shows), a projection
term for classes. Loss: non-saturating logistic; R1 on reals, lazily (every ``r1_every``
steps, weighted by that many). Everything D sees goes through the GAN's augmentation
(studio.models.gan.augment: adaptive by default on small folders).

Sampling uses an exponential moving average of the generator (half-life ``ema_kimg``
thousand images, ramped up over the first images), saved beside the trained weights, and the
noise inputs fixed at their stored draws, so a latent always decodes to the same image. The
truncation trick pulls u toward its running average ``w_avg``: psi 0 gives the mean image.
"""

from __future__ import annotations

import copy
from collections.abc import Generator as Gen
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    SampleStep,
    StepContext,
    class_labels,
    eval_mode,
    setting,
)
from studio.models.capabilities import TRUNCATION, LatentSpec, LayerGroup
from studio.models.configs import override
from studio.models.gan.common import (
    GANConfig,
    GANModel,
    OptionalClassesConfig,
    frozen,
    optional_classes,
    r1_penalty,
)
from studio.models.gan.growing import grow_steps_setting, progressive_setting
from studio.models.gan.style_networks import (
    W_AVG_BETA,
    StyleDiscriminator,
    StyleGenerator,
    layer_groups,
    mix_styles,
)
from studio.models.latent_inpaint import LatentView

ABOUT = (
    "A style-based generator (StyleGAN2, Karras et al. 2020). A mapping network turns the "
    "random z into a style vector w; the image grows from a learned 4x4 constant through "
    "convolutions whose channels each layer's copy of the style scales (modulation, then "
    "demodulation to keep the signal's scale), with per-pixel noise of learned strength for "
    "fine texture and an RGB output added at every resolution. Training mixes two styles in "
    "most images (switching at a random layer), so early layers learn the coarse layout and "
    "late ones the colour and texture. The discriminator is residual, sees the spread "
    "across the batch (minibatch standard deviation, against collapse) and is held by a "
    "lazy R1 penalty; the loss is the non-saturating one. Samples come from an average of "
    "the generator's weights over training (EMA, saved with the model), steadier than the "
    "last step's. What it is for: the design behind the field's best GAN results, at 32 "
    "to 128 px, given a few thousand steps (a GPU helps), with adaptive augmentation (on by "
    "default under 5,000 images) for a folder of a few hundred; its quality here against "
    "DCGAN is not measured yet. Sampling: *Truncation* "
    "pulls every style toward the average one: below 1 gives tamer, more typical images, 0 "
    "the average image. Explore works in w+ (one w per layer): directions are the principal "
    "components of w, moved at every layer or only the coarse, middle or fine ones; kept "
    "samples mix (coarse styles of one, fine of another); projecting your image optimises "
    "w or w+. *Use the folder's classes* makes it draw the "
    "class you pick (a learned class vector is added to w). Slower per step than DCGAN; on "
    "a CPU keep 32 px and a width of 16 to 32."
)
# -- the family ----------------------------------------------------------------------------------


@dataclass
class StyleGANConfig(OptionalClassesConfig):
    latent_dim: int = override(GANConfig, "latent_dim", 128)
    width: int = override(
        GANConfig, "width", 32, help="channels at full resolution; coarser maps up to 4x"
    )
    # The paper's optimiser: Adam, lr 2e-3, betas (0, 0.99), with equalised learning rates.
    lr_g: float = override(GANConfig, "lr_g", 2e-3)
    lr_d: float = override(GANConfig, "lr_d", 2e-3)
    beta1: float = override(GANConfig, "beta1", 0.0)
    beta2: float = override(GANConfig, "beta2", 0.99)
    w_dim: int = setting(
        128, label="Style size", help="size of w, the mapping's output", minimum=8, maximum=512
    )
    mapping_layers: int = setting(
        4,
        label="Mapping depth",
        help="layers of the MLP from z to w (8 in the paper)",
        minimum=1,
        maximum=8,
        main=True,
    )
    r1_gamma: float = setting(
        1.0,
        label="R1 penalty",
        help="gamma: holds D's slope on real images near 0; higher is steadier but softer",
        minimum=0.0,
        maximum=100.0,
    )
    r1_every: int = setting(
        16,
        label="R1 every N steps",
        help="lazy regularisation: the penalty, weighted N times, on one step in N",
        minimum=1,
        maximum=64,
    )
    style_mixing: float = setting(
        0.9,
        label="Style mixing",
        help="share of training images drawn from two latents switched at a random layer",
        minimum=0.0,
        maximum=1.0,
    )
    ema_kimg: float = setting(
        10.0,
        label="EMA half-life",
        help="thousands of images; samples come from this average of the generator; 0 = off",
        minimum=0.0,
        maximum=1000.0,
    )
    progressive: bool = progressive_setting()
    grow_steps: int = grow_steps_setting()
    conditional: bool = optional_classes()


class _StyleView(LatentView):
    """Inpainting in u: the prior energy is that of a Gaussian fitted to u's spread (u is not
    N(0, I) like z)."""

    def __init__(self, model: StyleGAN, labels: Tensor | None) -> None:
        super().__init__(model, labels)
        with torch.no_grad():
            u = model.prior_latents(512, torch.Generator().manual_seed(0), 1.0).to(model.device)
        self.mean, self.std = u.mean(0), u.std(0).clamp(min=1e-3)

    def energy(self, z: Tensor) -> Tensor:
        return 0.5 * ((z - self.mean) / self.std).flatten(1).square().sum(1)


class StyleGAN(GANModel):
    info = FamilyInfo(
        key="gan.stylegan",
        kind="gan",
        display_name="StyleGAN2",
        summary="Style-based GAN: style mixing, truncation and averaged weights for "
        "sampling; slower per step than DCGAN.",
        about=ABOUT,
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.LATENT
        | Capability.INPAINT
        | Capability.CONDITIONAL,
        loss_names=(
            "loss_d",
            "loss_g",
            "r1",
            "d_real",
            "d_fake",
            "grad_norm_d",
            "grad_norm_g",
            "augment_p",
            "ada_rt",
        ),
    )
    Config = StyleGANConfig
    config: StyleGANConfig
    conditions: ClassVar[tuple[str, ...]] = ("label", "truncation")
    sampling_options = (TRUNCATION,)

    def __init__(self, config: StyleGANConfig) -> None:
        super().__init__(config)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
        self._images_seen = 0  # for the EMA's ramp-up

    def _build_networks(self) -> tuple[nn.Module, nn.Module]:
        c, classes = self.config, self._num_classes()
        generator = StyleGenerator(
            c.latent_dim, c.w_dim, c.mapping_layers, c.width, c.resolution, c.channels, classes
        )
        discriminator = StyleDiscriminator(
            c.width, c.resolution, c.channels, classes, c.spectral_norm, self.growth is not None
        )
        return generator, discriminator

    def _init_weights(self) -> None:
        pass  # the equalised layers are initialised N(0, 1) where they are built

    def _num_classes(self) -> int:
        return self.config.num_classes

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    # -- training ------------------------------------------------------------------------
    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        real, labels = self.reals(batch.images, ctx.step), self._labels(batch)
        n, gen = real.shape[0], ctx.generator
        z, z2 = ctx.randn(n, c.latent_dim), ctx.randn(n, c.latent_dim)
        mixing = ctx.rand(2, n)  # whether, and where, each image switches latents

        use_r1 = c.r1_gamma > 0 and ctx.step % c.r1_every == 0
        if use_r1:
            real = real.detach().requires_grad_(True)
        with ctx.autocast():
            fake = self._train_images(z, z2, mixing, labels, gen)
            d_real = self.discriminator(self.see(real, gen), labels).float()
            d_fake = self.discriminator(self.see(fake.detach(), gen), labels).float()
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        out: dict[str, Tensor] = {}
        if use_r1:
            penalty = r1_penalty(d_real, real, ctx.grad_scale("d"))
            loss_d = loss_d + 0.5 * c.r1_gamma * c.r1_every * penalty
            out["r1"] = penalty.detach()
        gn_d = self.optimizer_step("d", loss_d, ctx)
        out.update(self.observe_real(d_real, d_fake, ctx.step))

        with frozen(self.discriminator):
            with ctx.autocast():
                d_gen = self.discriminator(self.see(fake, gen), labels).float()
            loss_g = F.softplus(-d_gen).mean()
            gn_g = self.optimizer_step("g", loss_g, ctx)
        self._update_ema(n)

        out.update(
            loss_d=loss_d.detach(),
            loss_g=loss_g.detach(),
            d_real=torch.sigmoid(d_real.detach()).mean(),
            d_fake=torch.sigmoid(d_fake.detach()).mean(),
            grad_norm_d=gn_d,
            grad_norm_g=gn_g,
            **self.growth_metrics(),
        )
        return out

    def _train_images(
        self,
        z: Tensor,
        z2: Tensor,
        mixing: Tensor,
        labels: Tensor | None,
        noise: torch.Generator,
    ) -> Tensor:
        """The training generator's images, with style mixing and random noise; updates the
        running mean of u."""
        g, c = self.generator, self.config
        u = g.mapping(z)
        with torch.no_grad():
            g.w_avg.lerp_(u.detach().float().mean(0), 1 - W_AVG_BETA)
        ws = g.ws(u, labels)
        if c.style_mixing > 0:
            ws2 = g.ws(g.mapping(z2), labels)
            layers = g.num_ws
            cut = 1 + (mixing[1] * (layers - 1)).floor().long().clamp(max=layers - 2)
            cut = torch.where(mixing[0] < c.style_mixing, cut, torch.full_like(cut, layers))
            ws = mix_styles(ws, ws2, cut.to(ws.device))
        return g.synthesis(ws, noise)

    @torch.no_grad()
    def _update_ema(self, batch: int) -> None:
        """ema <- beta * ema + (1 - beta) * weights, beta from the half-life in images (ramped
        up to 5% of the images seen so far, so early samples are not stuck at the init)."""
        self._images_seen += batch
        half_life = min(self.config.ema_kimg * 1000, 0.05 * self._images_seen)
        beta = 0.5 ** (batch / half_life) if half_life > 0 else 0.0
        ema, raw = self.generator_ema, self.generator
        torch._foreach_lerp_(list(ema.parameters()), list(raw.parameters()), 1.0 - beta)
        for a, b in zip(ema.buffers(), raw.buffers()):
            a.copy_(b)

    def memory_probe_step(self) -> int:
        step, every = super().memory_probe_step(), self.config.r1_every
        return -(-step // every) * every  # a step with the R1 penalty, at the full size

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "images_seen": self._images_seen}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self._images_seen = int(state.get("images_seen", 0))

    # -- sampling ------------------------------------------------------------------------
    def _psi(self, conditions: dict[str, Any]) -> float:
        psi = conditions.get("truncation")
        psi = 1.0 if psi is None else float(psi)
        if not TRUNCATION.minimum <= psi <= TRUNCATION.maximum:  # type: ignore[operator]
            raise ValueError(f"truncation must be between 0 and 1, got {psi:g}")
        return psi

    def _sample_labels(self, n: int, conditions: dict[str, Any]) -> Tensor | None:
        if not self._num_classes():
            if conditions.get("label") is not None:
                raise ValueError(
                    f"{self.info.display_name} was trained without classes: it takes no class"
                )
            return None
        return class_labels(n, self._num_classes(), conditions.get("label"), self.device)

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None, psi: float = 1.0) -> Tensor:
        """Images of the averaged generator for z (fixed noise), clamped to [-1, 1]."""
        z = z.to(self.device)
        if labels is None and self._num_classes():
            labels = class_labels(len(z), self._num_classes(), None, self.device)
        with eval_mode(self.generator_ema):
            return self.full_size(self.generator_ema(z, labels, psi).float().clamp(-1, 1))

    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Gen[SampleStep, None, Tensor]:
        self.check_conditions(conditions)
        psi = self._psi(conditions)
        labels = self._sample_labels(n, conditions)  # checked before any noise is drawn
        images = self.decode(self.latent(n, generator), labels, psi)
        yield SampleStep(1, 1, images)
        return images

    def mixed(
        self, first: Tensor, second: Tensor, crossover: int, labels: Tensor | None = None
    ) -> Tensor:
        """Images whose layers below ``crossover`` take their styles from latents ``first``
        and the rest from ``second`` (u latents, N x w_dim): 0 is ``second``'s image,
        ``num_ws`` is ``first``'s; a low crossover takes only the coarse layout from
        ``first``."""
        g = self.generator_ema
        ws = mix_styles(g.ws(first, labels), g.ws(second, labels), crossover)
        return self.full_size(g.synthesis(ws).float())

    @property
    def num_ws(self) -> int:
        """How many per-layer styles the synthesis takes (crossovers run 0 to this)."""
        return self.generator_ema.num_ws

    # -- the latent protocol: u, the class-free w -------------------------------------------
    def latent_spec(self) -> LatentSpec:
        return LatentSpec(
            (self.config.w_dim,),
            encoder="",  # none: the explorer projects by optimisation, in w
            analysed=2000,  # only the mapping runs per latent
            regress=False,
            directions="GANSpace in w: PCA of the mapping network's output for {n} prior samples",
            temperature_option=TRUNCATION,  # prior_latents' temperature is the truncation
            layers=self.num_ws,  # Explore edits w+, one u per style layer (decode_layers)
            layer_groups=tuple(LayerGroup(*g) for g in layer_groups(self.config.resolution)),
        )

    def decode_layers(self, ws: Tensor, labels: Tensor | None) -> Tensor:
        """Per-layer u (N x num_ws x w_dim) -> images: w+, differentiable."""
        g = self.generator_ema
        if labels is None and self._num_classes():
            labels = class_labels(len(ws), self._num_classes(), None, ws.device)
        if not self._num_classes():
            labels = None
        return self.full_size(g.synthesis(g.layered(ws, labels)).float())

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        """Mapped prior draws; ``temperature`` is the truncation psi (toward the mean w)."""
        z = torch.randn(n, self.config.latent_dim, generator=generator)
        g = self.generator_ema
        with torch.no_grad():
            return g.truncate(g.mapping(z.to(self.device)), float(temperature)).float().cpu()

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        g = self.generator_ema
        if labels is None and self._num_classes():
            labels = class_labels(len(z), self._num_classes(), None, z.device)
        if not self._num_classes():
            labels = None
        return self.full_size(g.synthesis(g.ws(z, labels)).float())

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        return z, z  # PCA of w itself (Härkönen et al. 2020 do so for StyleGAN)

    def inpaint_view(self, labels: Tensor | None) -> LatentView:
        return _StyleView(self, labels)
