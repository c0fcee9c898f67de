"""Training options, declared once.

Each training option (everything about a run that is not the model's own architecture) is one
:class:`Option` in :data:`OPTIONS`: its name, default (whose type is the option's type), label
and help for the Train form and ``--help``, its range or choices, how the command line sets it
and the README's text. Everything else is derived from this table:

- ``studio.engine.runs.TrainConfig`` (fields, defaults and :func:`check_training`, which the
  engine calls before it creates or resumes a run folder);
- ``studio train``'s flags and its ``--option NAME=VALUE`` parsing (:func:`parse_option`);
- the Train form's training controls (:func:`form_dataclass`);
- the README's "Training options" table (:func:`options_table`; a test keeps it current).

Model settings are declared with ``studio.models.base.setting`` (same metadata); their range
check on load and on ``--set`` is :func:`check_setting`. The diffusion samplers are described
here too (:data:`SAMPLERS`), so building a form never imports diffusers.

This module imports neither torch nor Qt.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from studio.core.errors import StudioError

AUTO_ON_OFF = ("auto", "on", "off")
PRECISION_CHOICES = ("auto", "bf16", "fp16", "fp32")
COMPILE_CHOICES = ("off", "auto", "on")
LR_SCHEDULES = ("constant", "cosine")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
RESOLUTIONS = (32, 64, 128)  # the sizes the command line and the window offer

# -- diffusion samplers (studio.models.diffusion.samplers builds them) -------------------------
SAMPLERS = ("ddpm", "ddim", "dpm++")
DEFAULT_SAMPLER = "dpm++"
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpm++": 20}

#: How the command line sets an option: its own ``studio train`` flag, ``--option NAME=VALUE``,
#: or neither (the family comes from ``--family``, the device from the common ``--device``).
FLAG, OPTION, OTHER = "flag", "option", "other"


class SettingError(StudioError, ValueError):
    """A setting or option value out of its declared type, range or choices."""


@dataclass(frozen=True)
class Option:
    """One training option. ``label`` empty: not in the Train form."""

    name: str
    default: Any
    help: str
    label: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None  # further values accepted besides ``choices`` (cuda:N)
    cli: str = OPTION
    main: bool = False  # shown first in the Train form
    doc: str = ""  # the README table's text (``--option`` rows); defaults to ``help``

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def flag(self) -> str:
        """``studio train``'s flag: ``--batch-size``; a bool that is on by default: ``--no-flip``."""
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.default is True else f"--{dashed}"


def _o(name: str, default: Any, help: str, **kw: Any) -> Option:
    return Option(name, default, help, **kw)


_ON_OFF = dict(choices=AUTO_ON_OFF)

