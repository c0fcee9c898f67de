"""Gated PixelCNN (van den Oord et al. 2016) with the PixelCNN++ output (Salimans et al. 2017).

The image is read in raster order (row by row, left to right). Two stacks of masked
convolutions see only what came before each pixel: the vertical stack sees the rows above it,
the horizontal stack the pixels to its left in its own row and, through a 1x1 link, the
vertical stack's features. Splitting the receptive field this way leaves no blind spot (a
single masked k x k stack never sees the up-right region). The first layer's masks exclude the
pixel itself (mask A); later layers may include the position (mask B) because their inputs
already exclude it. Each layer is gated (tanh x sigmoid), with a per-class bias when the model
is class-conditional, and the horizontal stack is residual.

The output at each pixel is a discretised logistic mixture over its 8-bit values
(``logistic.py``), channels depending on each other within the pixel. Training is teacher
forced: the real image goes in and every pixel's distribution comes out in one pass. Sampling
draws one pixel per network pass; the likelihood is exact.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.core.jobs import Progress
from studio.models.ar.logistic import (
    Mixture,
    bits_per_dim,
    log_prob,
    params_per_pixel,
    sample_pixel,
    to_bins,
)
from studio.models.base import (
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
from studio.models.capabilities import InpaintSettings, Preview, SamplingOption
from studio.models.configs import learning_rate, lr_warmup, network_width

TEMPERATURE = SamplingOption(
    "temperature",
    "float",
    1.0,
    "Temperature",
    "divides each pixel's mixture logits and scales its logistics: below 1 is smoother and "
    "more typical, above 1 noisier",
    minimum=0.05,
    maximum=3.0,
)
RASTER = "raster"
CANDIDATES = {"fast": 1, "quality": 4}  # raster passes per inpainted result
PREVIEWS = 20  # about this many previews per inpainting run


@dataclass
class PixelCNNConfig(ModelConfig):
    width: int = network_width(64, help="channels of each gated layer", main=True)
    layers: int = setting(
        8,
        label="Gated layers",
        help="each sees one more row above; deeper sees further",
        minimum=1,
        maximum=30,
        main=True,
    )
    kernel: int = setting(
        3, label="Kernel size", help="width of each masked convolution", choices=(3, 5, 7)
    )
    mixtures: int = setting(
        5,
        label="Logistic mixtures",
        help="components of each pixel's distribution over its 256 values",
        minimum=1,
        maximum=20,
        main=True,
    )
    class_conditional: bool = setting(
        True,
        label="Use classes",
        help="condition on the folder's classes (subfolders); ignored when it has none",
    )
    lr: float = learning_rate(1e-3)
    warmup_steps: int = lr_warmup(100, help="learning rate ramps up linearly")
    max_grad_norm: float = setting(
        10.0,
        label="Gradient clipping",
        help="largest gradient norm per step",
        minimum=0.01,
        maximum=1000.0,
    )


# -- the network ----------------------------------------------------------------------------


class MaskedConv(nn.Conv2d):
    """A 'same'-padded convolution whose kernel is multiplied by a fixed 0/1 mask."""

    def __init__(self, cin: int, cout: int, mask: Tensor) -> None:
        kh, kw = mask.shape
        super().__init__(cin, cout, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask[None, None].clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def vertical_mask(k: int, first: bool) -> Tensor:
    """Rows above the centre (and the centre row after the first layer, whose inputs already
    see only the rows above)."""
    mask = torch.zeros(k, k)
    mask[: k // 2 + (0 if first else 1)] = 1
    return mask


def horizontal_mask(k: int, first: bool) -> Tensor:
    """Pixels left of the centre in the same row (and the centre after the first layer)."""
    mask = torch.zeros(1, k)
    mask[0, : k // 2 + (0 if first else 1)] = 1
    return mask


def gate(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    def __init__(self, cin: int, width: int, k: int, first: bool, classes: int) -> None:
        super().__init__()
        self.first = first
        self.v = MaskedConv(cin, 2 * width, vertical_mask(k, first))
        self.h = MaskedConv(cin, 2 * width, horizontal_mask(k, first))
        self.v_to_h = nn.Conv2d(2 * width, 2 * width, 1)
        self.h_out = nn.Conv2d(width, width, 1)
        self.embed = nn.Embedding(classes, 4 * width) if classes else None

    def _bias(self, labels: Tensor | None, part: int) -> Tensor | float:
        if self.embed is None or labels is None:
            return 0.0
        return self.embed(labels)[:, :, None, None].chunk(2, dim=1)[part]

    def vertical(self, v: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """(the pre-gate features the horizontal stack reads, the next vertical input)."""
        vf = self.v(v) + self._bias(labels, 0)
        return vf, gate(vf)

    def horizontal(self, h: Tensor, vf: Tensor, labels: Tensor | None) -> Tensor:
        hf = self.h(h) + self.v_to_h(vf) + self._bias(labels, 1)
        h_new = self.h_out(gate(hf))
        return h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module):
    """Images (B x C x H x W in [-1, 1]) -> mixture parameters at every pixel, each computed
    from the pixels before it in raster order only.

    The two stacks run as two passes so sampling can reuse work: the vertical stack's features
    at a row depend only on the rows above it, so they are computed once per row; then each
    pixel of the row needs only the horizontal stack, on that row."""

    def __init__(self, channels: int, width: int, layers: int, k: int, out: int, classes: int):
        super().__init__()
        cin = channels + 1  # + a channel of ones: zero padding then marks the border
        self.layers = nn.ModuleList(
            GatedLayer(cin if i == 0 else width, width, k, i == 0, classes) for i in range(layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, out, 1)
        )

    @staticmethod
    def _inputs(x: Tensor) -> Tensor:
        return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)

    def vertical(self, x: Tensor, labels: Tensor | None) -> list[Tensor]:
        """Each layer's vertical features (they see the rows above each pixel only)."""
        v, out = self._inputs(x), []
        for layer in self.layers:
            vf, v = layer.vertical(v, labels)
            out.append(vf)
        return out

    def horizontal(self, x: Tensor, vfs: list[Tensor], labels: Tensor | None) -> Tensor:
        """The output from the image and the vertical features of the same rows."""
        h = self._inputs(x)
        for layer, vf in zip(self.layers, vfs):
            h = layer.horizontal(h, vf, labels)
        return self.head(h)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.horizontal(x, self.vertical(x, labels), labels)


