"""Leaner forwards for diffusers' UNet blocks (the ``lean_unet`` speed option, CPU by default).

Each one computes exactly what diffusers' block computes (same parameters, same state-dict
keys, results equal up to float rounding) in fewer or cheaper operations. Measured on a small
DDPM UNet on a 2-core AVX2 CPU, forward + backward (docs/performance.md has the table):

- **Upsampling** (:class:`LeanUpsample2D`): a nearest 2x upsample followed by a 3x3
  convolution equals, on the low-resolution grid, one convolution with four 2x2 kernels (one
  per output pixel's parity, each the sum of the 3x3 taps that land on the same input pixel),
  its four outputs interleaved. That is 16 instead of 36 multiply-adds per input pixel and
  channel pair, and no 4x larger upsampled tensor (its copy, and its backward's sum) at all:
  about 2x faster at 16x16 inputs and above. Below :data:`SUBPIXEL_MIN_PIXELS` the extra small
  operations cost more than they save, so small inputs keep diffusers' path.
- **Residual blocks** (:class:`LeanResnetBlock2D`): the 1x1 shortcut convolution becomes one
  batched matrix product (oneDNN's 1x1 convolution was 1.4-2.5x slower than ``baddbmm`` here),
  and the division by ``output_scale_factor`` is skipped when it is 1 (a full pass over the
  activations, forward and backward, for nothing).
- **Self-attention** (:class:`LeanAttnProcessor`): the spatial self-attention of a UNet works
  channel-first throughout: one product for query, key and value (their weights joined), the
  attention as two batched products and a softmax on ``(heads, d, N)`` tensors, one product for
  the output. diffusers' processor transposes to sequence-first and back (four copies) and
  runs three projections.

:func:`use_lean_unet` swaps these in on every diffusers UNet inside a module by changing the
blocks' classes (each a subclass of diffusers' own), so parameters, buffers, state-dict keys,
``save_pretrained`` and loading are untouched; anything outside the shapes a lean forward was
written for (other upsampling modes, an explicit output size, a time-embedding norm other than
"default", cross-attention, masks) runs diffusers' forward unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import Tensor, nn

#: Inputs with fewer pixels than this (per image and channel) keep the upsample + 3x3 path:
#: at 8x8 the sub-pixel form's extra small operations outweigh its saving (measured).
SUBPIXEL_MIN_PIXELS = 256

# For output parity a (0 or 1), which of a 3x3 kernel's rows land on each of the two input rows
# a 2x2 kernel covers: parity 0 reads input rows (i-1, i), tap rows {0} and {1, 2}; parity 1
# reads (i, i+1), tap rows {0, 1} and {2}. The same holds for columns.
_PHASE_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def pointwise_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """A 1x1, stride 1, ungrouped convolution of an NCHW tensor as one batched product."""
    b, c, h, w = x.shape
    out = torch.baddbmm(
        conv.bias.view(1, -1, 1).expand(b, -1, h * w)
        if conv.bias is not None
        else x.new_zeros(1, 1, 1).expand(b, conv.out_channels, h * w),
        conv.weight.view(1, conv.out_channels, c).expand(b, -1, -1),
        x.reshape(b, c, h * w),
    )
    return out.view(b, conv.out_channels, h, w)


def _is_plain_pointwise(conv: nn.Module, x: Tensor) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and x.dim() == 4
        and x.is_contiguous()  # not channels_last: the product would change the layout
    )


def subpixel_upsample_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(interpolate(x, scale_factor=2, mode="nearest"))`` for a 3x3, padding 1 ``conv``,
    computed on ``x``'s own grid (see the module's docstring)."""
    b, _, h, w = x.shape
    weight = conv.weight
    co = weight.shape[0]
    taps = weight.new_tensor(_PHASE_TAPS)  # (parity, tap, kernel row)
    # kernels[o, a, c, i, p, q]: output channel o at row parity a and column parity c
    kernels = torch.einsum("apk,oikl,cql->oacipq", taps, weight, taps)
    kernels = kernels.reshape(co * 4, weight.shape[1], 2, 2)
    bias = conv.bias.repeat_interleave(4) if conv.bias is not None else None
    out = F.conv2d(x, kernels, bias, padding=1)  # (b, co * 4, h + 1, w + 1)
    # Parity (a, c)'s output pixel (i, j) sits at out[o * 4 + a * 2 + c, i + a, j + c]: one
    # strided view puts every pixel where the interleaved image wants it.
    s_b, s_c, s_h, s_w = out.stride()
    view = out.as_strided((b, co, h, 2, w, 2), (s_b, 4 * s_c, s_h, 2 * s_c + s_h, s_w, s_c + s_w))
    return view.reshape(b, co, 2 * h, 2 * w)