OPTIONS: tuple[Option, ...] = (
    _o("family", "gan.dcgan", "model key (see 'studio families')", cli=OTHER),
    _o("data", "", "image folder ('demo' = the built-in demo dataset)", cli=OTHER),
    _o("data_b", "", "folder B of paired images (A in --data): for image-to-image families; "
       "empty: each file in --data holds A on its left half and B on its right", cli=OTHER),
    _o("resolution", 32, "image size in pixels the model trains at",
       minimum=8, maximum=128, cli=OTHER),
    _o("steps", 2000, "Total training steps. Resuming a run trains on to this number.",
       label="Steps", minimum=1, maximum=10_000_000, main=True, cli=OTHER),
    _o("batch_size", 64, "Images per step. Lower it if memory runs out.",
       label="Batch size", minimum=1, maximum=4096, main=True, cli=FLAG),
    _o("device", "auto", "auto picks the GPU when there is one, else the CPU",
       label="Device", choices=DEVICE_CHOICES, pattern=r"cuda:\d+", main=True, cli=OTHER),
    _o("seed", 0, "Same seed, same data order and noise: runs can be compared",
       label="Seed", minimum=0, maximum=2**31 - 1, cli=FLAG),
    _o("flip", True, "horizontal-flip augmentation", cli=FLAG),
    _o("sample_every", 100, "Steps between sample grids",
       label="Sample every", minimum=1, maximum=1_000_000, cli=FLAG),
    _o("checkpoint_every", 500, "Steps between checkpoints (also every 10 minutes)",
       label="Checkpoint every", minimum=1, maximum=10_000_000, cli=FLAG),
    _o("checkpoint_minutes", 10.0, "minutes between checkpoints, whatever the step",
       minimum=0.0, maximum=1e6, cli=OTHER),
    _o("log_every", 10, "Steps between points on the loss plot",
       label="Log every", minimum=1, maximum=100_000, cli=FLAG),
    _o("samples", 64, "images in each sample grid", minimum=1, maximum=1024, cli=OTHER),
    _o("holdout_fraction", 0.05, "share of the images held out for the quality numbers",
       minimum=0.0, maximum=0.9, cli=OTHER),
    _o("precision", "auto", "On a GPU: auto trains in bf16 where the GPU has it, else in fp16 with "
       "gradient scaling; fp32 is the slowest. The CPU always trains in fp32.",
       label="Precision", choices=PRECISION_CHOICES,
       doc="on a CUDA GPU, `auto` and `bf16` train with bf16 autocast where the GPU has bf16 in "
       "hardware (Ampere and later) and with fp16 autocast plus gradient scaling where it does "
       "not (a step whose gradients overflow is skipped and the scale lowered); `fp16` forces "
       "fp16, `fp32` full precision. The CPU always trains in fp32"),
    _o("tf32", "auto", "TF32 matrix maths for fp32 work (auto: on with CUDA; CUDA only)", **_ON_OFF),
    _o("channels_last", "auto", "Memory layout for convolutions (auto: on a GPU)",
       label="Channels last", **_ON_OFF,
       doc="channels-last memory layout for convolutional networks (auto: on with CUDA)"),
    _o("fused_adamw", "auto", "Adam/AdamW with torch's fused kernel", **_ON_OFF,
       doc="Adam/AdamW with torch's fused kernel where it has one (CUDA, and the CPU), else the "
       "foreach kernel; optimizer state is kept"),
    _o("compile", "off", "torch.compile the networks (auto: on a GPU). Falls back to eager if it "
       "fails; the first steps are slow while it compiles.",
       label="Compile", choices=COMPILE_CHOICES,
       doc="`torch.compile` of the networks (`auto`: on with CUDA). The first step compiles (can "
       "take a minute); if compiling or a compiled step fails, that step is undone and rerun "
       "eagerly and training goes on without it. Sampling and peeks stay eager"),
    _o("cuda_graphs", False, "compile with CUDA graphs (`reduce-overhead`): for small, "
       "launch-bound models; CUDA only"),
    _o("grad_clip", 0.0, "Largest gradient norm; 0 keeps the model's own default",
       label="Gradient clip", minimum=0.0, maximum=1e6,
       doc="clip the gradient norm to this; 0 keeps the model's own (DDPM 1, flows 50, others "
       "none)"),
    _o("warmup_steps", 0, "Linear learning-rate warm-up; 0 keeps the model's own default",
       label="Warm-up steps", minimum=0, maximum=1_000_000,
       doc="linear learning-rate warm-up; 0 keeps the model's own (DDPM, flows)"),
    _o("lr_schedule", "constant", "cosine: decay from the model's rate to a tenth of it by the "
       "last step", label="Learning rate", choices=LR_SCHEDULES,
       doc="`cosine`: after the warm-up, decay to `min_lr_fraction` of the rate at the run's "
       "last step"),
    _o("min_lr_fraction", 0.1, "where the cosine schedule ends", minimum=0.0, maximum=1.0),
    _o("accumulate", 1, "Split each batch into this many micro-batches (same result, less "
       "memory). GANs train on the whole batch.", label="Accumulate", minimum=1, maximum=64,
       doc="split each batch into this many micro-batches and step once: the same batch in "
       "less memory (VAEs, flows, DDPM; not GANs)"),
    _o("auto_batch", False, "On a GPU: halve the batch size until a step fits in memory",
       label="Find batch size",
       doc="on a CUDA GPU, halve `--batch-size` until a training step fits in memory"),
    _o("reuse_cpu_memory", "auto", "CPU training: keep freed memory for the next step", **_ON_OFF,
       doc="CPU training on Linux (glibc): keep the memory a step frees for the next step "
       "instead of handing it back to the kernel and faulting it in again (thousands of page "
       "faults a step otherwise). Process-wide; the memory is handed back when the run ends. "
       "Left alone when you set `MALLOC_*` variables or `GLIBC_TUNABLES` yourself"),
    _o("fast_dropout", "auto", "CPU training: dropout masks four elements per random draw",
       **_ON_OFF,
       doc="CPU training: dropout draws its random mask four elements per random number "
       "instead of one (the same keep probability to within 1/65536, unbiased; a different "
       "random stream from torch's `nn.Dropout`, so `off` reproduces older runs bit for bit). "
       "Auto: on for the CPU; GPUs keep torch's fused dropout"),
    _o("lean_unet", "auto", "leaner forwards for diffusers' UNet blocks (auto: CPU training)",
       **_ON_OFF,
       doc="diffusion families (DDPM, text-to-image): run diffusers' UNet blocks through leaner "
       "forwards that compute the same thing in fewer operations: the nearest 2x upsample + "
       "3x3 convolution as four 2x2 convolutions on the small grid (no 4x larger tensor), 1x1 "
       "shortcut convolutions as one matrix product, spatial self-attention kept "
       "channel-first, no division by a scale of 1. Same weights and files; results equal up "
       "to float rounding, except that dropout masks fall on other elements (same "
       "distribution). Auto: on for CPU training (about 10% faster per DDPM step here); not "
       "yet measured on a GPU"),
    _o("cpu_shards", 1, "CPU: split each batch across this many threads (DDPM); 1 = off",
       minimum=1, maximum=64,
       doc="CPU training of models that treat each image on its own (DDPM): split each batch "
       "into this many parts, each run forward and backward on a thread of its own with a "
       "share of `cpu_threads`, gradients added in order (the same step up to rounding, "
       "deterministic). Off (1) by default: on a 2-core machine it was no faster than torch's "
       "own threading; it is meant for CPUs with many cores, where small models keep torch's "
       "threads poorly busy. Needs `fast_dropout`"),
    _o("cpu_threads", 0, "Torch threads when training on the CPU; 0 picks one per physical core",
       label="CPU threads", minimum=0, maximum=256,
       doc="torch threads when training on the CPU; 0 = one per physical core (at most 16), or "
       "`OMP_NUM_THREADS` when set"),
)  # fmt: skip

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
#: The names ``studio train --option NAME=VALUE`` sets.
OPTION_NAMES: tuple[str, ...] = tuple(o.name for o in OPTIONS if o.cli == OPTION)
FLAG_OPTIONS: tuple[Option, ...] = tuple(o for o in OPTIONS if o.cli == FLAG)

