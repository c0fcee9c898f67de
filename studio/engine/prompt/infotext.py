"""The ``parameters`` text ("infotext") that AUTOMATIC1111's web UI writes into PNGs.

Written and read the way A1111 does it (``modules/infotext_utils.py``)::

    a red fox in the snow
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 7, Size: 512x512, Model: sd15

The last line holds ``key: value`` pairs separated by commas; a value that holds a comma, a
colon or a line break is written as a JSON string in double quotes (A1111's ``quote``), so
``ControlNet 0: "Module: canny, Model: x"`` is one pair. Only what this studio can generate
with is restored; everything else is listed in ``unrestored`` so the user hears about it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from studio.engine.prompt.request import MAX_SEED

#: Our scheduler keys -> the sampler names A1111 writes.
SAMPLER_NAMES = {
    "ddim": "DDIM",
    "euler": "Euler",
    "euler_a": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "unipc": "UniPC",
}
_SAMPLERS_READ = {name.lower(): key for key, name in SAMPLER_NAMES.items()}
_SAMPLERS_READ["euler ancestral"] = "euler_a"  # what Studio wrote before
#: Sampler-name suffixes that old A1111 versions used for the noise schedule.
_SCHEDULE_SUFFIXES = (" karras", " exponential", " sgm uniform")
#: Schedule types that mean "the sampler's own schedule", which is what this studio runs.
_PLAIN_SCHEDULES = {"automatic", "uniform"}
#: Keys that describe the file rather than a setting, read without comment.
_INFORMATIONAL = {"version", "model hash"}

# A1111's re_param_code: a key, then a quoted value (with \" escapes) or anything up to a comma.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_SHOWN_VALUE = 60  # characters of an unrestored value kept for the message


def quote(value: Any) -> str:
    """A1111's ``quote``: a JSON string when the value holds a comma, colon or line break."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """A1111's ``unquote``: the JSON string's value, or the text itself."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def format_infotext(meta: dict[str, Any]) -> str:
    """The ``parameters`` text for a generation's metadata, as A1111 writes it."""
    scheduler = meta.get("scheduler")
    sampler = SAMPLER_NAMES.get(str(scheduler), meta.get("scheduler_label", scheduler))
    size = None
    if "width" in meta and "height" in meta:
        size = f"{meta['width']}x{meta['height']}"
    fields: list[tuple[str, Any]] = [
        ("Steps", meta.get("steps")),
        ("Sampler", sampler),
        ("CFG scale", meta.get("guidance")),
        ("Seed", meta.get("seed")),
        ("Size", size),
        ("Model", meta.get("model_name", meta.get("model"))),
    ]
    if meta.get("mode") in ("img2img", "inpaint"):
        fields.append(("Denoising strength", meta.get("strength")))
    if meta.get("mode") == "inpaint":
        fields.append(("Mask blur", meta.get("mask_blur")))
    fields.append(("Mode", meta.get("mode")))
    if "studio_version" in meta:
        fields.append(("Version", f"studio {meta['studio_version']}"))
    settings = ", ".join(f"{k}: {quote(v)}" for k, v in fields if v is not None and v != "")
    text = str(meta.get("prompt", ""))
    if meta.get("negative_prompt"):
        text += f"\nNegative prompt: {meta['negative_prompt']}"
    return f"{text}\n{settings}".strip()


def parse_infotext(text: str) -> dict[str, Any] | None:
    """The settings an infotext holds, or None when it holds neither a prompt nor settings.

    The result has ``"source": "parameters"`` and, when some of the text could not be
    restored here (a sampler or schedule this studio lacks, ControlNet, hires fix, a value
    out of range, ...), ``"unrestored"``: one ``"key: value"`` line for each.
    """
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:  # A1111's rule: fewer than 3 pairs is prompt text
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    meta: dict[str, Any] = {
        "prompt": "\n".join(prompt).strip(),
        "negative_prompt": "\n".join(negative).strip(),
        "source": "parameters",
    }
    pairs = [(k.strip(), unquote(v.strip())) for k, v in _PARAM.findall(last)]
    unrestored = [line for key, value in pairs if (line := _restore(meta, key, value))]
    if not meta["prompt"] and len(meta) == 3 and not unrestored:
        return None
    if unrestored:
        meta["unrestored"] = unrestored
    return meta


def _shown(key: str, value: str, why: str = "") -> str:
    if len(value) > _SHOWN_VALUE:
        value = value[: _SHOWN_VALUE - 1] + "…"
    return f"{key}: {value}" + (f" ({why})" if why else "")


def _restore(meta: dict[str, Any], key: str, value: str) -> str:
    """Put one pair into ``meta``; return a line for the user when it cannot be restored."""
    name = key.lower()
    try:
        if name == "steps":
            meta["steps"] = int(value)
        elif name == "cfg scale":
            meta["guidance"] = float(value)
        elif name == "seed":
            seed = int(value)
            if not 0 <= seed <= MAX_SEED:
                return _shown(key, value, f"seeds here are 0..{MAX_SEED}")
            meta["seed"] = seed
        elif name == "size":
            match = _SIZE.match(value.strip().lower())
            if match is None:
                return _shown(key, value, "not WIDTHxHEIGHT")
            meta["width"], meta["height"] = int(match.group(1)), int(match.group(2))
        elif name == "denoising strength":
            meta["strength"] = float(value)
        elif name == "mask blur":
            meta["mask_blur"] = int(float(value))
        elif name == "sampler":
            return _restore_sampler(meta, key, value)
        elif name == "schedule type":
            if value.strip().lower() not in _PLAIN_SCHEDULES:
                return _shown(key, value, "this studio uses the model's own schedule")
        elif name == "model":
            meta["model"] = value
        elif name == "mode":
            if value not in ("txt2img", "img2img", "inpaint"):
                return _shown(key, value, "unknown mode")
            meta["mode"] = value
        elif name not in _INFORMATIONAL:
            return _shown(key, value)
    except ValueError:
        return _shown(key, value, "not a number")
    return ""


def _restore_sampler(meta: dict[str, Any], key: str, value: str) -> str:
    lowered = value.strip().lower()
    schedule = ""
    for suffix in _SCHEDULE_SUFFIXES:
        if lowered.endswith(suffix) and lowered[: -len(suffix)] in _SAMPLERS_READ:
            lowered, schedule = lowered[: -len(suffix)], suffix.strip()
    scheduler = _SAMPLERS_READ.get(lowered)
    if scheduler is None:
        return _shown(key, value, "not available here")
    meta["scheduler"] = scheduler
    if schedule:
        name = SAMPLER_NAMES[scheduler]
        return _shown(
            key, value, f"restored as {name}; the {schedule.title()} schedule is not available here"
        )
    return ""
