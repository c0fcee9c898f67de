"""``studio export`` for the pixel diffusion families: diffusers folders and single files.

``diffusers`` writes the EMA network in diffusers' own layout, so plain diffusers loads it:

- ``unet/`` (``UNet2DModel``; ``UNet2DConditionModel`` for captions) or ``transformer/``
  (``DiTTransformer2DModel``; ``PixArtTransformer2DModel`` for captions), and ``scheduler/``
  (the training ``DDPMScheduler``: any diffusers scheduler loads from it, DDIM included).
- ``model_index.json``: ``DDPMPipeline`` for a UNet (which samples an unconditional model
  directly; a class-conditional one loads there but its call takes no label), ``DiTPipeline``
  with no VAE for a pixel DiT (load it with ``vae=None``). A caption model has none: no
  diffusers pipeline reads Studio's text encoder.
- ``class_names.json`` for a class-conditional model: the names in label order, the null class
  of classifier-free guidance (label ``num_classes``) and the default guidance.
- ``text_encoder/`` for a caption model trained with its own small encoder: its EMA weights
  (``model.safetensors``), its shape and tokenizer rules (``config.json``) and the vocabulary
  (``vocabulary.json``), enough to rebuild it in plain torch (see :func:`text_usage`).

``safetensors`` writes ``model.safetensors`` (the EMA network under ``unet.`` or
``transformer.``, the text encoder under ``text_encoder.``) and ``config.json`` (the diffusers
configs of network and scheduler, the family's settings, class names, vocabulary).

The loops in the usage text are what the studio's samplers do (``ddpm.DDPM.sample_iter``,
``samplers.denoise_iter``): noise drawn first on a CPU generator, then one (batched, when
guided) network call and one scheduler step per timestep, the step given the same generator.
``tests/test_export.py`` runs them in an interpreter that never imports the studio and checks
the images are bit-for-bit the studio's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import diffusers
from torch import nn

from studio.core import atomic
from studio.models.export import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ExportContext,
    ExportNotes,
    cpu_tensors,
    export_saved_layout,
    save_tensors,
)

CLASS_NAMES_FILE = "class_names.json"
TEXT_FOLDER = "text_encoder"
VOCABULARY_FILE = "vocabulary.json"
WORD_PATTERN = r"[^\W_]+(?:'[^\W_]+)?"


def save_network(net: nn.Module, folder: Path) -> None:
    """A diffusers model's ``save_pretrained`` folder (its config and safetensors weights)."""
    weights = cpu_tensors(net.state_dict())
    net.save_pretrained(folder, safe_serialization=True, state_dict=weights)  # type: ignore[operator]
    for path in folder.iterdir():
        atomic.give_ordinary_mode(path)


def _network(model: Any) -> tuple[str, nn.Module]:
    """The EMA network as diffusers' own class and its folder name (unet / transformer)."""
    ema = model.ema_unet if hasattr(model, "ema_unet") else model.ema["unet"]
    if model.uses_dit():
        return "transformer", ema.net
    return "unet", ema


def class_record(model: Any, context: ExportContext) -> dict[str, Any]:
    nc = int(getattr(model.config, "num_classes", 0))
    names = list(context.class_names)[:nc] if nc else []
    names += [str(i) for i in range(len(names), nc)]
    return {
        "class_names": names,
        "null_class": nc,
        "guidance": float(model.config.guidance),
        "note": "labels are indices into class_names; the null class (index num_classes) is "
        "the unconditional model of classifier-free guidance: "
        "out = uncond + guidance * (cond - uncond)",
    }


def _text_record(model: Any) -> dict[str, Any] | None:
    """The small text encoder's shape and tokenizer rules, or None (a pretrained CLIP)."""
    if getattr(model, "text_encoder", None) is None:
        return None
    c = model.config
    return {
        "architecture": "studio small text encoder: token + position embeddings, pre-norm "
        "torch.nn.TransformerEncoderLayer blocks (feed-forward 2 x dim, ReLU, no dropout), "
        "a final LayerNorm",
        "dim": c.text_dim,
        "layers": c.text_layers,
        "heads": c.text_heads,
        "max_tokens": c.max_tokens,
        "vocab_size": len(model.tokenizer),
        "tokenizer": {
            "lowercase": True,
            "word_pattern": WORD_PATTERN,
            "bos": "<bos>",
            "unknown": "<unk>",
            "padding": "<pad>",
            "rule": "ids = [<bos>] + [vocabulary.index(w) or <unk> for each word], cut to "
            "max_tokens, padded with <pad> (id 0) to the longest prompt; mask = 1 on real tokens",
        },
        "unet_inputs": "encoder_hidden_states = the encoder's output, encoder_attention_mask = "
        "mask; a UNet also takes class_labels = the mean of the output over the mask",
    }


