"""A prior over the code grids of a trained VQ-VAE run (van den Oord et al. 2017, section 3.2;
the transformer flavour as in VQGAN, Esser et al. 2021).

The VQ-VAE run is chosen when this run is created (the ``base_run`` setting) and loaded
frozen: its encoder turns the training images into code grids once, before training
(``training_features``), and its decoder turns sampled grids into images. This family learns
only the distribution of the grids, autoregressively in raster order, with a gated
PixelCNN or a small GPT over the codes (``code_nets.py``); the loss is bits per code.
Sampling draws one code per network pass (temperature, top-k, nucleus), then decodes.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from studio.core.errors import BaseRunError
from studio.core.jobs import Progress
from studio.core.schema import RunRequirement, run_setting
from studio.models.ar.code_nets import CodeGPT, CodePixelCNN, draw, filter_logits
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
from studio.models.base_runs import attach_base_runs
from studio.models.capabilities import (
    TEMPERATURE,
    AnomalyScore,
    InpaintSettings,
    Preview,
    SamplingOption,
    ScoreBatch,
)
from studio.models.configs import learning_rate, lr_warmup, network_width
from studio.models.diffusion.ddpm import step_rng  # dropout replays exactly on resume

BASE = "base_run"
TOP_K = SamplingOption(
    "top_k",
    "int",
    0,
    "Top-k",
    "draw each code from the k most likely ones only; 0 = from all",
    minimum=0,
    maximum=8192,
)
TOP_P = SamplingOption(
    "top_p",
    "float",
    1.0,
    "Top-p (nucleus)",
    "draw each code from the most likely ones whose chances add up to p; 1 = from all",
    minimum=0.001,
    maximum=1.0,
)
RASTER = "raster"
GIBBS_PASSES = {"fast": 0, "quality": 2}  # re-sampling passes after the raster pass
CANDIDATES = 8  # codes a re-sampling pass weighs at each position
LN2 = math.log(2.0)


@dataclass
class VQPriorConfig(ModelConfig):
    base_run: str = run_setting(
        label="VQ-VAE run",
        requires=RunRequirement(("vae.vqvae",), what="a VQ-VAE run"),
        help="the trained VQ-VAE whose codes this prior learns; its decoder draws the images",
    )
    architecture: str = setting(
        "pixelcnn",
        label="Prior network",
        help="pixelcnn: gated masked convolutions over the code grid; gpt: a causal "
        "transformer over the flattened grid",
        choices=("pixelcnn", "gpt"),
        main=True,
    )
    width: int = network_width(64, help="channels (PixelCNN) or embedding size (GPT)", main=True)
    layers: int = setting(
        6, label="Layers", help="gated layers or transformer blocks", minimum=1, maximum=24,
        main=True,
    )  # fmt: skip
    kernel: int = setting(
        3, label="Kernel size (PixelCNN)", help="width of each masked convolution", choices=(3, 5)
    )
    heads: int = setting(
        4, label="Attention heads (GPT)", help="must divide the width", choices=(1, 2, 4, 8)
    )
    dropout: float = setting(
        0.0, label="Dropout (GPT)", help="in the transformer's MLPs and attention", minimum=0.0,
        maximum=0.5,
    )  # fmt: skip
    class_conditional: bool = setting(
        True,
        label="Use classes",
        help="condition on the folder's classes (subfolders; a class token for the GPT); "
        "ignored when it has none",
    )
    lr: float = learning_rate(5e-4)
    warmup_steps: int = lr_warmup(100, help="learning rate ramps up linearly")
    max_grad_norm: float = setting(
        1.0, label="Gradient clipping", help="largest gradient norm per step", minimum=0.01,
        maximum=1000.0,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.architecture == "gpt" and self.width % self.heads:
            raise ValueError(f"the width ({self.width}) must be a multiple of the heads")


class VQPrior(GenerativeModel):
    info = FamilyInfo(
        key="ar.vq_prior",
        kind="ar",
        display_name="VQ-VAE prior",
        summary="Autoregressive prior over a trained VQ-VAE's code grids (gated PixelCNN or "
        "small GPT): draws codes one at a time, then the frozen VQ-VAE decodes them. Turns a "
        "VQ-VAE run into a real generator.",
        about="Built on a VQ-VAE run chosen when the run is created (its path and a hash of "
        "its weights are recorded; a moved or retrained VQ-VAE run is refused with its name). "
        "The VQ-VAE's encoder turns each training image into a small grid of codebook "
        "indices once, before training; the prior learns their distribution in raster order "
        "(loss: bits per code), either with a gated PixelCNN over the grid or with a causal "
        "transformer over the flattened grid (learned positions, a class token when the "
        "folder has classes). Sampling draws one code per network pass with temperature, "
        "top-k and nucleus (top-p) filtering and decodes the grid with the VQ-VAE's decoder, "
        "so samples are as sharp as the VQ-VAE's reconstructions and far more coherent than "
        "the VQ-VAE's own independent codes. Inpainting redraws the codes under the "
        "(downsampled) mask given the codes before them; codes after the mask only count in "
        "the 'quality' preset's re-sampling passes. Good for: structured samples from a "
        "compact discrete latent, fast to train once the VQ-VAE exists.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.CONDITIONAL
        | Capability.INPAINT,
        loss_names=("bits_per_code", "grad_norm"),
    )
    Config = VQPriorConfig
    config: VQPriorConfig
    conditions = ("label", "temperature", "top_k", "top_p")
    sampling_options = (TEMPERATURE, TOP_K, TOP_P)
    scores = (
        AnomalyScore(
            "code_bits",
            "Code surprise",
            "bits per code of the image's VQ-VAE codes under the prior: high = an unusual "
            "arrangement of codes",
            "bits/code",
        ),
    )
    latent_note = (
        "The prior's randomness is one draw per code; explore the VQ-VAE run it builds on "
        "to move through its code grid."
    )
    supports_accumulation = True
    inpaint_methods = (RASTER,)
    inpaint_method_labels = {RASTER: "Code resampling"}

    def __init__(self, config: VQPriorConfig) -> None:
        super().__init__(config)
        c = config
        vq = attach_base_runs(self)[BASE]
        vc = vq.config
        if (vc.resolution, vc.channels) != (c.resolution, c.channels):
            raise BaseRunError(
                f"The VQ-VAE run {c.base_run} works on {vc.resolution} px images with "
                f"{vc.channels} channels; train this prior at the same resolution "
                f"({vc.resolution})."
            )
        self.codes = int(vq.codebook.shape[0])
        self.side = vc.resolution // vc.downsample
        self.length = self.side * self.side
        self.classes = c.num_classes if c.class_conditional else 0
        if not self.classes:
            self.conditions = ("temperature", "top_k", "top_p")  # type: ignore[misc]
        if c.architecture == "gpt":
            self.net: CodeGPT | CodePixelCNN = CodeGPT(
                self.codes, self.length, c.width, c.layers, c.heads, c.dropout, self.classes
            )
        else:
            self.net = CodePixelCNN(
                self.codes, self.side, c.width, c.layers, c.kernel, self.classes
            )

    @property
    def vq(self) -> Any:
        return self.base(BASE)

    # -- codes -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_codes(self, images: Tensor) -> Tensor:
        """Images -> their VQ-VAE code grids, flattened: B x L (long)."""
        return self.vq.encode_indices(images.to(self.device)).flatten(1)

    def training_features(self, images: Tensor) -> Tensor:
        return self.encode_codes(images)  # once per training image, not at every step

    def decode_codes(self, codes: Tensor) -> Tensor:
        return self.vq.decode(codes.view(-1, self.side, self.side))

    def logits(self, codes: Tensor, labels: Tensor | None) -> Tensor:
        return self.net(codes, labels if self.classes else None).float()

    def code_log_likelihood(self, codes: Tensor, labels: Tensor | None) -> Tensor:
        """log P(codes | labels) in nats per grid."""
        logp = F.log_softmax(self.logits(codes, labels), dim=-1)
        return logp.gather(-1, codes[..., None]).squeeze(-1).sum(dim=1)

    # -- training --------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.optimizers = {"prior": torch.optim.AdamW(self.parameters(), lr=self.config.lr)}
        return self.optimizers

    def default_warmup_steps(self) -> int:
        return self.config.warmup_steps

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        codes = batch.features if batch.features is not None else self.encode_codes(batch.images)
        codes = codes.to(self.device).long().flatten(1)
        dropout = self.config.architecture == "gpt" and self.config.dropout > 0
        # teacher forcing: every position predicted in one pass; dropout masks from the step
        with ctx.autocast(), step_rng(ctx, codes.device, enabled=dropout):
            out = self.net(codes, batch.labels if self.classes else None)
        nats = F.cross_entropy(out.float().flatten(0, 1), codes.flatten())
        bits = nats / LN2
        norm = self.optimizer_step("prior", bits, ctx, clip=self.config.max_grad_norm)
        metrics = {"bits_per_code": bits.detach()}
        if norm is not None:
            metrics["grad_norm"] = norm
        return metrics

    # -- sampling --------------------------------------------------------------------------
    def _knobs(self, conditions: dict[str, Any]) -> tuple[float, int, float]:
        t = conditions.get("temperature")
        t = 1.0 if t is None else float(t)
        k = int(conditions.get("top_k") or 0)
        p = conditions.get("top_p")
        p = 1.0 if p is None else float(p)
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"temperature must be positive, got {t}")
        if k < 0:
            raise ValueError(f"top_k must be 0 (off) or more, got {k}")
        if not (0 < p <= 1):
            raise ValueError(f"top_p must be above 0 and at most 1, got {p}")
        return t, k, p

    def _labels(self, n: int, label: Any) -> Tensor | None:
        if not self.classes:
            return None
        return class_labels(n, self.classes, None if label is None else int(label), self.device)

    def _preview(self, codes: Tensor, drawn: int) -> Tensor:
        """The grids decoded, the rows not drawn yet grey."""
        images = self.decode_codes(codes)
        rows = -(-drawn // self.side) * (images.shape[-1] // self.side)
        images[..., rows:, :] = 0.0
        return images

    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Generator[SampleStep, None, Tensor]:
        """Code by code in raster order, one network pass each; after every row of codes
        yields the grids decoded so far (the undrawn rows grey)."""
        self.check_conditions(conditions)
        t, k, p = self._knobs(conditions)
        labels = self._labels(n, conditions.get("label"))
        u = torch.rand(self.length, n, generator=generator)  # up front, on the CPU
        codes = torch.zeros(n, self.length, dtype=torch.long, device=self.device)
        state = self.net.begin()  # what the positions drawn so far leave for the next ones
        for row in range(self.side):
            with eval_mode(self), torch.no_grad():  # not held across the yield
                for i in range(row * self.side, (row + 1) * self.side):
                    logits = self.net.next_logits(state, codes, i, labels).float()
                    codes[:, i] = draw(filter_logits(logits, t, k, p), u[i])
                preview = self._preview(codes, (row + 1) * self.side)
            yield SampleStep(row + 1, self.side, preview)
        with torch.no_grad():
            return self.decode_codes(codes)

    # -- anomaly scores (studio.models.capabilities.ScoreFamily) -----------------------------
    @torch.no_grad()
    def anomaly_scores(
        self, images: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> ScoreBatch:
        del generator  # deterministic
        with eval_mode(self):
            codes = self.encode_codes(images)
            if not self.classes:
                ll = self.code_log_likelihood(codes, None)
            elif labels is not None:
                ll = self.code_log_likelihood(codes, labels.to(self.device))
            else:  # the marginal over the classes, each equally likely
                per = [
                    self.code_log_likelihood(
                        codes, class_labels(len(codes), self.classes, y, self.device)
                    )
                    for y in range(self.classes)
                ]
                ll = torch.logsumexp(torch.stack(per), dim=0) - math.log(self.classes)
        return ScoreBatch({"code_bits": (-ll / (self.length * LN2)).float().cpu()})

    # -- inpainting (studio.models.capabilities.InpaintFamily) ------------------------------
    @classmethod
    def inpaint_presets(cls, method: str = "") -> dict[str, str]:
        return {
            "fast": "One raster pass: each code under the mask is drawn given the codes "
            "before it (one network pass per code).",
            "quality": f"The raster pass, then {GIBBS_PASSES['quality']} re-sampling passes "
            f"that redraw each masked code among its {CANDIDATES} likeliest given all the "
            "others, so the known codes after the mask count too.",
        }

    def inpaint_describe(self, settings: InpaintSettings) -> str:
        passes = GIBBS_PASSES.get(settings.preset, 0)
        text = (
            "Code resampling: the image is encoded to the VQ-VAE's code grid, every code whose "
            "cell touches the mask is redrawn in raster order given the codes before it "
            "(known or already drawn), and the grid is decoded. Codes after the mask (below "
            "it, or right of it in its row) do not shape the raster pass"
        )
        if passes:
            text += (
                f"; they enter through {passes} re-sampling passes, each redrawing every "
                f"masked code from its {CANDIDATES} likeliest weighed by how likely the whole "
                "grid then is"
            )
        else:
            text += " (the 'quality' preset's re-sampling passes bring them in)"
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
        if settings.preset not in GIBBS_PASSES:
            raise ValueError(f"preset must be one of {', '.join(GIBBS_PASSES)}")
        if settings.method not in ("", RASTER):
            raise ValueError(f"{self.info.display_name} inpaints by {RASTER} only")
        device = self.device
        if self.classes:
            labels = self._labels(n, None) if labels is None else labels.to(device)
        else:
            labels = None
        cell = x0.shape[-1] // self.side
        masked = F.max_pool2d((hole.to(device) > 0.5).float(), cell)[0, 0].flatten() > 0
        where = masked.nonzero().flatten().tolist()  # raster order
        with eval_mode(self):
            codes = self.encode_codes(x0).expand(n, -1).clone()
        passes = GIBBS_PASSES[settings.preset]
        total = len(where) * (1 + passes)
        u = torch.rand(1 + passes, self.length, n, generator=generator)
        done = 0
        for sweep in range(1 + passes):
            for j, i in enumerate(where):
                with eval_mode(self):  # not held across the yield
                    if sweep == 0:
                        logits = self.logits(codes, labels)[:, i]
                        codes[:, i] = draw(filter_logits(logits, 1.0, 0, 1.0), u[0, i])
                    else:
                        self._gibbs(codes, labels, i, u[sweep, i])
                done += 1
                image = None
                if preview is not None and (j + 1 == len(where) or (j + 1) % self.side == 0):
                    image = preview(self.decode_codes(codes))
                name = "raster pass" if sweep == 0 else f"re-sampling pass {sweep}"
                yield Progress("inpaint", done, total, message=f"VQ prior: {name}", image=image)
        return self.decode_codes(codes)

    def _gibbs(self, codes: Tensor, labels: Tensor | None, i: int, u: Tensor) -> None:
        """Redraw code ``i`` of every grid from p(code_i | all other codes), restricted to
        its likeliest candidates given the codes before it: each candidate is weighed by the
        likelihood of the whole grid with it in place (one batched pass)."""
        n = len(codes)
        first = self.logits(codes, labels)[:, i]
        cand = first.topk(min(CANDIDATES, self.codes), dim=-1).indices  # n x C
        c = cand.shape[1]
        trial = codes[:, None].repeat(1, c, 1)
        trial[:, :, i] = cand
        flat_labels = None if labels is None else labels.repeat_interleave(c)
        ll = self.code_log_likelihood(trial.view(n * c, -1), flat_labels).view(n, c)
        pick = draw(ll, u)
        codes[:, i] = cand.gather(1, pick[:, None]).squeeze(1)
