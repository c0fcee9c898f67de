"""The engine, the window and the command line dispatch on declared capabilities only: none of
their modules names a model family (its key, its class, its module) or compares a ``kind``
string. A family's own behaviour lives in ``studio/models`` (docs/writing-a-family.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from studio.models.registry import FAMILIES

ROOT = Path(__file__).resolve().parents[1] / "studio"
SCANNED = ("engine", "cli", "qt")
KINDS = {"gan", "vae", "vqvae", "flow", "diffusion", "i2i"}
FAMILY_MODULE = re.compile(r"^studio\.models\.(gan|vae|flow|diffusion|i2i)(\.|$)")
CLASSES = {target.partition(":")[2] for target in FAMILIES.values()} | {
    "GANModel",
    "FlowModel",
    "UNetDiffusion",
}
# Files allowed to name a family (none: keep it so; a family's own code lives in studio/models).
ALLOWED: set[str] = set()


def family_names(source: str) -> list[str]:
    """Every place in ``source`` that names a family or compares a kind, as "line: what"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and node.value in FAMILIES:
            found.append(f"{line}: family key {node.value!r}")
        elif isinstance(node, ast.Name | ast.alias) and (
            getattr(node, "id", None) in CLASSES or getattr(node, "name", None) in CLASSES
        ):
            found.append(f"{line}: family class")
        elif isinstance(node, ast.Attribute) and node.attr in CLASSES:
            found.append(f"{line}: family class {node.attr}")
        elif isinstance(node, ast.ImportFrom) and FAMILY_MODULE.match(node.module or ""):
            found.append(f"{line}: imports {node.module}")
        elif isinstance(node, ast.Import) and any(FAMILY_MODULE.match(a.name) for a in node.names):
            found.append(f"{line}: imports a family module")
        elif isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                items = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                if any(isinstance(e, ast.Constant) and e.value in KINDS for e in items):
                    found.append(f"{line}: compares a kind string")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "signature"
            and "model" in ast.unparse(node.args[0] if node.args else node).lower()
        ):
            found.append(f"{line}: signature sniffing of a model")
    return found


def test_the_scanner_sees_what_it_must():
    bad = (
        "from studio.models.vae.conv import ConvVAE\n"
        "import inspect\n"
        "if model.info.kind == 'diffusion': pass\n"
        "if space.variant in ('gan', 'flow'): pass\n"
        "key = 'gan.dcgan'\n"
        "params = inspect.signature(model.bits_per_dim).parameters\n"
    )
    found = family_names(bad)
    for what in ("imports", "compares a kind", "family key", "signature"):
        assert any(what in f for f in found), what
    assert family_names("if Capability.LATENT in info.capabilities: pass\n") == []


def test_engine_window_and_cli_name_no_family():
    offenders = {}
    for layer in SCANNED:
        for path in sorted((ROOT / layer).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED:
                continue
            found = family_names(path.read_text(encoding="utf-8"))
            if found:
                offenders[rel] = found
    assert not offenders, f"family-specific code outside studio/models: {offenders}"