def export_diffusion(
    model: Any, folder: Path, fmt: str, context: ExportContext, caption: bool = False
) -> ExportNotes:
    """The ``diffusers`` or ``safetensors`` export of a pixel diffusion model (``caption``: the
    text family, whose network reads a prompt)."""
    folder = Path(folder)
    name, net = _network(model)
    nc = int(getattr(model.config, "num_classes", 0)) if not caption else 0
    text = _text_record(model) if caption else None
    if fmt == "safetensors":
        return _export_single(model, folder, name, net, nc, text, context)
    if fmt != "diffusers":
        raise ValueError(f"{model.info.display_name} does not export as {fmt}")
    save_network(net, folder / name)
    model.scheduler.save_pretrained(folder / "scheduler")
    cls = type(net).__name__
    if not caption:
        index: dict[str, Any] = {
            "_class_name": "DiTPipeline" if name == "transformer" else "DDPMPipeline",
            "_diffusers_version": diffusers.__version__,
            name: ["diffusers", cls],
            "scheduler": ["diffusers", "DDPMScheduler"],
        }
        if name == "transformer":
            index["vae"] = [None, None]  # pixel space: no VAE (load with vae=None)
        atomic.write_json(folder / "model_index.json", index)
    if nc:
        atomic.write_json(folder / CLASS_NAMES_FILE, class_record(model, context))
    not_included = _write_text_encoder(model, folder, text) if caption else []
    details = []
    if nc and name == "unet":
        details.append(
            "`DDPMPipeline.from_pretrained` loads this folder (`pipe.unet`, `pipe.scheduler`), "
            "but the pipeline's call passes no class label: sample with the loop above."
        )
    if name == "transformer" and not caption:
        details.append(
            "`DiffusionPipeline.from_pretrained(folder, vae=None)` loads the components "
            "(`pipe.transformer`, `pipe.scheduler`); diffusers' DiT pipeline decodes latents "
            "with a VAE, which a pixel model has not: sample with the loop above."
        )
    if model.uses_dit() and not caption:
        details.append(
            "DiT always takes a class label: "
            + (
                f"the null class is label {nc}."
                if nc
                else "an unconditional model has one class, label 0, always given."
            )
        )
    layout = f"`{name}/` ({cls}, EMA weights) and `scheduler/` (DDPMScheduler) in diffusers' layout"
    if not caption:
        layout += ", `model_index.json`"
    if nc:
        layout += f", `{CLASS_NAMES_FILE}` (class names, null class, default guidance)"
    if text is not None:
        layout += ", `text_encoder/` (weights, config, vocabulary)"
    return ExportNotes(
        layout=layout + ".",
        usage=usage_text(model, name, cls, nc, caption, text),
        not_included=tuple(not_included),
        details=tuple(details),
    )


def _write_text_encoder(model: Any, folder: Path, text: dict[str, Any] | None) -> list[str]:
    """A caption model's small text encoder as ``text_encoder/`` (EMA weights, config,
    vocabulary); returns the card's lines on what does not carry over."""
    if text is None:
        return [
            "The text encoder: the run read a pretrained CLIP text encoder, frozen, from "
            f"{model.config.text_encoder_path}; load it from there (CLIPTextModel and "
            "CLIPTokenizer, padding to the tokenizer's max length)."
        ]
    encoder = model.ema["text"]
    (folder / TEXT_FOLDER).mkdir()
    save_tensors(
        folder / TEXT_FOLDER / WEIGHTS_FILE,
        cpu_tensors(encoder.state_dict()),
        {"format": "studio-small-text-encoder"},
    )
    atomic.write_json(folder / TEXT_FOLDER / CONFIG_FILE, text)
    atomic.write_json(folder / TEXT_FOLDER / VOCABULARY_FILE, list(model.tokenizer.itos))
    return [
        "The text encoder's code: Studio's small word-level encoder is no diffusers or "
        "transformers class. Its weights, shape, tokenizer rules and vocabulary are in "
        "text_encoder/, enough to rebuild it in plain torch (the usage above does)."
    ]


