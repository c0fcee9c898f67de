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


def picture(h: int = 24, w: int = 20) -> Any:
    """A seeded random H x W x 3 uint8 image, the canvas image of the prompt tests."""
    import numpy as np

    return np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)


def hole(h: int = 24, w: int = 20) -> Any:
    """An H x W uint8 mask with a square hole (255) at rows 6:14, columns 5:13."""
    import numpy as np

    mask = np.zeros((h, w), np.uint8)
    mask[6:14, 5:13] = 255
    return mask


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


def _tokenizer() -> Any:
    with tempfile.TemporaryDirectory() as tok_src:
        return tiny_tokenizer(Path(tok_src))


def _scheduler(**extra: Any) -> Any:
    """Stable Diffusion's training schedule, as DDIM."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        **extra,
    )


def _unet(in_channels: int = 4, **kw: Any) -> Any:
    """A two-level UNet (plain then cross-attention blocks) for 8x8 latents; ``kw`` adds the
    widths and conditioning of each architecture."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_IMAGE // 2,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        **kw,
    ).eval()


def _xl_unet(cross_attention_dim: int, time_ids: int, pooled: int, in_channels: int = 4) -> Any:
    """An SDXL UNet: ``time_ids`` micro-conditioning ids (6 for the base model: sizes and crop;
    5 for the refiner: sizes, crop and aesthetic score), each embedded in 8, plus the pooled
    text of width ``pooled``."""
    time_dim = 8
    return _unet(
        in_channels,
        block_out_channels=(16, 32),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=cross_attention_dim,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=time_ids * time_dim + pooled,
    )


def build_tiny_sd(
    folder: str | os.PathLike[str], *, inpainting: bool = False, sdxl: bool = False
) -> Path:
    """Save a tiny random Stable Diffusion (or SDXL) pipeline to ``folder`` and return it.

    ``inpainting`` gives the UNet 9 input channels (latents + mask + masked-image latents) and
    saves the inpainting pipeline class, as real inpainting checkpoints do.
    """
    import torch

    folder = Path(folder)
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    text_encoder = _text_encoder(tokenizer, 16)
    in_channels = 9 if inpainting else 4
    scheduler = _scheduler()
    vae = _vae()
    if sdxl:
        from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline

        text_encoder_2 = _text_encoder(tokenizer, 16, projection=True)
        # text_encoder + text_encoder_2 hidden states, concatenated; pooled text of width 16
        unet = _xl_unet(32, 6, 16, in_channels)
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

        unet = _unet(
            in_channels, block_out_channels=(8, 16), attention_head_dim=2, cross_attention_dim=16
        )
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


