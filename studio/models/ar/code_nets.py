"""Autoregressive networks over a grid of discrete codes (a VQ-VAE's), and how a code is drawn.

Both networks read the grid flattened in raster order (B x L codes, L = rows x columns) and
return, at every position, logits over the codebook computed from the codes before it only:

* :class:`CodePixelCNN`: the gated PixelCNN of ``pixelcnn.py`` (vertical and horizontal
  masked stacks, no blind spot) over embedded codes, categorical logits out.
* :class:`CodeGPT`: a causal transformer decoder (pre-norm blocks, learned positions). Its
  input at position i is a start token (one per class when class-conditional) for i = 0 and
  code i - 1 after it, so the output at i sees codes 0 .. i - 1.

``forward_embedded`` takes the codes already embedded (B x L x D), so a test can check
causality with gradients: the output at i has no gradient from inputs at positions >= i.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.models.ar.pixelcnn import GatedPixelCNN


class CodePixelCNN(nn.Module):
    def __init__(
        self, codes: int, side: int, width: int, layers: int, kernel: int, classes: int
    ) -> None:
        super().__init__()
        self.side = side
        self.kernel = kernel
        self.embed = nn.Embedding(codes, width)
        self.net = GatedPixelCNN(width, width, layers, kernel, codes, classes)

    def forward_embedded(self, e: Tensor, labels: Tensor | None) -> Tensor:
        b, length, d = e.shape
        grid = e.transpose(1, 2).reshape(b, d, self.side, length // self.side)
        return self.net(grid, labels).flatten(2).transpose(1, 2)  # B x L x K

    def forward(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.forward_embedded(self.embed(codes), labels)

    # -- one position at a time (sampling) -------------------------------------------------
    def begin(self) -> dict[str, Any]:
        return {"row": -1, "features": []}

    def next_logits(
        self, state: dict[str, Any], codes: Tensor, i: int, labels: Tensor | None
    ) -> Tensor:
        """The logits at position ``i`` (B x K) from the codes before it, as ``forward``
        gives them, for a fraction of the work: the vertical stack once per row, on the rows
        that reach it, then the horizontal stack on the positions left of ``i`` that reach
        it (the PixelCNN family's row and crop trick)."""
        b = len(codes)
        row, col = divmod(i, self.side)
        reach = len(self.net.layers) * (self.kernel // 2)
        top = max(0, row - reach)
        grid = self.embed(codes[:, top * self.side : (row + 1) * self.side])
        grid = grid.view(b, row + 1 - top, self.side, -1).permute(0, 3, 1, 2)
        if state["row"] != row:  # rows above are final: their features hold for the row
            state["row"] = row
            state["features"] = [vf[:, :, -1:] for vf in self.net.vertical(grid, labels)]
        left = max(0, col - reach)
        crop = [f[..., left : col + 1] for f in state["features"]]
        out = self.net.horizontal(grid[:, :, -1:, left : col + 1], crop, labels)
        return out[:, :, 0, col - left]


class _Block(nn.Module):
    """Pre-norm causal self-attention and MLP, each residual."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, d // self.heads).unbind(2)
        drop = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=drop, is_causal=True
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, length, d))
        return x + self.mlp(self.norm2(x))

    def step(self, x: Tensor, cache: list[Tensor]) -> Tensor:
        """One new position (``x``: B x 1 x D) attending to itself and the keys and values
        of the positions before it, which ``cache`` keeps ([] at the start)."""
        b, _, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, 1, 3, self.heads, d // self.heads).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if cache:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        cache[:] = [k, v]
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k, v)
        x = x + self.proj(att.transpose(1, 2).reshape(b, 1, d))
        return x + self.mlp(self.norm2(x))


class CodeGPT(nn.Module):
    def __init__(
        self, codes: int, length: int, width: int, layers: int, heads: int, dropout: float,
        classes: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.embed = nn.Embedding(codes, width)
        self.start = nn.Embedding(max(1, classes), width)  # the class token, or one start token
        self.classes = classes
        self.position = nn.Parameter(torch.zeros(1, length, width))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(_Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, codes)

    def forward_embedded(self, e: Tensor, labels: Tensor | None) -> Tensor:
        b, length, _ = e.shape
        token = (
            labels if (self.classes and labels is not None) else e.new_zeros(b, dtype=torch.long)
        )
        x = torch.cat([self.start(token)[:, None], e[:, :-1]], dim=1)  # shift right by one
        x = x + self.position[:, :length]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # B x L x K

    def forward(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.forward_embedded(self.embed(codes), labels)

    # -- one position at a time (sampling) -------------------------------------------------
    def begin(self) -> dict[str, Any]:
        return {"caches": [[] for _ in self.blocks]}

    def next_logits(
        self, state: dict[str, Any], codes: Tensor, i: int, labels: Tensor | None
    ) -> Tensor:
        """The logits at position ``i`` (B x K), as ``forward`` gives them, from one new
        token and the keys and values of the ones before it (a KV cache): call it for
        i = 0, 1, 2, ... in order."""
        b = len(codes)
        if i == 0:
            token = labels if (self.classes and labels is not None) else codes.new_zeros(b)
            x = self.start(token)[:, None]
        else:
            x = self.embed(codes[:, i - 1 : i])
        x = x + self.position[:, i : i + 1]
        for block, cache in zip(self.blocks, state["caches"]):
            x = block.step(x, cache)
        return self.head(self.norm(x))[:, 0]


# -- drawing one code ---------------------------------------------------------------------------


def filter_logits(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """``logits`` (B x K) divided by ``temperature``, with every code outside the ``top_k``
    most likely (0 = no limit) and outside the nucleus (the most likely codes whose
    probabilities first reach ``top_p``; the most likely code is always kept) set to -inf."""
    logits = logits.float() / temperature
    k = logits.shape[-1]
    if 0 < top_k < k:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # the mass of the codes more likely than each
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(logits: Tensor, u: Tensor) -> Tensor:
    """One code per row of ``logits`` (B x K, already filtered) by the inverse CDF at ``u``
    (B uniform numbers, drawn up front on the CPU: same seed, same codes on any device)."""
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    u = u.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # skips empty codes
    return idx.clamp_max(logits.shape[-1] - 1)