def export_latent(
    model: Any,
    folder: Path,
    fmt: str,
    context: ExportContext,
    vae: nn.Module | None,
    caption: bool = False,
) -> ExportNotes:
    """The ``diffusers`` or ``safetensors`` export of a latent diffusion model, whose
    ``save()`` already writes a diffusers folder (network, scheduler, ``vae/`` when the
    autoencoder is a diffusers model, ``model_index.json``): that layout without the studio's
    own weights file, plus class names or the small text encoder; ``vae`` is the autoencoder
    as a diffusers model, or None (its decoder stays in the studio)."""
    folder = Path(folder)
    name, net = _network(model)
    nc = int(getattr(model.config, "num_classes", 0)) if not caption else 0
    text = _text_record(model) if caption else None
    scale = float(model.latent_scale())
    if fmt == "safetensors":
        return _export_single(model, folder, name, net, nc, text, context, vae, scale)
    if fmt != "diffusers":
        raise ValueError(f"{model.info.display_name} does not export as {fmt}")
    export_saved_layout(model, folder, skip=(WEIGHTS_FILE,))
    if nc:
        atomic.write_json(folder / CLASS_NAMES_FILE, class_record(model, context))
    not_included = _write_text_encoder(model, folder, text) if caption else []
    cls = type(net).__name__
    _, channels, side, _ = model.sample_shape(1)
    shape = f"n, {channels}, {side}, {side}"
    if vae is not None:
        finish = [
            "from diffusers import AutoencoderKL"
            if type(vae).__name__ == "AutoencoderKL"
            else f"from diffusers import {type(vae).__name__}",
            f'vae = {type(vae).__name__}.from_pretrained("EXPORT", subfolder="vae").eval()',
            "with torch.no_grad():  # x: the scaled latents",
            "    x = vae.decode(x / vae.config.scaling_factor).sample",
            IMAGES_LINE,
        ]
    else:
        finish = [
            f"# x: the scaled latents; the images are the autoencoder run's decoder applied "
            f"to x / {scale!r}",
        ]
        not_included.append(
            f"The autoencoder ({model.config.autoencoder}): its family writes no diffusers "
            "model, so the latents are decoded by that run in Studio; export it too "
            f"(the scaling factor, {scale!r}, is `_studio_scaling_factor` in model_index.json)."
        )
    details = [
        "`model_index.json` lists the components; no diffusers pipeline takes them under "
        "these names, so load them one by one and sample with the loop above.",
        f"The latents are the autoencoder's times the scaling factor {scale!r} "
        "(`vae/config.json`'s `scaling_factor` where there is a `vae/`): divide before decoding.",
    ]
    if model.uses_dit() and not caption:
        details.append(
            "DiT always takes a class label: "
            + (
                f"the null class is label {nc}."
                if nc
                else "an unconditional model has one class, label 0, always given."
            )
        )
    layout = (
        f"`{name}/` ({cls}, EMA weights), `scheduler/` (DDPMScheduler)"
        + (f", `vae/` ({type(vae).__name__}, with the scaling factor)" if vae is not None else "")
        + ", `model_index.json` in diffusers' layout"
    )
    if nc:
        layout += f", `{CLASS_NAMES_FILE}` (class names, null class, default guidance)"
    if text is not None:
        layout += ", `text_encoder/` (weights, config, vocabulary)"
    return ExportNotes(
        layout=layout + ".",
        usage=usage_text(model, name, cls, nc, caption, text, shape, finish),
        not_included=tuple(not_included),
        details=tuple(details),
    )