def build_tiny_sd2(
    folder: str | os.PathLike[str], *, prediction_type: str = "epsilon", inpainting: bool = False
) -> Path:
    """A tiny Stable Diffusion 2.x-shaped pipeline: linear attention projections in the UNet and a
    GELU text encoder (OpenCLIP's activation), so it exports to the SD 2.x single-file layout.

    ``prediction_type`` goes into the scheduler config ("v_prediction" for SD 2.x 768 models).
    """
    import torch
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    folder = Path(folder)
    torch.manual_seed(1)
    tokenizer = _tokenizer()
    text_encoder = _text_encoder(tokenizer, 16)
    text_encoder.config.hidden_act = "gelu"  # saved in config.json; every load builds GELU layers
    unet = _unet(
        9 if inpainting else 4,
        block_out_channels=(8, 16),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=16,
    )
    cls = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = cls(
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(prediction_type=prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sdxl(folder: str | os.PathLike[str], *, inpainting: bool = False) -> Path:
    """A tiny SDXL pipeline whose two text encoders have different widths (16 and 24).

    ``build_tiny_sd(sdxl=True)`` gives both width 16, which a single file cannot represent:
    diffusers tells SDXL's CLIP from its OpenCLIP encoder in a single file by the width, as the
    real ones differ (768 and 1280). ``inpainting`` gives the UNet 9 input channels and saves
    ``StableDiffusionXLInpaintPipeline`` (no aesthetic score), as SDXL inpainting 0.1 is.
    """
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline

    folder = Path(folder)
    torch.manual_seed(2)
    tokenizer = _tokenizer()
    text_encoder = _text_encoder(tokenizer, 16)
    text_encoder_2 = _text_encoder(tokenizer, 24, projection=True)
    text_encoder_2.config.hidden_act = "gelu"
    # both encoders' hidden states; the pooled text of encoder 2
    unet = _xl_unet(16 + 24, 6, 24, 9 if inpainting else 4)
    cls = StableDiffusionXLInpaintPipeline if inpainting else StableDiffusionXLPipeline
    pipe = cls(
        vae=_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        **({"requires_aesthetics_score": False} if inpainting else {}),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sdxl_refiner(folder: str | os.PathLike[str]) -> Path:
    """A tiny SDXL refiner: ONE text encoder (the OpenCLIP-shaped second encoder, width 24, with
    a projection; no CLIP-L), a UNet conditioned on the aesthetic score, saved as the refiner's
    ``StableDiffusionXLImg2ImgPipeline`` with ``text_encoder``/``tokenizer`` null and
    ``requires_aesthetics_score`` true, as stabilityai's refiner folder is.

    The refiner's UNet takes five micro-conditioning ids (original size, crop, aesthetic score)
    instead of the base model's six (original size, crop, target size).
    """
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline

    folder = Path(folder)
    torch.manual_seed(3)
    tokenizer = _tokenizer()
    text_encoder_2 = _text_encoder(tokenizer, 24, projection=True)
    text_encoder_2.config.hidden_act = "gelu"
    unet = _xl_unet(24, 5, 24)  # the one encoder's hidden states and pooled text
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=_vae(),
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def assert_same_tensors(original: dict[str, Any], converted: dict[str, Any]) -> None:
    """The same names, and bit-identical tensors under each."""
    import torch

    assert sorted(converted) == sorted(original)
    differ = [k for k in original if not torch.equal(original[k], converted[k])]
    assert not differ, differ[:5]


def assert_same_weights(a: Any, b: Any) -> None:
    """Two modules hold bit-identical parameters and buffers."""
    assert_same_tensors(
        {k: v.detach() for k, v in a.state_dict().items()},
        {k: v.detach() for k, v in b.state_dict().items()},
    )


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


# -- the original (CompVis / Stability) single-file layout ------------------------------------
#
# diffusers can read this layout (``from_single_file``) but not write it, so the tests write it
# here, from a folder made by ``build_tiny_sd``/``build_tiny_sd2``/``build_tiny_sdxl`` (or
# ``build_tiny_sdxl_refiner``). The
# mapping is the inverse of the one diffusers' converters in ``diffusers.loaders.single_file_utils``
# apply; tests/test_prompt_single_file.py checks that those converters undo it exactly.

_RESNET_LDM = {  # diffusers ResnetBlock2D parameter -> LDM ResBlock parameter (UNet)
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN_LDM = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_UNET_TOP_LDM = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size/crop + pooled-text embedding
    "add_embedding.linear_2": "label_emb.0.2",
}


def _split(key: str, n: int) -> tuple[list[str], str]:
    parts = key.split(".")
    return parts[:n], ".".join(parts[n:])


def _resnet_ldm(rest: str) -> str:
    layer, _, param = rest.rpartition(".")
    return f"{_RESNET_LDM[layer]}.{param}"


def unet_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ``UNet2DConditionModel`` state dict in the LDM ``UNetModel`` names.

    LDM numbers its blocks flat: ``input_blocks.0`` is conv_in, then per down block
    ``layers_per_block`` (resnet [+ attention]) entries and, except after the last block, one
    downsampler entry; ``middle_block`` is resnet, attention, resnet; ``output_blocks`` holds
    ``layers_per_block + 1`` entries per up block, the block's upsampler inside its last entry
    (after the attention where there is one).
    """
    per = config["layers_per_block"]
    per = per[0] if isinstance(per, list) else per
    up_has_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    out: dict[str, Any] = {}
    for key, value in state.items():
        head, _, param = key.rpartition(".")
        if head in _UNET_TOP_LDM:
            new = f"{_UNET_TOP_LDM[head]}.{param}"
        elif key.startswith("down_blocks."):
            (_, b, kind, j), rest = _split(key, 4)
            b, j = int(b), int(j)
            if kind == "resnets":
                new = f"input_blocks.{1 + b * (per + 1) + j}.0.{_resnet_ldm(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + b * (per + 1) + j}.1.{rest}"
            else:  # downsamplers.0.conv.<param>
                new = f"input_blocks.{1 + b * (per + 1) + per}.0.op.{param}"
        elif key.startswith("mid_block."):
            (_, kind, j), rest = _split(key, 3)
            if kind == "resnets":
                new = f"middle_block.{2 * int(j)}.{_resnet_ldm(rest)}"
            else:
                new = f"middle_block.1.{rest}"
        elif key.startswith("up_blocks."):
            (_, b, kind, j), rest = _split(key, 4)
            b, j = int(b), int(j)
            if kind == "resnets":
                new = f"output_blocks.{b * (per + 1) + j}.0.{_resnet_ldm(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{b * (per + 1) + j}.1.{rest}"
            else:  # upsamplers.0.conv.<param>
                slot = 2 if up_has_attn[b] else 1
                new = f"output_blocks.{b * (per + 1) + per}.{slot}.conv.{param}"
        else:
            raise KeyError(f"no LDM name for UNet parameter {key}")
        out[new] = value
    return out


def vae_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ``AutoencoderKL`` state dict in the LDM ``AutoencoderKL`` names.

    The decoder's up blocks are numbered in reverse (LDM's ``up.0`` is the full-resolution one),
    and the mid-block attention is four 1x1 convolutions rather than linear layers.
    """
    n_up = len(config["up_block_types"])
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        parts = key.split(".")
        if parts[1] == "down_blocks":  # encoder.down_blocks.i.(resnets.j|downsamplers.0).…
            i, kind = parts[2], parts[3]
            rest = ".".join(parts[5:])
            if kind == "resnets":
                rest = rest.replace("conv_shortcut", "nin_shortcut")
                new = f"encoder.down.{i}.block.{parts[4]}.{rest}"
            else:
                new = f"encoder.down.{i}.downsample.{rest}"
        elif parts[1] == "up_blocks":
            i, kind = n_up - 1 - int(parts[2]), parts[3]
            rest = ".".join(parts[5:])
            if kind == "resnets":
                rest = rest.replace("conv_shortcut", "nin_shortcut")
                new = f"decoder.up.{i}.block.{parts[4]}.{rest}"
            else:
                new = f"decoder.up.{i}.upsample.{rest}"
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
                new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{rest}"
            else:  # attentions.0.<layer>.<param>, to_out.0 being two parts
                layer, _, param = ".".join(parts[4:]).rpartition(".")
                new = f"{parts[0]}.mid.attn_1.{_VAE_ATTN_LDM[layer]}.{param}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        out[new] = value
    return out


def clip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIP text encoder in the names SD 1.x stored it: its own, under
    ``text_model.`` (which transformers >= 5.6 dropped from ``CLIPTextModel``)."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}


def open_clip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIP text encoder in OpenCLIP's names (SD 2.x, SDXL's second encoder).

    OpenCLIP keeps q, k and v as one ``in_proj`` matrix, names its blocks ``resblocks`` and its
    projection ``text_projection`` with the transposed shape (width x embed).
    """
    plain = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: dict[str, Any] = {}
    fixed = {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.weight": "ln_final.weight",
        "final_layer_norm.bias": "ln_final.bias",
    }
    layer_names = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
        "self_attn.out_proj": "attn.out_proj",
    }
    for key, value in plain.items():
        if key in fixed:
            out[fixed[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key.startswith("encoder.layers."):
            (_, _, n), rest = _split(key, 3)
            layer, _, param = rest.rpartition(".")
            if layer.startswith("self_attn.") and layer.endswith(("q_proj", "k_proj", "v_proj")):
                if layer.endswith("q_proj"):  # q, k, v stacked along the output dimension
                    import torch

                    parts = [plain[f"encoder.layers.{n}.self_attn.{p}_proj.{param}"] for p in "qkv"]
                    out[f"transformer.resblocks.{n}.attn.in_proj_{param}"] = torch.cat(parts)
                continue
            out[f"transformer.resblocks.{n}.{layer_names[layer]}.{param}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for text-encoder parameter {key}")
    return out


def _component(folder: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    sub = folder / name
    weights = sorted(sub.glob("*.safetensors"))
    if len(weights) != 1:
        raise FileNotFoundError(f"expected one safetensors file in {sub}, found {len(weights)}")
    return load_file(str(weights[0])), json.loads((sub / "config.json").read_text("utf-8"))


def original_layout_state_dict(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The tensors of a tiny diffusers folder under their original single-file names.

    The layout follows the folder: SD 1.x (CLIP under ``cond_stage_model.transformer.``), SD 2.x
    (OpenCLIP under ``cond_stage_model.model.``; told by the UNet's linear attention projections,
    ``use_linear_projection``), SDXL (``conditioner.embedders.0.transformer.`` and
    ``conditioner.embedders.1.model.``) or the SDXL refiner (no ``text_encoder/``: its one
    OpenCLIP encoder under ``conditioner.embedders.0.model.``, and no ``embedders.1``).
    """
    folder = Path(folder)
    unet, unet_cfg = _component(folder, "unet")
    vae, vae_cfg = _component(folder, "vae")
    out = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(unet, unet_cfg).items()}
    out.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(vae, vae_cfg).items()})
    if not (folder / "text_encoder").is_dir():  # the SDXL refiner: OpenCLIP bigG alone
        text_2, _ = _component(folder, "text_encoder_2")
        prefix = "conditioner.embedders.0.model."
        out.update({f"{prefix}{k}": v for k, v in open_clip_to_ldm(text_2).items()})
        return out
    text, _ = _component(folder, "text_encoder")
    if (folder / "text_encoder_2").is_dir():
        text_2, _ = _component(folder, "text_encoder_2")
        prefix = "conditioner.embedders."
        out.update({f"{prefix}0.transformer.{k}": v for k, v in clip_to_ldm(text).items()})
        out.update({f"{prefix}1.model.{k}": v for k, v in open_clip_to_ldm(text_2).items()})
    elif unet_cfg.get("use_linear_projection"):  # SD 2.x: OpenCLIP, linear attention projections
        out.update({f"cond_stage_model.model.{k}": v for k, v in open_clip_to_ldm(text).items()})
    else:
        out.update({f"cond_stage_model.transformer.{k}": v for k, v in clip_to_ldm(text).items()})
    return out


def export_original_layout(
    folder: str | os.PathLike[str], out_file: str | os.PathLike[str], *, dtype: Any = None
) -> Path:
    """Write a tiny diffusers folder as ONE original-layout ``.safetensors`` checkpoint.

    ``dtype`` (a torch dtype) casts every tensor, e.g. to write an fp16 file.
    """
    from safetensors.torch import save_file

    tensors = original_layout_state_dict(folder)
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    out_file = Path(out_file)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_file))
    return out_file


def export_pickled_checkpoint(
    folder: str | os.PathLike[str], out_file: str | os.PathLike[str]
) -> Path:
    """Write a tiny diffusers folder as ONE original-layout pickled ``.ckpt``, shaped as the
    original training code saved them: ``{"state_dict": tensors, "global_step": int}``."""
    import torch

    out_file = Path(out_file)
    torch.save({"state_dict": original_layout_state_dict(folder), "global_step": 1}, out_file)
    return out_file


def config_only_copy(folder: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """A diffusers folder without its weights: the local config a single file loads with."""
    import shutil

    return Path(
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    )
