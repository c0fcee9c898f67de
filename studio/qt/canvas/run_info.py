"""What the inpaint panel needs to know about a run before it submits anything.

:func:`describe_run` reads the run's ``config.json`` and the family's declared capabilities
and returns the preset descriptions (which state the diffusion UNet evaluation counts). It
imports the engine (and with it torch), so the panel calls it on a worker thread, never on
the GUI thread; it loads no weights, so it is quick and may run while the engine trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from studio.core.errors import StudioError


@dataclass(frozen=True)
class RunInfo:
    """A run as the inpaint panel shows it.

    ``presets`` maps method -> preset name -> description, as the family declares them (a
    family with one way to inpaint has the one method ``""``); ``method_labels`` names the
    methods. ``problem`` says why the run cannot inpaint (None when it can).
    """

    path: Path
    family: str
    kind: str
    display_name: str
    class_names: tuple[str, ...] = ()
    presets: dict[str, dict[str, str]] = field(default_factory=dict)
    problem: str | None = None
    method_labels: dict[str, str] = field(default_factory=dict)

    @property
    def can_inpaint(self) -> bool:
        return self.problem is None

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.presets)

    @property
    def conditional(self) -> bool:
        return bool(self.class_names)


def describe_run(path: str | Path) -> RunInfo:
    """Describe the run folder at ``path``; a folder that is not a run raises StudioError."""
    from studio.models.base import Capability
    from studio.models.registry import get_family

    run = Path(path)
    config_path = run / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudioError(f"{run.name} is not a run folder (it has no config.json).") from None
    except (OSError, ValueError) as err:
        raise StudioError(f"The settings of {run.name} cannot be read: {err}") from None
    key = str(config.get("family") or config.get("train", {}).get("family") or "")
    try:
        family = get_family(key)
    except KeyError:
        raise StudioError(
            f"{run.name} was trained with a model this Studio lacks ({key})."
        ) from None
    info = family.info
    num_classes = int(config.get("model", {}).get("num_classes", 0) or 0)
    names = [str(n) for n in config.get("dataset", {}).get("class_names", [])]
    conditional = Capability.CONDITIONAL in info.capabilities and num_classes > 0
    class_names = tuple(names[:num_classes]) if conditional else ()
    if conditional and len(class_names) < num_classes:  # names lost: number the classes
        class_names += tuple(f"class {i}" for i in range(len(class_names), num_classes))
    presets: dict[str, dict[str, str]] = {}
    labels: dict[str, str] = {}
    problem = None
    if Capability.INPAINT in info.capabilities and hasattr(family, "inpaint_presets"):
        for method in tuple(family.inpaint_methods) or ("",):
            presets[method] = dict(family.inpaint_presets(method))
        labels = dict(family.inpaint_method_labels)
    elif Capability.TEXT in info.capabilities:
        problem = (
            f"This run cannot inpaint here: {info.display_name} follows prompts; inpaint with it "
            "in the Prompt workspace (mode Inpaint uses this canvas's image and mask)."
        )
    else:
        problem = (
            f"This run cannot inpaint: {info.display_name} has neither a diffusion UNet nor a "
            "latent space to optimise."
        )
    return RunInfo(run, key, info.kind, info.display_name, class_names, presets, problem, labels)