def _export_single(
    model: Any,
    folder: Path,
    name: str,
    net: nn.Module,
    nc: int,
    text: dict[str, Any] | None,
    context: ExportContext,
    vae: nn.Module | None = None,
    scale: float | None = None,
) -> ExportNotes:
    tensors = cpu_tensors(net.state_dict(), f"{name}.")
    if text is not None:
        tensors.update(cpu_tensors(model.ema["text"].state_dict(), f"{TEXT_FOLDER}."))
    if vae is not None:
        tensors.update(cpu_tensors(vae.state_dict(), "vae."))
    save_tensors(folder / WEIGHTS_FILE, tensors, {"family": model.info.key, "weights": "ema"})
    config: dict[str, Any] = {
        "family": model.info.key,
        "network": {"name": name, "class": type(net).__name__, "config": dict(net.config)},
        "scheduler": dict(model.scheduler.config),
        "settings": model.config.to_dict(),
    }
    if nc:
        config["classes"] = class_record(model, context)
    if text is not None:
        config["text_encoder"] = {**text, "vocabulary": list(model.tokenizer.itos)}
    if scale is not None:
        config["scaling_factor"] = scale
    if vae is not None:
        vae_config = {**dict(vae.config), "scaling_factor": scale}  # type: ignore[arg-type]
        config["vae"] = {"class": type(vae).__name__, "config": vae_config}
    atomic.write_json(folder / CONFIG_FILE, json.loads(json.dumps(config, default=_plain)))
    usage = (
        "import json, diffusers\n"
        "from safetensors.torch import load_file\n\n"
        f'cfg = json.load(open("{CONFIG_FILE}"))\n'
        f'weights = load_file("{WEIGHTS_FILE}")\n'
        'net = getattr(diffusers, cfg["network"]["class"]).from_config(cfg["network"]["config"])\n'
        f"net.load_state_dict({{k[{len(name) + 1}:]: v for k, v in weights.items() "
        f'if k.startswith("{name}.")}})\n'
        'scheduler = diffusers.DDIMScheduler.from_config(cfg["scheduler"])\n'
        "# then sample as in the diffusers export's loop (studio export --format diffusers)"
    )
    return ExportNotes(
        layout=f"`{WEIGHTS_FILE}`: the EMA network (`{name}.*`, diffusers' "
        f"{type(net).__name__} names)"
        + (" and the text encoder (`text_encoder.*`)" if text is not None else "")
        + (f", the autoencoder (`vae.*`, {type(vae).__name__})" if vae is not None else "")
        + f"; `{CONFIG_FILE}`: the network's and the scheduler's diffusers configs and the "
        "run's model settings"
        + (", class names and null class" if nc else "")
        + (", the text encoder's shape and vocabulary" if text is not None else "")
        + (", the latent scaling factor" if scale is not None else "")
        + (" and the autoencoder's diffusers config" if vae is not None else "")
        + ".",
        usage=usage,
    )


def _plain(value: Any) -> Any:
    """JSON for the odd values diffusers configs hold (tuples are fine; frozen dicts, paths)."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "items"):
        return dict(value.items())
    return str(value)


IMAGES_LINE = "images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)"


def usage_text(
    model: Any,
    name: str,
    cls: str,
    nc: int,
    caption: bool,
    text: dict[str, Any] | None,
    shape: str | None = None,
    finish: Sequence[str] | None = None,
) -> str:
    """Plain diffusers that samples the export as the studio's DDIM sampler does (``shape``
    and ``finish``, the lines after the loop: a latent model's grid and its decoding)."""
    c = model.config
    shape = shape or f"n, {c.channels}, {c.resolution}, {c.resolution}"
    if caption:
        return _caption_usage(model, name, cls, shape, text, finish)
    lines = [
        "import torch",
        f"from diffusers import DDIMScheduler, {cls}",
        "",
        f'net = {cls}.from_pretrained("EXPORT", subfolder="{name}").eval()',
        'scheduler = DDIMScheduler.from_pretrained("EXPORT", subfolder="scheduler")',
        "n, steps, seed = 4, 50, 0",
    ]
    if nc:
        lines += [
            f"labels = torch.arange(n) % {nc}  # indices into class_names.json",
            f"null = torch.full_like(labels, {nc})  # the null class",
            f"guidance = {float(c.guidance)}",
        ]
    elif name == "transformer":
        lines.append(
            "label0 = torch.zeros(n, dtype=torch.long)  # an unconditional DiT's one class"
        )
    lines += [
        "g = torch.Generator().manual_seed(seed)",
        "scheduler.set_timesteps(steps)",
        f"x = torch.randn(({shape}), generator=g) * scheduler.init_noise_sigma",
        "with torch.no_grad():",
        "    for t in scheduler.timesteps:",
        "        x_in = scheduler.scale_model_input(x, t)",
    ]
    if nc:
        lines += [
            "        both = net(torch.cat([x_in, x_in]), timestep=t.expand(2 * n),",
            "                   class_labels=torch.cat([labels, null])).sample",
            "        cond, uncond = both.chunk(2)",
            "        out = uncond + guidance * (cond - uncond)",
        ]
    elif name == "transformer":
        lines.append("        out = net(x_in, timestep=t.expand(n), class_labels=label0).sample")
    else:
        lines.append("        out = net(x_in, timestep=t.expand(n)).sample")
    lines += [
        "        x = scheduler.step(out, t, x, generator=g).prev_sample",
        *(finish if finish is not None else [IMAGES_LINE]),
    ]
    if name == "unet" and not nc and finish is None:
        lines += [
            "",
            "# or diffusers' own pipeline (DDPM's full chain, as studio sample --sampler ddpm):",
            "from diffusers import DDPMPipeline",
            'pil_images = DDPMPipeline.from_pretrained("EXPORT")(batch_size=4).images',
        ]
    return "\n".join(lines)