class LeanUpsample2D(Upsample2D):
    """diffusers' ``Upsample2D`` with the sub-pixel form of nearest 2x + 3x3 convolution."""

    def forward(self, hidden_states: Tensor, output_size: Any = None, *args, **kwargs) -> Tensor:
        x = hidden_states
        conv = getattr(self, "conv", None)
        if (
            args
            or kwargs
            or not self.use_conv
            or self.use_conv_transpose
            or not self.interpolate
            or self.norm is not None
            or self.name != "conv"
            or type(conv) is not nn.Conv2d
            or conv.kernel_size != (3, 3)
            or conv.stride != (1, 1)
            or conv.padding != (1, 1)
            or conv.dilation != (1, 1)
            or conv.groups != 1
            or conv.padding_mode != "zeros"
            or x.dim() != 4
            or x.shape[-2] * x.shape[-1] < SUBPIXEL_MIN_PIXELS
            or not x.is_contiguous()
            or (
                output_size is not None and tuple(output_size) != (2 * x.shape[-2], 2 * x.shape[-1])
            )
        ):
            return super().forward(hidden_states, output_size, *args, **kwargs)
        return subpixel_upsample_conv(x, conv)


class LeanResnetBlock2D(ResnetBlock2D):
    """diffusers' ``ResnetBlock2D`` with a matrix-product shortcut and no division by 1."""

    def forward(self, input_tensor: Tensor, temb: Tensor | None, *args, **kwargs) -> Tensor:
        if (
            args
            or kwargs
            or self.upsample is not None
            or self.downsample is not None
            or self.time_embedding_norm != "default"
        ):
            return super().forward(input_tensor, temb, *args, **kwargs)
        h = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        if self.time_emb_proj is not None and temb is not None:
            t = temb if self.skip_time_act else self.nonlinearity(temb)
            h = h + self.time_emb_proj(t)[:, :, None, None]
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        shortcut = input_tensor
        if self.conv_shortcut is not None:
            shortcut = shortcut.contiguous() if self.training else shortcut
            if _is_plain_pointwise(self.conv_shortcut, shortcut):
                shortcut = pointwise_conv(shortcut, self.conv_shortcut)
            else:
                shortcut = self.conv_shortcut(shortcut)
        out = shortcut + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class LeanAttnProcessor(AttnProcessor2_0):
    """Channel-first spatial self-attention; anything else goes to diffusers' processor."""

    def __call__(  # type: ignore[override]
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        x = hidden_states
        if (
            args
            or kwargs
            or encoder_hidden_states is not None
            or attention_mask is not None
            or x.dim() != 4
            or not _lean_attention_fits(attn)
        ):
            return super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
        b, c, height, width = x.shape
        n = height * width
        h = attn.group_norm(x).reshape(b, c, n)
        q, k, v = attn.to_q, attn.to_k, attn.to_v
        weight = torch.cat([q.weight, k.weight, v.weight])
        bias = torch.cat([q.bias, k.bias, v.bias])
        qkv = torch.baddbmm(
            bias.view(1, -1, 1).expand(b, -1, n), weight.expand(b, -1, -1), h
        )  # (b, 3 * inner, n)
        inner = q.weight.shape[0]
        heads = attn.heads
        query, key, value = qkv.view(b, 3, heads, inner // heads, n).unbind(1)
        # diffusers' processor scales by 1/sqrt(head size) whatever attn.scale says: so do we
        scores = torch.matmul(query.transpose(-1, -2), key) * (inner // heads) ** -0.5
        mixed = torch.matmul(value, scores.softmax(-1).transpose(-1, -2))  # (b, heads, d, n)
        proj = attn.to_out[0]
        out = torch.baddbmm(
            proj.bias.view(1, -1, 1).expand(b, -1, n),
            proj.weight.expand(b, -1, -1),
            mixed.reshape(b, inner, n),
        ).view(b, c, height, width)
        out = attn.to_out[1](out)  # dropout (identity at p = 0)
        if attn.residual_connection:
            out = out + x
        if attn.rescale_output_factor != 1.0:
            out = out / attn.rescale_output_factor
        return out


def _lean_attention_fits(attn: Attention) -> bool:
    q, k, v = attn.to_q, attn.to_k, attn.to_v
    linears = (q, k, v, attn.to_out[0])
    return (
        attn.group_norm is not None
        and attn.spatial_norm is None
        and attn.norm_q is None
        and attn.norm_k is None
        and not attn.is_cross_attention
        and getattr(attn, "add_k_proj", None) is None
        and all(type(lin) is nn.Linear and lin.bias is not None for lin in linears)
        and q.weight.shape == k.weight.shape == v.weight.shape
        and q.weight.shape[0] % attn.heads == 0
        and attn.to_out[0].weight.shape[0] == q.weight.shape[1]
    )


def _is_diffusers_unet(module: nn.Module) -> bool:
    return type(module).__module__.startswith("diffusers.") and type(module).__name__.startswith(
        "UNet2D"
    )


def use_lean_unet(module: nn.Module) -> int:
    """Give every diffusers UNet inside ``module`` the lean block forwards; how many blocks
    changed (0 when there is no UNet or it was already lean)."""
    swapped = 0
    for unet in [m for m in module.modules() if _is_diffusers_unet(m)]:
        for block in unet.modules():
            if type(block) is ResnetBlock2D:
                block.__class__ = LeanResnetBlock2D
                swapped += 1
            elif type(block) is Upsample2D:
                block.__class__ = LeanUpsample2D
                swapped += 1
            elif (
                type(block) is Attention
                and type(block.processor) is AttnProcessor2_0
                and _lean_attention_fits(block)
            ):
                block.set_processor(LeanAttnProcessor())
                swapped += 1
    return swapped
