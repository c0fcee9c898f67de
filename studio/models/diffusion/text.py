"""Text-to-image diffusion trained here: a diffusers ``UNet2DConditionModel`` that reads a
prompt through cross-attention.

The prompt goes through a text encoder: by default a small transformer trained together with
the UNet, over a word vocabulary built from the dataset's captions when the model is built
(sidecar ``.txt`` files, else class folder names; see ``studio.engine.data``). The vocabulary
is a setting, so it is saved in ``studio.json`` and ``config.json`` and a resumed run or a
loaded model reads prompts exactly as in training. Optionally a pretrained CLIP text encoder
is read, frozen, from a model folder on disk (``text_encoder_path``); its weights stay there.

Caption dropout replaces a caption by the empty prompt with probability ``cond_drop_prob``
(optionally words are also dropped one by one), so the model also learns the unconditional
distribution and sampling can use classifier-free guidance: ``uncond + w * (cond - uncond)``,
where "uncond" is the negative prompt (empty by default). The noise process, samplers, EMA and
warm-up are DDPM's (``ddpm.py``, ``samplers.py``). ``backbone=dit`` swaps the UNet for a
PixArt-style diffusion transformer (``dit.py``) that reads the prompt by cross-attention. An
EMA copy of the network and the text encoder (``self.ema``) is what samples come from.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    SampleStep,
    StepContext,
    eval_mode,
    setting,
)
from studio.models.configs import override
from studio.models.diffusion.ddpm import (
    SAMPLING_OPTIONS,
    DDPMConfig,
    UNetDiffusion,
    _replace_files,
    _save_unet,
    build_scheduler,
    step_rng,
    unet_levels,
)
from studio.models.diffusion.dit import CaptionDiT
from studio.models.diffusion.export import export_diffusion
from studio.models.diffusion.prompting import PromptSampling
from studio.models.diffusion.samplers import denoise_iter
from studio.models.diffusion.text_encoder import (
    PretrainedTextEncoder,
    SmallTextEncoder,
    WordTokenizer,
    build_vocabulary,
    words,
)
from studio.models.export import ExportContext, ExportNotes

PROMPT_SEPARATOR = "|"


@dataclass
class TextDiffusionConfig(DDPMConfig):
    width: int = override(DDPMConfig, "width", 32)
    layers_per_block: int = override(DDPMConfig, "layers_per_block", 1)
    attention_res: int = override(
        DDPMConfig,
        "attention_res",
        16,
        label="Cross-attention at <= N px",
        help="levels whose maps are this small or smaller read the prompt; the middle always does",
    )
    dropout: float = override(DDPMConfig, "dropout", 0.0)
    prediction_type: str = override(
        DDPMConfig,
        "prediction_type",
        "v_prediction",
        help="the velocity v (default: at high noise it is the image, so the prompt matters "
        "in training from the first steps) or the noise (epsilon)",
    )
    cond_drop_prob: float = override(
        DDPMConfig,
        "cond_drop_prob",
        0.1,
        label="Caption dropout",
        help="train with the empty prompt this often, so guidance works",
        main=True,
    )
    word_dropout: float = setting(
        0.1,
        label="Word dropout",
        help="drop each caption word this often, so short prompts work",
        minimum=0.0,
        maximum=0.9,
    )
    guidance: float = override(
        DDPMConfig,
        "guidance",
        3.0,
        help="default for sampling; 1 = plain conditional, 0 = ignore the prompt",
    )
    text_dim: int = setting(
        64, label="Text width", help="width of the small text encoder", minimum=8, maximum=1024
    )
    text_layers: int = setting(2, label="Text layers", minimum=0, maximum=8)
    text_heads: int = setting(4, label="Text heads", minimum=1, maximum=16)
    max_tokens: int = setting(
        24, label="Prompt length", help="words read per prompt (more are cut)", minimum=2,
        maximum=77,
    )  # fmt: skip
    max_words: int = setting(
        2000, label="Vocabulary limit", help="the most frequent caption words kept", minimum=1,
        maximum=50000,
    )  # fmt: skip
    vocab: str = setting(
        "",
        label="Vocabulary",
        help="filled from the captions when training starts; leave empty",
    )
    sample_prompts: str = setting(
        "",
        label="Sample prompts",
        help="prompts of the sample grids, separated by a vertical bar; empty = from the captions",
    )
    text_encoder_path: str = setting(
        "",
        label="Pretrained text encoder",
        help="a diffusers model folder with a CLIP text encoder (frozen); empty = train a small one",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.text_dim % self.text_heads:
            raise ValueError("text width must be a multiple of the number of text heads")

    def vocabulary(self) -> list[str]:
        return self.vocab.split()

    def prompts(self) -> list[str]:
        return [p.strip() for p in self.sample_prompts.split(PROMPT_SEPARATOR) if p.strip()]


def build_cond_unet(c: TextDiffusionConfig, cross_dim: int) -> UNet2DConditionModel:
    chans, groups, attn = unet_levels(c)
    return UNet2DConditionModel(
        sample_size=c.resolution,
        in_channels=c.channels,
        out_channels=c.channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=chans,
        layers_per_block=c.layers_per_block,
        dropout=c.dropout,
        norm_num_groups=groups,
        cross_attention_dim=cross_dim,
        # The pooled prompt is also added to the timestep embedding (as class labels are in
        # DDPM): a direct path for global attributes that a small model learns in far fewer
        # steps than cross-attention alone; cross-attention adds word-level detail.
        class_embed_type="projection",
        projection_class_embeddings_input_dim=cross_dim,
        # diffusers reads this as the number of heads here: heads of 32 channels (or fewer).
        attention_head_dim=tuple(max(1, ch // 32) for ch in chans),
    )


class TextDiffusion(PromptSampling, UNetDiffusion):
    info = FamilyInfo(
        key="diffusion.text",
        kind="diffusion",
        display_name="Text-to-image diffusion",
        summary="Diffusion steered by a prompt, learned from the captions (or folder names): "
        "the most flexible control, but it needs captions and many training steps.",
        capabilities=Capability.TRAIN | Capability.SAMPLE | Capability.TEXT,
        loss_names=("loss", "grad_norm"),
    )
    Config = TextDiffusionConfig
    config: TextDiffusionConfig
    conditions = ("prompt", "negative_prompt", "guidance", "steps", "sampler")
    sampling_options = SAMPLING_OPTIONS
    latent_note = (
        "runs cannot be explored yet: the explorer inverts pixel-space DDPM runs "
        "(unconditional or class-conditional) only. Use Sample or Inpaint with this run."
    )

    def __init__(self, config: TextDiffusionConfig) -> None:
        super().__init__(config)
        c = config
        self.pretrained: PretrainedTextEncoder | None = None
        self.tokenizer: WordTokenizer | None = None
        self.text_encoder: SmallTextEncoder | None = None
        if c.text_encoder_path:
            self.pretrained = PretrainedTextEncoder(c.text_encoder_path)
            cross_dim = self.pretrained.dim
        else:
            self.tokenizer = WordTokenizer(c.vocabulary(), c.max_tokens)
            self.text_encoder = SmallTextEncoder(
                len(self.tokenizer), c.text_dim, c.text_layers, c.text_heads, c.max_tokens
            )
            cross_dim = c.text_dim
        net = self.network_config()
        self.unet = (  # named unet whichever the backbone
            CaptionDiT(net, cross_dim) if c.backbone == "dit" else build_cond_unet(net, cross_dim)
        )
        # The averaged weights samples come from. Not named ema_unet: the canvas's class-label
        # inpainting path looks for that name and cannot feed it a prompt.
        self.ema = nn.ModuleDict({"unet": copy.deepcopy(self.unet)})
        if self.text_encoder is not None:
            self.ema["text"] = copy.deepcopy(self.text_encoder)
        self.ema.requires_grad_(False)
        self.scheduler = build_scheduler(c)

    # -- building from a dataset ---------------------------------------------------------
    @classmethod
    def config_for_data(
        cls,
        overrides: dict[str, Any],
        captions: Sequence[str],
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Settings with the vocabulary (and sample prompts) filled from the training captions;
        a resumed run keeps what it was built with (``previous``: its saved model settings)."""
        out = dict(overrides)
        previous = previous or {}
        for name in ("vocab", "sample_prompts"):
            if not out.get(name) and previous.get(name):
                out[name] = previous[name]
        if not out.get("vocab") and not out.get("text_encoder_path"):
            limit = int(out.get("max_words", cls.Config.max_words))
            out["vocab"] = " ".join(build_vocabulary(captions, limit))
        if not out.get("sample_prompts"):
            out["sample_prompts"] = PROMPT_SEPARATOR.join(example_captions(captions, 8))
        return out

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of ``prompt`` the model does not know (read as ``<unk>``)."""
        if self.tokenizer is None:
            return []
        return self.tokenizer.unknown_words(prompt)

    # -- text --------------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str], use_ema: bool = True) -> tuple[Tensor, Tensor]:
        """``(hidden states B x T x D, mask B x T)`` for the UNet's cross-attention."""
        device = self.device
        if self.pretrained is not None:
            return self.pretrained.encode(prompts, device)
        assert self.tokenizer is not None and self.text_encoder is not None
        ids, mask = self.tokenizer(prompts, device)
        encoder = self.ema["text"] if use_ema else self.text_encoder
        return encoder(ids, mask), mask

    @staticmethod
    def unet_inputs(hidden: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """The UNet's conditioning keywords: the token states for cross-attention and their
        masked mean, which the UNet adds to its timestep embedding."""
        m = mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        return {
            "encoder_hidden_states": hidden,
            "encoder_attention_mask": mask,
            "class_labels": pooled,
        }

    def _train_captions(self, batch: Batch, ctx: StepContext) -> list[str]:
        n = batch.images.shape[0]
        captions = list(batch.captions) if batch.captions is not None else [""] * n
        if len(captions) != n:
            raise ValueError(f"the batch has {n} images but {len(captions)} captions")
        # Both draws come from the step's generator, so a step replays exactly on resume.
        drop = ctx.rand(n).cpu().tolist()
        c = self.config
        if c.word_dropout > 0:
            counts = [len(words(cap)) for cap in captions]
            keep = (ctx.rand(max(1, sum(counts))).cpu() >= c.word_dropout).tolist()
            at = 0
            for i, k in enumerate(counts):
                kept = [w for w, m in zip(words(captions[i]), keep[at : at + k]) if m]
                at += k
                captions[i] = " ".join(kept) if kept else captions[i]
        return ["" if d < c.cond_drop_prob else cap for d, cap in zip(drop, captions)]

    # -- training ------------------------------------------------------------------------
    def _trained(self) -> list[nn.Module]:
        # One optimizer holds the UNet and the small text encoder.
        return [m for m in (self.unet, self.text_encoder) if m is not None]

    def _ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.ema["unet"], self.unet)]
        if self.text_encoder is not None:
            pairs.append((self.ema["text"], self.text_encoder))
        return pairs

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        c = self.config
        captions = self._train_captions(batch, ctx)  # drawn first: the order replays on resume
        t, x_t, target = self.noised(batch.images, ctx)
        with ctx.autocast(), step_rng(ctx, x_t.device, enabled=c.dropout > 0):
            hidden, mask = self.encode_prompts(captions, use_ema=False)
            pred = self.unet(x_t, t, **self.unet_inputs(hidden, mask))
        loss = F.mse_loss(pred.sample.float(), target.float())
        return self.finish_step(loss, ctx)

    # -- sampling ------------------------------------------------------------------------
    def prompts_for(self, n: int, prompt: str | Sequence[str] | None) -> list[str]:
        """``n`` prompts: the one given, one per image, or the sample prompts in turn."""
        if isinstance(prompt, str):
            return [prompt] * n
        if prompt is not None:
            prompts = [str(p) for p in prompt]
            if len(prompts) != n:
                raise ValueError(f"give one prompt or {n} prompts, not {len(prompts)}")
            return prompts
        examples = self.config.prompts() or [""]
        return [examples[i % len(examples)] for i in range(n)]

    def guided_denoiser(
        self,
        prompts: Sequence[str],
        negative_prompt: str,
        guidance: float,
        use_ema: bool = True,
    ) -> Any:
        """``f(x, t) -> output`` with classifier-free guidance towards ``prompts`` and away
        from ``negative_prompt``: one batched UNet call per step (one when guidance is 1)."""
        unet = self.ema["unet"] if use_ema else self.unet
        with eval_mode(*self._all_modules()):
            cond, cond_mask = self.encode_prompts(list(prompts), use_ema)
            if guidance != 1.0:
                both = list(prompts) + [negative_prompt] * len(prompts)
                hidden, mask = self.encode_prompts(both, use_ema)
            else:
                hidden, mask = cond, cond_mask

        inputs = self.unet_inputs(hidden, mask)

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            n = x.shape[0]
            tt = t.reshape(-1).expand(n).to(x.device)
            with eval_mode(unet):
                if guidance == 1.0:
                    return unet(x, tt, **inputs).sample
                out = unet(torch.cat([x, x]), torch.cat([tt, tt]), **inputs).sample
            c_out, u_out = out.chunk(2)
            return u_out + guidance * (c_out - u_out)

        return denoise

    def score_denoiser(self, n: int, labels: Tensor | None) -> Any:
        """The denoising score asks the model unprompted (the empty prompt, which training
        shows it with caption dropout): how well it knows the image without being told."""
        del labels
        return self.guided_denoiser([""] * n, "", 1.0)

    def _all_modules(self) -> list[nn.Module]:
        return [*self._trained(), self.ema]

    @torch.no_grad()
    def sample_iter(
        self, n: int, generator: torch.Generator, *, use_ema: bool = True, **conditions: Any
    ) -> Generator[SampleStep, None, Tensor]:
        """Denoise ``n`` images for ``prompt`` (a string, one per image, or None: the sample
        prompts in turn), guided away from ``negative_prompt`` (default empty) with scale
        ``guidance``; ``sampler`` and ``steps`` as for DDPM."""
        c = self.config
        name, steps, guidance = self.parse_sampling(conditions)
        prompts = self.prompts_for(n, conditions.get("prompt"))
        negative = str(conditions.get("negative_prompt") or "")
        denoise = self.guided_denoiser(prompts, negative, guidance, use_ema)
        shape = self.sample_shape(n)
        return (
            yield from denoise_iter(
                denoise, name, steps, self.scheduler, shape, generator, self.device,
                c.prediction_type,
            )
        )  # fmt: skip

    # -- export (studio export) ------------------------------------------------------------
    export_formats = ("diffusers", "safetensors")

    def export_files(self, folder: Path, fmt: str, context: ExportContext) -> ExportNotes:
        """The network and scheduler as diffusers folders and the small text encoder as
        safetensors with its vocabulary (``--format diffusers``); or one safetensors file."""
        return export_diffusion(self, folder, fmt, context, caption=True)

    # -- persistence ---------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """The studio's weights file; a DiT also writes its EMA transformer as a diffusers
        ``PixArtTransformer2DModel`` folder, ``transformer/`` (the text encoder is ours)."""
        super().save(folder)
        if self.uses_dit():
            net = self.ema["unet"].net
            _replace_files(Path(folder), "transformer", lambda p: _save_unet(net, p))

    def to(self, *args: Any, **kwargs: Any) -> TextDiffusion:
        model = super().to(*args, **kwargs)
        if self.pretrained is not None:
            self.pretrained.to(self.device)
        return model


def example_captions(captions: Sequence[str], k: int) -> list[str]:
    """Up to ``k`` distinct non-empty captions spread evenly over the dataset (which is sorted
    by folder, so they span the classes), topped up in order when too few are distinct."""
    n = len(captions)
    spread = [captions[(i * n) // k] for i in range(k)] if n else []
    chosen: list[str] = []
    for cap in [*spread, *captions]:
        cap = cap.strip()
        if len(chosen) == k:
            break
        if cap and cap not in chosen:
            chosen.append(cap)
    return chosen