def _caption_usage(
    model: Any,
    name: str,
    cls: str,
    shape: str,
    text: dict[str, Any] | None,
    finish: Sequence[str] | None = None,
) -> str:
    c = model.config
    lines = [
        "import json, re, torch",
        "from diffusers import DDIMScheduler, " + cls,
        "from safetensors.torch import load_file",
        "from torch import nn",
        "",
        f'net = {cls}.from_pretrained("EXPORT", subfolder="{name}").eval()',
        'scheduler = DDIMScheduler.from_pretrained("EXPORT", subfolder="scheduler")',
    ]
    if text is None:
        lines += ["# encode(prompts) -> (hidden, mask): the CLIP text encoder the run read"]
    else:
        lines += [
            'cfg = json.load(open("EXPORT/text_encoder/config.json"))',
            'vocab = json.load(open("EXPORT/text_encoder/vocabulary.json"))',
            "",
            "class TextEncoder(nn.Module):  # Studio's small encoder, rebuilt",
            "    def __init__(self, n, dim, layers, heads, max_tokens):",
            "        super().__init__()",
            "        self.token = nn.Embedding(n, dim)",
            "        self.position = nn.Parameter(torch.zeros(max_tokens, dim))",
            "        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(",
            "            dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)",
            "            for _ in range(layers))",
            "        self.norm = nn.LayerNorm(dim)",
            "    def forward(self, ids, mask):",
            "        x = self.token(ids) + self.position[: ids.shape[1]]",
            "        for layer in self.layers:",
            "            x = layer(x, src_key_padding_mask=mask == 0)",
            "        return self.norm(x)",
            "",
            'encoder = TextEncoder(len(vocab), cfg["dim"], cfg["layers"], cfg["heads"],',
            '                      cfg["max_tokens"]).eval()',
            'encoder.load_state_dict(load_file("EXPORT/text_encoder/model.safetensors"))',
            "index = {w: i for i, w in enumerate(vocab)}",
            "",
            "def encode(prompts):",
            '    rows = [[index["<bos>"]] + [index.get(w, index["<unk>"]) for w in',
            '            re.findall(cfg["tokenizer"]["word_pattern"], p.lower())] for p in prompts]',
            '    rows = [r[: cfg["max_tokens"]] for r in rows]',
            "    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)",
            "    mask = torch.zeros_like(ids)",
            "    for i, r in enumerate(rows):",
            "        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1",
            "    with torch.no_grad():",
            "        return encoder(ids, mask), mask",
        ]
    lines += [
        "",
        'prompt = "a caption"',
        "n, steps, seed = 4, 50, 0",
        f"guidance = {float(c.guidance)}",
        'hidden, mask = encode([prompt] * n + [""] * n)  # the prompt, then the empty prompt',
        "kw = {'encoder_hidden_states': hidden, 'encoder_attention_mask': mask}",
    ]
    if name == "unet":
        lines += [
            "m = mask.unsqueeze(-1).float()",
            "kw['class_labels'] = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)  # pooled prompt",
        ]
    else:
        lines += ["kw['added_cond_kwargs'] = {'resolution': None, 'aspect_ratio': None}"]
    lines += [
        "g = torch.Generator().manual_seed(seed)",
        "scheduler.set_timesteps(steps)",
        f"x = torch.randn(({shape}), generator=g) * scheduler.init_noise_sigma",
        "with torch.no_grad():",
        "    for t in scheduler.timesteps:",
        "        x_in = scheduler.scale_model_input(x, t)",
        "        both = net(torch.cat([x_in, x_in]), timestep=t.expand(2 * n), **kw).sample",
        "        cond, uncond = both.chunk(2)",
        "        out = uncond + guidance * (cond - uncond)",
        "        x = scheduler.step(out, t, x, generator=g).prev_sample",
        *(finish if finish is not None else [IMAGES_LINE]),
    ]
    return "\n".join(lines)
