"""Tiny Stable Diffusion pipelines built from random components, for tests. No downloads.

Import as ``from prompt_fixtures import build_tiny_sd`` (``tests/`` is on ``sys.path``).

``build_tiny_sd(folder)`` writes a complete diffusers folder (model_index.json, unet, vae,
text_encoder, tokenizer, scheduler) whose weights come from a fixed seed, so two builds are
identical. The tokenizer is a real byte-level BPE CLIP tokenizer over a tiny vocabulary that this
module writes itself. Sizes: UNet blocks (8, 16) (SDXL: (16, 32)), latent 8x8 for a 16 px image
(the VAE downsamples by 2), text width 16-32.

Helpers for the safety tests live here too: ``write_pickle_bomb`` (a pickle whose payload would
create a canary file), ``write_safetensors_header`` (hand-built headers for classification and
hostile-header tests).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Any

TINY_IMAGE = 16  # pixels; the tiny VAE has two blocks, so latents are TINY_IMAGE // 2
_SPECIAL = ("<|startoftext|>", "<|endoftext|>")
_WORDS = ("red", "blue", "green", "circle", "square", "triangle", "a", "photo", "of")


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2's table)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tiny_tokenizer_files(folder: Path) -> Path:
    """vocab.json + merges.txt for a CLIP BPE tokenizer that spells a few whole words."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    merges: list[str] = []
    for word in _WORDS:  # merge left to right: "r e" -> "re", "re d</w>" -> "red</w>"
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = f"{pieces[0]} {pieces[1]}"
            merged = pieces[0] + pieces[1]
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(merged, len(vocab))
            pieces = [merged, *pieces[2:]]
    for token in _SPECIAL:
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    return folder


def tiny_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    write_tiny_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def _text_encoder(tokenizer: Any, hidden: int, *, projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_IMAGE,
    ).eval()


def build_tiny_sd(
    folder: str | os.PathLike[str], *, inpainting: bool = False, sdxl: bool = False
) -> Path:
    """Save a tiny random Stable Diffusion (or SDXL) pipeline to ``folder`` and return it.

    ``inpainting`` gives the UNet 9 input channels (latents + mask + masked-image latents) and
    saves the inpainting pipeline class, as real inpainting checkpoints do.
    """
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel

    folder = Path(folder)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tok_src:
        tokenizer = tiny_tokenizer(Path(tok_src))
    text_encoder = _text_encoder(tokenizer, 16)
    in_channels = 9 if inpainting else 4
    common: dict[str, Any] = dict(
        sample_size=TINY_IMAGE // 2,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
    )
    vae = _vae()
    if sdxl:
        from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline

        text_encoder_2 = _text_encoder(tokenizer, 16, projection=True)
        time_dim = 8
        unet = UNet2DConditionModel(
            **common,
            block_out_channels=(16, 32),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            cross_attention_dim=32,  # text_encoder + text_encoder_2 hidden states, concatenated
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            # six size/crop ids, each embedded in time_dim, plus the pooled text (16)
            projection_class_embeddings_input_dim=6 * time_dim + 16,
        ).eval()
        cls = StableDiffusionXLInpaintPipeline if inpainting else StableDiffusionXLPipeline
        kwargs: dict[str, Any] = {}
        if inpainting:
            kwargs["requires_aesthetics_score"] = False
        pipe = cls(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
            **kwargs,
        )
    else:
        from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

        unet = UNet2DConditionModel(
            **common, block_out_channels=(8, 16), attention_head_dim=2, cross_attention_dim=16
        ).eval()
        cls = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
        pipe = cls(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# -- hostile files ----------------------------------------------------------------------------


class _TouchOnUnpickle:
    """Unpickling this calls ``pathlib.Path(canary).touch()``: a stand-in for any payload."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self) -> tuple[Any, ...]:
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.canary),))


def write_pickle_bomb(path: Path, canary: Path, *, torch_zip: bool = True) -> Path:
    """A checkpoint whose unpickling would create ``canary``. Nothing here unpickles it.

    ``torch_zip`` writes it with ``torch.save`` (zip with data.pkl, as ``.ckpt``/``.pt`` files
    are); otherwise a bare pickle stream (protocol 2, starting with 0x80).
    """
    payload = {"state_dict": {"w": _TouchOnUnpickle(canary)}}
    if torch_zip:
        import torch

        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


def write_safetensors_header(
    path: Path, tensors: dict[str, tuple[str, list[int]]], *, data: bool = True
) -> Path:
    """A safetensors file from a spec ``{name: (dtype, shape)}``, zero-filled.

    With ``data=False`` only the header is written (a truncated file).
    """
    sizes = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "U8": 1}
    header: dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        if data:
            fh.write(b"\0" * offset)
    return path