_TRUE, _FALSE = ("on", "true", "1", "yes"), ("off", "false", "0", "no")


# -- checking ------------------------------------------------------------------------------------


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_setting(
    name: str,
    value: Any,
    *,
    kind: type | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Iterable[Any] | None = None,
    pattern: str | None = None,
) -> None:
    """Raise :class:`SettingError` naming ``name``, ``value`` and what is allowed, when
    ``value`` is not of type ``kind`` or falls outside its range or choices."""
    if kind is bool and not isinstance(value, bool):
        raise SettingError(f"{name} must be on or off (true or false), not {value!r}.")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise SettingError(f"{name} must be a whole number, not {value!r}.")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise SettingError(f"{name} must be a number, not {value!r}.")
    if kind is str and not isinstance(value, str):
        raise SettingError(f"{name} must be text, not {value!r}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingError(f"{name} must be a finite number, not {value!r}.")
    if choices:
        allowed = tuple(choices)
        if value not in allowed and not (
            pattern and isinstance(value, str) and re.fullmatch(pattern, value)
        ):
            listed = ", ".join(str(c) for c in allowed)
            raise SettingError(f"{name} must be one of {listed}, not {value!r}.")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = minimum is not None and value < minimum
        high = maximum is not None and value > maximum
        if low or high:
            if minimum is not None and maximum is not None:
                allowed_range = f"between {_num(minimum)} and {_num(maximum)}"
            elif minimum is not None:
                allowed_range = f"at least {_num(minimum)}"
            else:
                allowed_range = f"at most {_num(maximum)}"  # type: ignore[arg-type]
            raise SettingError(f"{name} must be {allowed_range}, not {value!r}.")


def check_option(option: Option, value: Any) -> None:
    check_setting(
        option.name,
        value,
        kind=option.type,
        minimum=option.minimum,
        maximum=option.maximum,
        choices=option.choices,
        pattern=option.pattern,
    )


def check_training(values: Mapping[str, Any]) -> None:
    """Check every known option in ``values`` (a TrainConfig's fields); unknown names pass."""
    for name, value in values.items():
        option = BY_NAME.get(name)
        if option is not None:
            check_option(option, value)


def parse_value(option: Option, raw: str) -> Any:
    """``raw`` text (a flag or ``--option`` value) as ``option``'s type, checked."""
    text = raw.strip()
    try:
        if option.type is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(text)
            value: Any = text.lower() in _TRUE
        elif option.type is int:
            value = int(text)
        elif option.type is float:
            value = float(text)
        else:
            value = text.lower() if option.choices else text
    except ValueError:
        kind = {bool: "on or off", int: "a whole number", float: "a number"}[option.type]
        raise SettingError(f"{option.name} must be {kind}, not {text!r}.") from None
    check_option(option, value)
    return value


def parse_option(pair: str) -> tuple[str, Any]:
    """``"compile=on"`` (``studio train --option``) -> ``("compile", "on")``, checked."""
    name, sep, raw = pair.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in OPTION_NAMES:
        raise SettingError(
            f"--option {pair!r}: expected NAME=VALUE with NAME one of: {', '.join(OPTION_NAMES)}"
        )
    return name, parse_value(BY_NAME[name], raw)


# -- derived forms -------------------------------------------------------------------------------


def _metadata(option: Option, choices: tuple[Any, ...] | None) -> dict[str, Any]:
    """The same metadata ``studio.models.base.setting`` gives a model setting."""
    return {
        "label": option.label,
        "help": option.help,
        "minimum": option.minimum,
        "maximum": option.maximum,
        "choices": choices,
        "main": option.main,
    }


def dataclass_fields() -> list[tuple[str, type, Any]]:
    """``(name, type, field)`` of every option, for ``dataclasses.make_dataclass``."""
    return [
        (o.name, o.type, dataclasses.field(default=o.default, metadata=_metadata(o, o.choices)))
        for o in OPTIONS
    ]


def form_dataclass(device_choices: tuple[str, ...] = DEVICE_CHOICES) -> type:
    """The Train form's training options as a dataclass whose field metadata the settings
    form reads (only the options with a label; ``device_choices``: what this machine offers)."""
    fields = []
    for o in OPTIONS:
        if not o.label:
            continue
        choices = device_choices if o.name == "device" else o.choices
        fields.append(
            (o.name, o.type, dataclasses.field(default=o.default, metadata=_metadata(o, choices)))
        )
    return dataclasses.make_dataclass("TrainingOptions", fields)


def _doc_default(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def options_table() -> str:
    """The README's "Training options" table: every ``--option``, its default and its text."""
    lines = ["| option | default | what it does |", "|---|---|---|"]
    for o in OPTIONS:
        if o.cli == OPTION:
            lines.append(f"| `{o.name}` | `{_doc_default(o.default)}` | {o.doc or o.help} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(options_table(), end="")

#: ``studio upscale``'s tile side in input pixels (studio.engine.upscale), here so the command
#: line's help needs no torch.
UPSCALE_TILE = 128
