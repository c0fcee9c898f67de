"""Text encoders for prompt-conditioned diffusion: a small one trained with the model, from
the dataset's own words, and a frozen pretrained CLIP text encoder read from a folder on disk.

Both turn a batch of prompts into ``(hidden states B x T x D, attention mask B x T)`` for a
``UNet2DConditionModel``'s cross-attention.

The small encoder's tokenizer is word-level: lower-cased words (letters, digits, apostrophes)
looked up in a vocabulary built from the training captions at build time and saved with the
model's settings. Every sequence starts with ``<bos>``, so the empty prompt (what caption
dropout trains and classifier-free guidance uses as "unconditional") is a sequence of its own;
words outside the vocabulary become ``<unk>`` and are reported, so the UI can name them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

PAD, BOS, UNK = "<pad>", "<bos>", "<unk>"
SPECIALS = (PAD, BOS, UNK)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def words(text: str) -> list[str]:
    """The words of ``text``: lower case, split on anything that is not a letter or digit."""
    return _WORD.findall(text.lower())


def build_vocabulary(captions: Iterable[str], max_words: int) -> list[str]:
    """The ``max_words`` most frequent caption words (ties in alphabetical order), sorted by
    frequency. The special tokens are not included."""
    counts = Counter(w for caption in captions for w in words(caption))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, _ in ranked[: max(0, max_words)]]


class WordTokenizer:
    """Word-level tokenizer over a fixed vocabulary (``words``: no special tokens)."""

    def __init__(self, vocabulary: Sequence[str], max_tokens: int) -> None:
        if max_tokens < 2:
            raise ValueError("max_tokens must be at least 2 (<bos> and one word)")
        self.itos = list(SPECIALS) + [w for w in vocabulary if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_tokens = max_tokens
        self._cache: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.itos)

    def unknown_words(self, prompt: str) -> list[str]:
        """The prompt's words that the model never saw in training (each once, in order)."""
        seen: dict[str, None] = {}
        for w in words(prompt):
            if w not in self.stoi:
                seen.setdefault(w)
        return list(seen)

    def ids(self, prompt: str) -> list[int]:
        cached = self._cache.get(prompt)
        if cached is None:
            unk = self.stoi[UNK]
            cached = [self.stoi[BOS]] + [self.stoi.get(w, unk) for w in words(prompt)]
            cached = cached[: self.max_tokens]
            if len(self._cache) < 65536:  # training captions repeat; prompts are few
                self._cache[prompt] = cached
        return cached

    def __call__(self, prompts: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """``(ids B x T long, mask B x T long)``; T is the longest prompt in the batch."""
        rows = [self.ids(p) for p in prompts]
        length = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids.to(device), mask.to(device)


class SmallTextEncoder(nn.Module):
    """Token and position embeddings, a few pre-norm transformer layers and a final norm."""

    def __init__(self, vocab_size: int, dim: int, layers: int, heads: int, max_tokens: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        nn.init.normal_(self.token.weight, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        x = self.token(ids) + self.position[: ids.shape[1]]
        pad = mask == 0  # <bos> is never padding, so no row is wholly masked
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
        return self.norm(x)


class PretrainedTextEncoder:
    """A frozen CLIP tokenizer and text model from a diffusers model folder (``tokenizer/``
    and ``text_encoder/``) or a folder holding both files directly. Local files only; its
    weights are not part of the studio model's weights (they stay in that folder).

    Deliberately not an ``nn.Module``: assigned to a model attribute it stays out of
    ``state_dict`` and of every checkpoint.
    """

    def __init__(self, path: str | Path) -> None:
        from transformers import CLIPTextModel, CLIPTokenizer

        from studio.core.errors import StudioError

        root = Path(path).expanduser()
        tok_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else root
        enc_dir = root / "text_encoder" if (root / "text_encoder").is_dir() else root
        if not (enc_dir / "config.json").is_file():
            raise StudioError(
                f"No CLIP text encoder at {root}: point 'Pretrained text encoder' at a diffusers "
                "model folder (with text_encoder/ and tokenizer/) or clear the setting to train "
                "a small encoder from the captions."
            )
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
            self.model = CLIPTextModel.from_pretrained(
                str(enc_dir), local_files_only=True, use_safetensors=True
            )
        except (OSError, ValueError) as err:
            raise StudioError(
                f"The text encoder at {root} cannot be read ({err}). It needs the tokenizer "
                "files (vocab.json, merges.txt) and the weights as model.safetensors."
            ) from None
        self.model.requires_grad_(False).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_tokens = int(self.tokenizer.model_max_length)

    def to(self, device: torch.device | str) -> PretrainedTextEncoder:
        self.model.to(device)
        return self

    def unknown_words(self, prompt: str) -> list[str]:
        del prompt
        return []  # byte-pair encoding spells any word

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        tok = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_tokens,
            truncation=True,
            return_tensors="pt",
        )
        ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
        self.model.to(device)
        return self.model(ids, attention_mask=mask).last_hidden_state, mask