# -- the family ------------------------------------------------------------------------------


class PixelCNN(GenerativeModel):
    info = FamilyInfo(
        key="ar.pixelcnn",
        kind="ar",
        display_name="PixelCNN",
        summary="Autoregressive: draws the image one pixel at a time, each from a "
        "logistic mixture given every pixel before it, so sampling takes one network pass "
        "per pixel. Trained with teacher forcing (every pixel predicted from the real "
        "pixels before it in one pass); good at exact, comparable bits/dim and textures, "
        "weaker at global structure.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.LIKELIHOOD
        | Capability.CONDITIONAL
        | Capability.INPAINT,
        loss_names=("bpd", "grad_norm"),
        kind_title="Autoregressive models",
    )
    Config = PixelCNNConfig
    config: PixelCNNConfig
    conditions = ("label", "temperature")
    sampling_options = (TEMPERATURE,)
    latent_note = (
        "PixelCNN has no latent space: its randomness is one draw per pixel, each given the "
        "pixels before it, so there is no code to move along."
    )
    supports_accumulation = True
    inpaint_methods = (RASTER,)
    inpaint_method_labels = {RASTER: "Raster-order resampling"}

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__(config)
        c = config
        classes = c.num_classes if c.class_conditional else 0
        self.classes = classes
        if not classes:
            self.conditions = ("temperature",)  # type: ignore[misc]
        out = params_per_pixel(c.channels, c.mixtures)
        self.net = GatedPixelCNN(c.channels, c.width, c.layers, c.kernel, out, classes)

    @property
    def dims(self) -> int:
        c = self.config
        return c.channels * c.resolution * c.resolution

    def mixture(self, x: Tensor, labels: Tensor | None) -> Mixture:
        """The distribution of every pixel given the pixels before it (B images)."""
        out = self.net(x, labels if self.classes else None)
        out = out if out.dtype == torch.float64 else out.float()  # never bf16 in the mixture
        return Mixture.from_output(out, self.config.channels, self.config.mixtures)

    def log_likelihood(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """log P(images | labels) in nats per image, images read as 8-bit data."""
        x = to_bins(images.to(self.device).float())
        return log_prob(self.mixture(x, labels), x).flatten(1).sum(dim=1)

    # -- the likelihood protocol ------------------------------------------------------------
    @torch.no_grad()
    def bits_per_dim(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """Exact per-image bits/dim of the 8-bit images (C x H x W dimensions, as the flows
        count). A class-conditional model without ``labels`` scores the marginal over its
        classes, each equally likely: log p(x) = logmeanexp_y log p(x | y)."""
        with eval_mode(self):
            if not self.classes:
                ll = self.log_likelihood(images, None)
            elif labels is not None:
                ll = self.log_likelihood(images, labels.to(self.device))
            else:
                per_class = [
                    self.log_likelihood(
                        images, class_labels(len(images), self.classes, y, self.device)
                    )
                    for y in range(self.classes)
                ]
                ll = torch.logsumexp(torch.stack(per_class), dim=0) - math.log(self.classes)
        return bits_per_dim(ll, self.dims)

    # -- training ---------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.optimizers = {"pixelcnn": torch.optim.Adam(self.parameters(), lr=self.config.lr)}
        return self.optimizers

    def default_warmup_steps(self) -> int:
        return self.config.warmup_steps

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        x = to_bins(batch.images.float())
        with ctx.autocast():  # teacher forcing: the real pixels go in, all outputs at once
            out = self.net(x, batch.labels if self.classes else None)
        mix = Mixture.from_output(out.float(), self.config.channels, self.config.mixtures)
        bpd = bits_per_dim(log_prob(mix, x).flatten(1).sum(dim=1), self.dims).mean()
        norm = self.optimizer_step("pixelcnn", bpd, ctx, clip=self.config.max_grad_norm)
        out_metrics = {"bpd": bpd.detach()}
        if norm is not None:
            out_metrics["grad_norm"] = norm
        return out_metrics

    # -- sampling ---------------------------------------------------------------------------
    def _temperature(self, conditions: dict[str, Any]) -> float:
        t = float(conditions.get("temperature") or 1.0)
        if not (math.isfinite(t) and TEMPERATURE.minimum <= t <= TEMPERATURE.maximum):
            raise ValueError(
                f"temperature must be between {TEMPERATURE.minimum} and {TEMPERATURE.maximum}"
            )
        return t

    @property
    def reach(self) -> int:
        """How far back a pixel's inputs go: each layer sees kernel // 2 more rows above it
        and kernel // 2 more columns left of it."""
        return self.config.layers * (self.config.kernel // 2)

    def row_features(self, x: Tensor, labels: Tensor | None, row: int) -> list[Tensor]:
        """The vertical stack's features at ``row`` (B x 2W x 1 x R per layer), from the rows
        that can reach it: none below it, none more than ``reach`` above it. They stay valid
        while the row is drawn, since they see only the rows above."""
        top = max(0, row - self.reach)
        labels = labels if self.classes else None
        return [vf[:, :, -1:] for vf in self.net.vertical(x[:, :, top : row + 1], labels)]

    def pixel_mixture(
        self, x: Tensor, labels: Tensor | None, row: int, col: int, features: list[Tensor]
    ) -> tuple[Mixture, int]:
        """The mixture at (row, col) from the horizontal stack on the ``reach`` pixels left of
        it in its row (``features`` from :meth:`row_features`), and its column in that crop.
        Equal to the whole image's mixture there, for a sliver of the work."""
        left = max(0, col - self.reach)
        labels = labels if self.classes else None
        crop = [f[..., left : col + 1] for f in features]
        out = self.net.horizontal(x[:, :, row : row + 1, left : col + 1], crop, labels)
        out = out if out.dtype == torch.float64 else out.float()
        return Mixture.from_output(out, self.config.channels, self.config.mixtures), col - left

    def _draw(
        self,
        x: Tensor,
        labels: Tensor | None,
        u: Tensor,
        t: float,
        at: tuple[int, int],
        features: list[Tensor],
    ) -> None:
        """Fill pixel ``at`` (row, col) of ``x`` in place."""
        row, col = at
        mix, in_crop = self.pixel_mixture(x, labels, row, col, features)
        x[:, :, row, col] = sample_pixel(mix, u.to(x.device), t, 0, in_crop)

    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Generator[SampleStep, None, Tensor]:
        """Pixel by pixel in raster order, one network pass each; yields the partly drawn
        images after every row (undrawn pixels grey)."""
        self.check_conditions(conditions)
        t = self._temperature(conditions)
        c, device = self.config, self.device
        labels = (
            class_labels(n, self.classes, conditions.get("label"), device) if self.classes else None
        )
        r = c.resolution
        # Every random number is drawn up front on the CPU: same seed, same images anywhere.
        u = torch.rand(r, r, n, 1 + c.channels, generator=generator)
        x = torch.zeros(n, c.channels, r, r, device=device)
        for row in range(r):
            # Neither mode is held across the yield: a caller that stops early (a cancelled
            # preview between training steps) gets its own modes back.
            with eval_mode(self), torch.no_grad():
                features = self.row_features(x, labels, row)
                for col in range(r):
                    self._draw(x, labels, u[row, col], t, (row, col), features)
            yield SampleStep(row + 1, r, x.clone())
        return x

    # -- inpainting (studio.models.capabilities.InpaintFamily) ------------------------------
    @classmethod
    def inpaint_presets(cls, method: str = "") -> dict[str, str]:
        return {
            "fast": "One raster pass: each hole pixel is drawn given every pixel before it "
            "(one network pass per hole pixel).",
            "quality": "Four raster passes per result, keeping the one the model finds most "
            "likely as a whole image, so the known pixels after the hole count through the "
            "choice (four times the passes).",
        }

    def inpaint_describe(self, settings: InpaintSettings) -> str:
        k = CANDIDATES.get(settings.preset, 1)
        text = (
            "Raster-order resampling: each hole pixel is drawn from the model given every "
            "pixel before it (known or already drawn), one network pass per hole pixel. "
            "Known pixels after a hole pixel (below it, or right of it in its row) cannot "
            "influence it: the model only looks back, so the lower and right edges of the "
            "hole may not join up"
        )
        if k > 1:
            text += (
                f"; {k} candidates per result, the one most likely as a whole image kept, "
                "which is the only way the pixels after the hole count"
            )
        return text + "."

    @torch.no_grad()  # on a generator, torch enters the mode per step, not across yields
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
        if settings.preset not in CANDIDATES:
            raise ValueError(f"preset must be one of {', '.join(CANDIDATES)}")
        if settings.method not in ("", RASTER):
            raise ValueError(f"PixelCNN inpaints by {RASTER} only")
        k, c, device = CANDIDATES[settings.preset], self.config, self.device
        m = n * k
        if self.classes:
            labels = class_labels(n, self.classes, None, device) if labels is None else labels
            labels = labels.to(device).repeat(k)
        else:
            labels = None
        mask = (hole.to(device) > 0.5)[0, 0]
        x = to_bins(x0.to(device).float()).expand(m, -1, -1, -1).clone()
        x[:, :, mask] = 0.0
        positions = [(int(r), int(q)) for r, q in mask.nonzero().tolist()]  # raster order
        u = torch.rand(len(positions), m, 1 + c.channels, generator=generator)
        total = len(positions) + (1 if k > 1 else 0)
        every = max(1, len(positions) // PREVIEWS)
        features, features_row = [], -1
        for i, (row, col) in enumerate(positions):
            with eval_mode(self):  # not held across the yield (see sample_iter)
                if row != features_row:
                    features, features_row = self.row_features(x, labels, row), row
                self._draw(x, labels, u[i], 1.0, (row, col), features)
            image = None
            if preview is not None and ((i + 1) % every == 0 or i + 1 == len(positions)):
                image = preview(x[:n])
            yield Progress("inpaint", i + 1, total, message="PixelCNN raster", image=image)
        if k == 1:
            return x
        # The whole image's likelihood, known pixels after the hole included, picks one.
        with eval_mode(self):
            score = self.log_likelihood(x, labels).view(k, n)
        best = score.argmax(dim=0)
        x = x.view(k, n, *x.shape[1:])[best, torch.arange(n, device=device)]
        yield Progress("inpaint", total, total, message="PixelCNN: best of candidates")
        return x
