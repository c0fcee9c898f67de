"""A Bernoulli restricted Boltzmann machine (Smolensky 1986; Hinton 2002) on binarised grey
images.

Binary visible units v (one per pixel) and binary hidden units h share the energy
``E(v, h) = -b.v - c.h - v.W.h``; summing h out gives the free energy
``F(v) = -b.v - sum_j softplus(c_j + (v W)_j)`` and p(v) = exp(-F(v)) / Z. Both conditionals
factorise (p(h | v) and p(v | h) are independent sigmoids), so a Gibbs chain alternates two
matrix products. Z sums over every binary image and is intractable: the model reports no
likelihood, only a reconstruction error and a pseudo-likelihood.

Training follows the log-likelihood gradient with the model's expectation replaced by a short
chain: CD-k starts k Gibbs steps at the data each update, persistent CD keeps its chains from
one update to the next (they restart from the data after a resume; they are not saved).
The update is the gradient of ``mean F(data) - mean F(chain end)``, taken as Hinton's "practical
guide to training RBMs" (2010) advises: SGD at 0.01 with momentum 0.5, then 0.9; small random
weights (0.01); visible biases started at the data's log-odds; a little L2 weight decay.

Colour images are turned grey (luminance), shrunk to ``max_side`` when larger, and thresholded.
Samples are the chain's last p(v | h), grey levels, scaled back up to the run's resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.core.jobs import Progress
from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    GenerativeModel,
    ModelConfig,
    SampleStep,
    StepContext,
    setting,
)
from studio.models.capabilities import (
    RECONSTRUCTION,
    AnomalyScore,
    InpaintSettings,
    Preview,
    SamplingOption,
    ScoreBatch,
)
from studio.models.configs import learning_rate

GIBBS_STEPS = SamplingOption(
    "steps",
    "int",
    1000,
    "Gibbs steps",
    "how long the chain runs from random pixels; more steps wander further from the start",
    minimum=1,
    maximum=100000,
)
PREVIEWS = 50  # about this many chain states shown while sampling
INPAINT_STEPS = {"fast": 200, "quality": 1000}  # Gibbs steps per inpainting preset
CLAMPED = "clamped"
MAX_FILTERS = 64
# Momentum as Hinton's practical guide (section 9) has it: 0.5 while the reconstruction error
# falls fast at the start, then 0.9.
MOMENTUM_START, MOMENTUM, MOMENTUM_STEPS = 0.5, 0.9, 50
LUMA = (0.299, 0.587, 0.114)
FREE_ENERGY = AnomalyScore(
    "free_energy",
    "Free energy",
    "the RBM's energy of the binarised image: higher is less likely (p(v) is proportional to "
    "exp(-F(v)))",
    "nats per pixel, up to a constant",
)

Uniform = Callable[[int, int], Tensor]  # (rows, cols) -> uniform numbers on the model's device


@dataclass
class RBMConfig(ModelConfig):
    hidden: int = setting(
        256,
        label="Hidden units",
        help="binary feature detectors; each learns one filter",
        minimum=4,
        maximum=4096,
        main=True,
    )
    training: str = setting(
        "cd",
        label="Training",
        help="cd: chains start at the data every update (CD-k); pcd: persistent chains",
        choices=("cd", "pcd"),
        main=True,
    )
    cd_steps: int = setting(
        1,
        label="Gibbs steps per update (k)",
        help="steps of each update's chain",
        minimum=1,
        maximum=100,
        main=True,
    )
    max_side: int = setting(
        32,
        label="RBM image size",
        help="larger images are shrunk to this (area average) before binarising; "
        "samples are scaled back up",
        minimum=4,
        maximum=64,
    )
    threshold: float = setting(
        0.5,
        label="Binarise threshold",
        help="grey level (0 black, 1 white) above which a pixel is on",
        minimum=0.0,
        maximum=1.0,
    )
    lr: float = learning_rate(1e-2)
    weight_decay: float = setting(
        1e-4, label="Weight decay", help="L2 penalty on the weights", minimum=0.0, maximum=0.1
    )


def bernoulli(p: Tensor, u: Tensor) -> Tensor:
    return (u < p).to(p.dtype)


class RBM(GenerativeModel):
    info = FamilyInfo(
        key="ebm.rbm",
        kind="ebm",
        display_name="Bernoulli RBM",
        summary="Energy-based: a restricted Boltzmann machine, binary pixels and binary hidden "
        "features; samples come from a "
        "Gibbs chain that alternates the two, shown live as it mixes. Good for seeing what "
        "an energy model learns on small black-and-white images (its filters are saved as "
        "samples/filters.png whenever it samples, and shown in the run's Filters tab); it reports no likelihood, because its "
        "partition function is intractable.",
        capabilities=Capability.TRAIN | Capability.SAMPLE | Capability.INPAINT,
        loss_names=("recon", "pseudo_ll", "free_energy_gap", "grad_norm"),
        kind_title="Energy-based models",
    )
    Config = RBMConfig
    config: RBMConfig
    conditions = ("steps",)
    sampling_options = (GIBBS_STEPS,)
    latent_note = (
        "An RBM's hidden units are binary and found by sampling, not a continuous code to "
        "move along; its samples come from a Gibbs chain."
    )
    supports_accumulation = True
    scores = (FREE_ENERGY, RECONSTRUCTION)
    inpaint_methods = (CLAMPED,)
    inpaint_method_labels = {CLAMPED: "Gibbs with the known pixels clamped"}

    def __init__(self, config: RBMConfig) -> None:
        super().__init__(config)
        c = config
        self.side = min(c.resolution, c.max_side)
        visible = self.side * self.side
        self.weight = nn.Parameter(torch.randn(visible, c.hidden) * 0.01)
        self.visible_bias = nn.Parameter(torch.zeros(visible))
        self.hidden_bias = nn.Parameter(torch.zeros(c.hidden))
        self._chains: Tensor | None = None  # persistent CD's chains

    # -- the energy -------------------------------------------------------------------------
    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) per row of binary (or mean-field) visibles v (B x V)."""
        return -v @ self.visible_bias - F.softplus(v @ self.weight + self.hidden_bias).sum(1)

    def p_hidden(self, v: Tensor) -> Tensor:
        return torch.sigmoid(v @ self.weight + self.hidden_bias)

    def p_visible(self, h: Tensor) -> Tensor:
        return torch.sigmoid(h @ self.weight.t() + self.visible_bias)

    def gibbs(self, v: Tensor, steps: int, uniform: Uniform) -> tuple[Tensor, Tensor]:
        """``steps`` rounds of v -> h -> v; returns (the last binary v, its p(v | h))."""
        p_v = v
        for _ in range(steps):
            h = bernoulli(self.p_hidden(v), uniform(len(v), self.config.hidden))
            p_v = self.p_visible(h)
            v = bernoulli(p_v, uniform(len(v), v.shape[1]))
        return v, p_v

    # -- images <-> visible units -----------------------------------------------------------
    def binarise(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] -> B x V binary visibles (grey, shrunk to the RBM's size)."""
        x = (images.float() + 1) / 2
        if x.shape[1] == 3:
            x = sum(w * x[:, i : i + 1] for i, w in enumerate(LUMA))
        else:
            x = x[:, :1]
        if x.shape[-1] != self.side:
            x = F.interpolate(x, size=(self.side, self.side), mode="area")
        return (x > self.config.threshold).to(self.weight.dtype).flatten(1)

    def to_images(self, v: Tensor) -> Tensor:
        """B x V visibles (probabilities or bits) -> images at the run's size and channels."""
        c = self.config
        x = v.view(-1, 1, self.side, self.side) * 2 - 1
        if self.side != c.resolution:
            x = F.interpolate(x, size=(c.resolution, c.resolution), mode="nearest")
        return x.expand(-1, c.channels, -1, -1).contiguous()

    def extra_images(self) -> dict[str, Tensor]:
        """The learned filters (each hidden unit's weights as an image, contrast stretched),
        saved as ``samples/filters.png`` by the trainer."""
        w = self.weight.detach().t()[:MAX_FILTERS].float()
        low, high = w.min(dim=1, keepdim=True).values, w.max(dim=1, keepdim=True).values
        w = (w - low) / (high - low).clamp(min=1e-8) * 2 - 1
        return {"filters": w.view(-1, 1, self.side, self.side)}

    # -- training ---------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        # Plain SGD with momentum, as the practical guide: with Adam at 1e-3 the weights
        # (started at 0.01) stayed small for hundreds of steps, and every Gibbs chain from
        # noise fell into the same blob.
        sgd = torch.optim.SGD(self.parameters(), lr=self.config.lr, momentum=MOMENTUM_START)
        self.optimizers = {"rbm": sgd}
        return self.optimizers

    def _set_momentum(self, step: int) -> None:
        for group in self.optimizers["rbm"].param_groups:
            group["momentum"] = MOMENTUM_START if step < MOMENTUM_STEPS else MOMENTUM
            # a run resumed from before SGD has Adam's settings here (its state is unused)
            group.setdefault("dampening", 0.0)
            group.setdefault("nesterov", False)

    @torch.no_grad()
    def _init_visible_bias(self, data: Tensor) -> None:
        """Visible biases at log(p / (1 - p)), p each pixel's share of "on" in the first batch
        (Hinton's practical guide, section 8): otherwise the first updates spend the hidden
        units on learning how often each pixel is on. Laplace-smoothed, so an always-off
        pixel of a small batch gets a large negative bias, not minus infinity."""
        p = (data.sum(0) + 1) / (len(data) + 2)
        self.visible_bias.copy_(torch.log(p) - torch.log1p(-p))

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        data = self.binarise(batch.images)
        if ctx.step == 0 and ctx.micro == 0:
            self._init_visible_bias(data)

        def uniform(rows: int, cols: int) -> Tensor:
            return ctx.rand(rows, cols, device=data.device)

        with torch.no_grad():
            start = data
            if c.training == "pcd":
                if self._chains is None or self._chains.shape != data.shape:
                    self._chains = data.clone()
                start = self._chains
            chain, _ = self.gibbs(start, c.cd_steps, uniform)
            if c.training == "pcd":
                self._chains = chain
        gap = self.free_energy(data).mean() - self.free_energy(chain).mean()
        loss = gap + 0.5 * c.weight_decay * self.weight.pow(2).sum()
        self._set_momentum(ctx.step)
        norm = self.optimizer_step("rbm", loss, ctx)
        with torch.no_grad():
            out = {
                "recon": (data - self.p_visible(self.p_hidden(data))).pow(2).mean(),
                "pseudo_ll": self.pseudo_likelihood(data, uniform(len(data), 1)).mean(),
                "free_energy_gap": gap.detach(),
            }
        if norm is not None:
            out["grad_norm"] = norm
        return out

    # -- anomaly scores (studio.models.capabilities.ScoreFamily) -----------------------------
    @torch.no_grad()
    def anomaly_scores(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ScoreBatch:
        """The free energy per pixel of the binarised image (p(v) is proportional to
        exp(-F(v)), so a higher F is a less likely image, up to the unknown partition function
        that is the same for every image) and the mean-field reconstruction error (v -> p(h|v)
        -> p(v|h)), with its per-pixel map. Deterministic: no sampling."""
        v = self.binarise(images.to(self.weight.device))
        energy = self.free_energy(v) / v.shape[1]
        recon = self.p_visible(self.p_hidden(v))
        error = (recon - v).square().view(-1, 1, self.side, self.side)
        c = self.config
        if self.side != c.resolution:
            error = F.interpolate(error, size=(c.resolution, c.resolution), mode="nearest")
        return ScoreBatch(
            {
                FREE_ENERGY.name: energy.float().cpu(),
                RECONSTRUCTION.name: error.flatten(1).mean(1).float().cpu(),
            },
            error_map=None,  # the map belongs to the first score, which has none
            reconstruction=self.to_images(recon).float().cpu(),
        )

    def pseudo_likelihood(self, v: Tensor, u: Tensor) -> Tensor:
        """log p(v_i | every other pixel) for one pixel i per image, picked by ``u`` in [0, 1)
        (B x 1): an unbiased estimate of the mean per-pixel log pseudo-likelihood, in nats
        (0 is perfect, -0.69 a coin flip)."""
        i = (u[:, 0] * v.shape[1]).long().clamp(max=v.shape[1] - 1)
        flipped = v.clone()
        rows = torch.arange(len(v), device=v.device)
        flipped[rows, i] = 1 - flipped[rows, i]
        return F.logsigmoid(self.free_energy(flipped) - self.free_energy(v))

    # -- sampling ---------------------------------------------------------------------------
    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Generator[SampleStep, None, Tensor]:
        """A Gibbs chain from coin-flip pixels; yields its state (p(v | h), grey) about
        every fiftieth step."""
        self.check_conditions(conditions)
        steps = int(conditions.get("steps") or GIBBS_STEPS.default)
        if not GIBBS_STEPS.minimum <= steps <= GIBBS_STEPS.maximum:
            raise ValueError(f"steps must be between 1 and {GIBBS_STEPS.maximum:g}")
        device = self.device

        def uniform(rows: int, cols: int) -> Tensor:  # on the CPU: same seed, same chain
            return torch.rand(rows, cols, generator=generator).to(device)

        every = max(1, steps // PREVIEWS)
        v = bernoulli(torch.full((n, self.side**2), 0.5, device=device), uniform(n, self.side**2))
        p_v = v
        for i in range(0, steps, every):
            with torch.no_grad():  # not held across the yield: the caller's mode is its own
                v, p_v = self.gibbs(v, min(every, steps - i), uniform)
            yield SampleStep(min(i + every, steps), steps, self.to_images(p_v))
        return self.to_images(p_v)

    # -- inpainting (studio.models.capabilities.InpaintFamily) ------------------------------
    @classmethod
    def inpaint_presets(cls, method: str = "") -> dict[str, str]:
        return {
            name: f"A Gibbs chain of {steps} steps with the known pixels held fixed."
            for name, steps in INPAINT_STEPS.items()
        }

    def _inpaint_steps(self, settings: InpaintSettings) -> int:
        if settings.preset not in INPAINT_STEPS:
            raise ValueError(f"preset must be one of {', '.join(INPAINT_STEPS)}")
        return int(settings.steps or INPAINT_STEPS[settings.preset])

    def inpaint_describe(self, settings: InpaintSettings) -> str:
        return (
            f"Gibbs sampling, {self._inpaint_steps(settings)} steps: the known pixels "
            "(binarised grey) are clamped and only the hole's pixels are resampled, so the "
            "fill is drawn from the model given everything around it; it comes out grey."
        )

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
        steps, device = self._inpaint_steps(settings), self.device
        x0 = x0.to(device).float()
        known = self.binarise(x0).expand(n, -1)
        small = F.interpolate(hole.to(device).float(), size=(self.side, self.side), mode="area")
        free = (small > 0).flatten(1).expand(n, -1)  # any part of a hole pixel: resample it

        def uniform(rows: int, cols: int) -> Tensor:
            return torch.rand(rows, cols, generator=generator).to(device)

        v = torch.where(
            free, bernoulli(torch.full_like(known, 0.5), uniform(n, known.shape[1])), known
        )
        p_v = v
        every = max(1, steps // PREVIEWS)
        for i in range(0, steps, every):
            with torch.no_grad():
                for _ in range(min(every, steps - i)):
                    h = bernoulli(self.p_hidden(v), uniform(n, self.config.hidden))
                    p_v = self.p_visible(h)
                    v = torch.where(free, bernoulli(p_v, uniform(n, v.shape[1])), known)
            done = min(i + every, steps)
            image = preview(self._fill(x0, hole, p_v)) if preview is not None else None
            yield Progress(
                "inpaint", done, steps, message="Gibbs, known pixels clamped", image=image
            )
        return self._fill(x0, hole, p_v)

    def _fill(self, x0: Tensor, hole: Tensor, p_v: Tensor) -> Tensor:
        return torch.where(hole.to(x0.device) > 0.5, self.to_images(p_v), x0)
