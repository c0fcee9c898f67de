"""Diffusion transformers (Peebles & Xie 2022), the ``backbone=dit`` network of the diffusion
families, beside the default UNet.

The image is cut into ``patch_size`` x ``patch_size`` patches, each a token; transformer blocks
modulated by the timestep (adaLN-zero: a shift, scale and gate per block computed from the
conditioning, the gates starting at zero so a fresh block is the identity) turn the tokens
into the noise prediction, patch by patch.

The networks are diffusers' own classes, so the saved weights load in plain diffusers:

- class / unconditional pixel DDPM: ``DiTTransformer2DModel`` (adaLN-zero on timestep + class).
  Its label table has ``num_classes + 1`` rows, the last being the null class of
  classifier-free guidance (diffusers' own convention). An unconditional model has no classes:
  its table holds the null class alone and every call uses label 0 (pass ``class_labels=0`` to
  the diffusers class). diffusers' random label dropout is switched off here: the family drops
  labels itself, from the training step's generator, so a resumed run replays exactly.
- captions: ``PixArtTransformer2DModel`` (adaLN-single on the timestep, cross-attention to the
  caption tokens after a learned projection). diffusers does not zero these gates, nor the
  cross-attention output, nor the last projection: :func:`zero_init` does, as DiT and PixArt do.

The wrappers below give both the UNet's call (``net(x, t, class_labels=..., ...)`` returning an
object with ``.sample``), so sampling, inpainting, inversion and scores use either network.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel
from torch import Tensor, nn

from studio.models.base import setting

#: (layers, width, heads) of the DiT paper's sizes; heads of 64 channels.
DIT_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12)}
BACKBONES = ("unet", "dit")
PATCH_SIZES = (2, 4)


# The DiT settings every diffusion family's config declares (same labels, ranges and help);
# each call makes a new dataclass field.
def backbone_setting(help: str, *, main: bool = False) -> Any:
    return setting("unet", label="Network", help=help, choices=BACKBONES, main=main)


def dit_size_setting() -> Any:
    return setting(
        "S",
        label="DiT size",
        help="S (12 layers, width 384) or B (12 layers, width 768); dit only",
        choices=tuple(DIT_SIZES),
    )


def patch_size_setting(help: str) -> Any:
    return setting(4, label="Patch size", help=help, choices=PATCH_SIZES)


def dit_layers_setting() -> Any:
    return setting(0, label="DiT layers", help="0 = the size's; dit only", minimum=0, maximum=48)


def dit_width_setting() -> Any:
    return setting(
        0, label="DiT width", help="0 = the size's (heads of 64); dit only", minimum=0,
        maximum=2048,
    )  # fmt: skip


def dit_shape(c: Any) -> tuple[int, int, int]:
    """``(layers, heads, head width)`` from a config's ``dit_size``, ``dit_layers`` and
    ``dit_width`` (0 = the size's)."""
    layers, width, heads = DIT_SIZES[c.dit_size]
    layers = c.dit_layers or layers
    if c.dit_width:
        width = c.dit_width
        heads = max(1, width // 64)
    return layers, heads, width // heads


def check_dit_config(c: Any) -> None:
    """Clear errors for DiT settings that cannot build a network."""
    if c.backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {c.backbone!r}")
    if c.dit_size not in DIT_SIZES:
        raise ValueError(f"dit_size must be one of {', '.join(DIT_SIZES)}, not {c.dit_size!r}")
    if c.backbone != "dit":
        return
    if c.patch_size not in PATCH_SIZES:
        raise ValueError(f"patch_size must be one of {PATCH_SIZES}, not {c.patch_size}")
    if c.resolution % c.patch_size:
        raise ValueError(
            f"patch size {c.patch_size} does not divide the resolution {c.resolution}: "
            "choose a patch size that does (2 or 4) or another resolution"
        )
    if c.dit_width:
        heads = max(1, c.dit_width // 64)
        if c.dit_width % heads:
            raise ValueError(f"DiT width {c.dit_width} does not split into {heads} heads of 64")


def timesteps_for(t: Tensor | int | float, n: int, device: torch.device) -> Tensor:
    """One timestep per image: the samplers pass one scalar for the whole batch."""
    t = torch.as_tensor(t, device=device)
    return t.reshape(-1).expand(n) if t.numel() == 1 else t.reshape(-1)


def zero_init(net: nn.Module) -> nn.Module:
    """adaLN-zero: zero what makes each block's residual branches and the output start at 0."""
    with torch.no_grad():
        for block in net.transformer_blocks:  # type: ignore[attr-defined]
            if block.norm_type == "ada_norm_zero":  # the gates come from norm1.linear
                nn.init.zeros_(block.norm1.linear.weight)
                nn.init.zeros_(block.norm1.linear.bias)
            else:  # ada_norm_single: gates = table + shared timestep projection
                block.scale_shift_table[2].zero_()  # attention gate
                block.scale_shift_table[5].zero_()  # feed-forward gate
            if block.attn2 is not None:  # cross-attention has no gate: zero its output
                nn.init.zeros_(block.attn2.to_out[0].weight)
                nn.init.zeros_(block.attn2.to_out[0].bias)
        if hasattr(net, "adaln_single"):
            nn.init.zeros_(net.adaln_single.linear.weight)
            nn.init.zeros_(net.adaln_single.linear.bias)
        last = net.proj_out_2 if hasattr(net, "proj_out_2") else net.proj_out
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return net


class ClassDiT(nn.Module):
    """``DiTTransformer2DModel`` behind ``UNet2DModel``'s call: no labels = the null class."""

    def __init__(self, c: Any, in_channels: int = 0) -> None:
        """``in_channels``: 0 = the image's; super-resolution stacks its upsampled input beside
        the noisy image (twice the channels). A config without classes is unconditional."""
        super().__init__()
        layers, heads, head_dim = dit_shape(c)
        num_classes = int(getattr(c, "num_classes", 0))
        self.net = DiTTransformer2DModel(
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            in_channels=in_channels or c.channels,
            out_channels=c.channels,
            num_layers=layers,
            dropout=c.dropout,
            sample_size=c.resolution,
            patch_size=c.patch_size,
            num_embeds_ada_norm=num_classes,  # + diffusers' null row at index num_classes
        )
        for module in self.net.modules():  # the family drops labels itself (see the module doc)
            if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
                module.dropout_prob = 0.0
        zero_init(self.net)
        self.null_class = num_classes

    def forward(self, sample: Tensor, timestep: Any, class_labels: Tensor | None = None) -> Any:
        n = sample.shape[0]
        if class_labels is None:
            class_labels = torch.full((n,), self.null_class, dtype=torch.long, device=sample.device)
        t = timesteps_for(timestep, n, sample.device)
        return self.net(sample, timestep=t, class_labels=class_labels)


class CaptionDiT(nn.Module):
    """``PixArtTransformer2DModel`` behind ``UNet2DConditionModel``'s call. The pooled prompt
    the text UNet adds to its timestep embedding (``class_labels``) is not used: PixArt reads
    the prompt through cross-attention only."""

    def __init__(self, c: Any, cross_dim: int) -> None:
        super().__init__()
        layers, heads, head_dim = dit_shape(c)
        self.net = PixArtTransformer2DModel(
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            in_channels=c.channels,
            out_channels=c.channels,
            num_layers=layers,
            dropout=c.dropout,
            cross_attention_dim=heads * head_dim,  # the caption, projected to the width
            caption_channels=cross_dim,
            sample_size=c.resolution,
            patch_size=c.patch_size,
            use_additional_conditions=False,
            interpolation_scale=1,
        )
        zero_init(self.net)

    def forward(
        self,
        sample: Tensor,
        timestep: Any,
        encoder_hidden_states: Tensor,
        encoder_attention_mask: Tensor | None = None,
        class_labels: Tensor | None = None,
    ) -> Any:
        del class_labels
        t = timesteps_for(timestep, sample.shape[0], sample.device)
        return self.net(
            sample,
            encoder_hidden_states=encoder_hidden_states,
            timestep=t,
            encoder_attention_mask=encoder_attention_mask,
        )
