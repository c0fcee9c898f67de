"""A readable catalogue of the registered families and their settings.

The CLI prints it (``studio families --settings``) and ``docs/models.md`` is generated from it
(``python -m studio.models.catalog > docs/models.md``; a test keeps the file current).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from studio.core.options import SAMPLERS
from studio.core.schema import RunRequirement
from studio.models.base import Capability, ModelConfig
from studio.models.gan.augment import DOC as AUGMENTATION_DOC
from studio.models.gan.growing import DOC as GROWING_DOC
from studio.models.registry import FAMILIES, get_family

# What every family of a kind shares, said once under the kind's heading.
KIND_NOTES = {"gan": AUGMENTATION_DOC + "\n\n" + GROWING_DOC}
HIDDEN = {f.name for f in dataclasses.fields(ModelConfig)}  # set from the dataset
CONDITION_HELP = {
    "label": "`--class NAME|INDEX` (no class: cycle through all)",
    "steps": "`--steps N`",
    "sampler": f"`--sampler {'|'.join(SAMPLERS)}`",
    "guidance": "`--guidance G`",
    "temperature": "`--temperature T`",
    "truncation": "`--truncation PSI` (0 to 1; Compare's Truncation box)",
    "prompt": "a prompt (`studio generate --model RUN --prompt TEXT`)",
    "negative_prompt": "a negative prompt (`--negative TEXT` there)",
    "image": "an input image to translate (`studio translate --run RUN --image IMG`)",
    "direction": "`studio translate --direction a2b|b2a` (A to B by default)",
}


@dataclasses.dataclass(frozen=True)
class SettingRow:
    name: str
    label: str
    default: Any
    allowed: str
    help: str
    main: bool


def settings(key: str) -> list[SettingRow]:
    rows = []
    for f in dataclasses.fields(get_family(key).Config):
        if f.name in HIDDEN:
            continue
        meta = f.metadata
        if isinstance(meta.get("run"), RunRequirement):
            allowed = f"{meta['run'].what} (its folder; required)"
        elif meta.get("choices"):
            allowed = " / ".join(str(c) for c in meta["choices"])
        elif meta.get("minimum") is not None or meta.get("maximum") is not None:
            allowed = f"{_num(meta.get('minimum'))} to {_num(meta.get('maximum'))}"
        else:
            allowed = ""
        rows.append(
            SettingRow(
                f.name,
                meta.get("label", f.name),
                f.default,
                allowed,
                meta.get("help", ""),
                bool(meta.get("main")),
            )
        )
    return rows


def _num(value: Any) -> str:
    return "…" if value is None else f"{value:g}"


def capabilities_text(caps: Capability) -> str:
    names = {
        Capability.LATENT: "latent space",
        Capability.LIKELIHOOD: "likelihood (bits/dim)",
        Capability.CONDITIONAL: "class-conditional",
        Capability.INPAINT: "inpainting",
        Capability.TEXT: "text prompts (Prompt workspace, `studio generate`)",
        Capability.PAIRED: "image to image, trained on pairs (`--data A --data-b B`)",
        Capability.CODES: "discrete codes (an image codec: `studio compress`)",
        Capability.AUTOENCODER: "a continuous latent grid (the first stage of latent diffusion)",
    }
    if Capability.SINGLE_FOLDER in caps:
        names[Capability.PAIRED] = (
            "image to image, trained on one folder (inputs made from each image; `studio upscale`)"
        )
    if Capability.UNPAIRED in caps:
        names[Capability.PAIRED] = (
            "image to image both ways, trained on two unpaired folders (`--data A --data-b B`)"
        )
    return ", ".join(text for cap, text in names.items() if cap in caps) or "sampling"


def render_markdown() -> str:
    out = [
        "# Model families",
        "",
        "Generated from the registry by `python -m studio.models.catalog > docs/models.md`;",
        "do not edit by hand. Every model trains from a folder in the Train workspace and with",
        "`studio train --family KEY`; settings are changed in the window's form or with",
        "`--set NAME=VALUE`. Resolution and class count come from the dataset.",
        "",
    ]
    by_kind: dict[str, list[str]] = {}
    for key in FAMILIES:
        by_kind.setdefault(key.split(".")[0], []).append(key)
    for kind, keys in by_kind.items():
        out += [f"## {get_family(keys[0]).info.group_title}", ""]
        if kind in KIND_NOTES:
            out += [KIND_NOTES[kind], ""]
        for key in keys:
            family = get_family(key)
            info = family.info
            out += [f"### {info.display_name} (`{key}`)", "", info.summary, ""]
            if info.about:
                out += [info.about, ""]
            out.append(f"- Can do: {capabilities_text(info.capabilities)}.")
            helps = {o.name: o.help for o in family.sampling_options if o.help}
            conds = [
                CONDITION_HELP.get(c, f"`--with {c}=VALUE`")
                + (f" — {helps[c]}" if c in helps else "")
                for c in family.conditions
            ]
            out.append(f"- Sampling options: {'; '.join(conds) if conds else 'none'}.")
            scores = [f"`{o.name}` ({o.label}, {o.unit})" for o in family.score_options()]
            out.append(
                "- Odd-one-out scores (`studio score --score NAME`, the first is the default): "
                f"{', '.join(scores) if scores else 'none'}."
            )
            if info.loss_names:
                shown = [n for n in info.loss_names if not n.startswith("kl_dim_")]
                extra = (
                    " (and `kl_dim_00`... per latent dimension)"
                    if len(shown) < len(info.loss_names)
                    else ""
                )
                out.append(f"- Plotted live: {', '.join(f'`{n}`' for n in shown)}{extra}.")
            out += ["", "| setting | name | default | range | notes |", "|---|---|---|---|---|"]
            for row in settings(key):
                label = f"**{row.label}**" if row.main else row.label
                out.append(
                    f"| {label} | `{row.name}` | {row.default} | {row.allowed} | {row.help} |"
                )
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_markdown(), end="")
