"""Generation settings inside PNG files.

Every generated PNG carries its settings twice: the full metadata as JSON in an iTXt chunk
keyed ``studio`` (what :func:`read_png_metadata` reads back), and a human summary in a text
chunk keyed ``parameters``, in the layout other Stable Diffusion tools write and read::

    a red fox in the snow
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 7, Size: 512x512, Model: sd15

Reading is safe on any file: only the text chunks are parsed, never executed; a PNG written
by another tool that has only ``parameters`` is parsed from that summary as far as it goes.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from studio.core.atomic import atomic_path

KEY = "studio"
HUMAN_KEY = "parameters"
MAX_TEXT = 1 << 20  # a settings chunk bigger than 1 MiB is not ours

_SAMPLER_NAMES = {  # the other tools' sampler names -> ours
    "ddim": "ddim",
    "euler": "euler",
    "euler a": "euler_a",
    "euler ancestral": "euler_a",
    "dpm++ 2m": "dpmpp_2m",
    "dpm++ 2m karras": "dpmpp_2m",
    "unipc": "unipc",
}


def human_summary(meta: dict[str, Any]) -> str:
    """The ``parameters`` text for ``meta`` (see the module docstring)."""
    lines = [str(meta.get("prompt", ""))]
    if meta.get("negative_prompt"):
        lines.append(f"Negative prompt: {meta['negative_prompt']}")
    fields = [
        ("Steps", meta.get("steps")),
        ("Sampler", meta.get("scheduler_label", meta.get("scheduler"))),
        ("CFG scale", meta.get("guidance")),
        ("Seed", meta.get("seed")),
        ("Size", f"{meta['width']}x{meta['height']}" if "width" in meta and "height" in meta else None),
        ("Model", meta.get("model_name", meta.get("model"))),
        ("Mode", meta.get("mode")),
    ]
    if meta.get("mode") in ("img2img", "inpaint"):
        fields.append(("Denoising strength", meta.get("strength")))
    if meta.get("mode") == "inpaint":
        fields.append(("Mask blur", meta.get("mask_blur")))
    fields.append(("Version", f"studio {meta['studio_version']}" if "studio_version" in meta else None))
    lines.append(", ".join(f"{k}: {_plain(v)}" for k, v in fields if v is not None))
    return "\n".join(lines)


def _plain(value: Any) -> str:
    return str(value).replace(",", " ").replace("\n", " ")


def png_bytes(image: np.ndarray, meta: dict[str, Any] | None, compress_level: int = 4) -> bytes:
    """``image`` (H x W x 3 uint8) encoded as PNG with ``meta`` in its text chunks."""
    info = PngImagePlugin.PngInfo()
    if meta is not None:
        info.add_itxt(KEY, json.dumps(meta, sort_keys=True, default=_jsonable), zip=True)
        info.add_text(HUMAN_KEY, human_summary(meta))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        buf, format="PNG", pnginfo=info, compress_level=compress_level
    )
    return buf.getvalue()


def write_png(path: str | os.PathLike[str], image: np.ndarray, meta: dict[str, Any] | None) -> Path:
    """Write ``image`` with ``meta`` to ``path`` atomically (a crash never leaves half a PNG)."""
    data = png_bytes(image, meta)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_png_text(source: str | os.PathLike[str] | bytes) -> dict[str, str]:
    """The PNG's text chunks (tEXt, zTXt, iTXt), or {} for anything that is not a PNG."""
    stream: Any = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(stream) as img:
            if img.format != "PNG":
                return {}
            # Chunks after the image data are read only once the pixels are; ``text`` does both.
            text = img.text if hasattr(img, "text") else {}
            return {str(k): str(v) for k, v in text.items() if len(str(v)) <= MAX_TEXT}
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return {}


def read_png_metadata(source: str | os.PathLike[str] | bytes) -> dict[str, Any] | None:
    """The settings a PNG was generated with, or None when it carries none.

    Studio's own JSON comes back exactly as written; a PNG from another tool with only a
    ``parameters`` summary gives what that summary holds (prompt, negative prompt, steps,
    sampler, guidance, seed, size) with ``"source": "parameters"``.
    """
    text = read_png_text(source)
    raw = text.get(KEY)
    if raw is not None:
        try:
            meta = json.loads(raw)
        except ValueError:
            meta = None
        if isinstance(meta, dict):
            return meta
    if HUMAN_KEY in text:
        return parse_parameters(text[HUMAN_KEY])
    return None


_FIELD = re.compile(r"\s*([A-Za-z][A-Za-z0-9 _\-]*):\s*([^,]*)")


def parse_parameters(text: str) -> dict[str, Any] | None:
    """Parse a ``parameters`` summary (see the module docstring); None if it has no settings."""
    lines = text.strip().split("\n")
    if not lines:
        return None
    settings_line = lines[-1] if re.match(r"\s*Steps:", lines[-1]) else ""
    body = lines[:-1] if settings_line else lines
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    meta: dict[str, Any] = {
        "prompt": "\n".join(prompt_lines).strip(),
        "negative_prompt": "\n".join(negative_lines).strip(),
        "source": "parameters",
    }
    fields = {m.group(1).strip().lower(): m.group(2).strip() for m in _FIELD.finditer(settings_line)}
    try:
        if "steps" in fields:
            meta["steps"] = int(fields["steps"])
        if "cfg scale" in fields:
            meta["guidance"] = float(fields["cfg scale"])
        if "seed" in fields:
            meta["seed"] = int(fields["seed"])
        if "size" in fields:
            w, h = fields["size"].lower().split("x")
            meta["width"], meta["height"] = int(w), int(h)
        if "denoising strength" in fields:
            meta["strength"] = float(fields["denoising strength"])
    except ValueError:
        pass  # keep what parsed
    sampler = _SAMPLER_NAMES.get(fields.get("sampler", "").lower())
    if sampler:
        meta["scheduler"] = sampler
    if "model" in fields:
        meta["model"] = fields["model"]
    if "mode" in fields and fields["mode"] in ("txt2img", "img2img", "inpaint"):
        meta["mode"] = fields["mode"]
    if not meta["prompt"] and len(meta) == 3:
        return None
    return meta
