"""The layer contract: Qt never leaks into core/models/engine/cli, torch never into core."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(out.stdout.split())


def _core_modules() -> list[str]:
    return sorted(
        f"studio.core.{p.stem}"
        for p in (ROOT / "studio" / "core").glob("*.py")
        if p.stem != "__init__"
    )


def test_core_imports_neither_torch_nor_qt():
    loaded = _modules_after_import(", ".join(_core_modules()))
    assert not {
        m for m in loaded if m.split(".")[0] in {"torch", "PySide6", "pyqtgraph", "diffusers"}
    }


@pytest.mark.parametrize(
    "layer",
    ["studio.models.registry", "studio.engine.train", "studio.engine.sample", "studio.cli.main"],
)
def test_headless_layers_never_import_qt(layer):
    loaded = _modules_after_import(layer)
    assert not {
        m for m in loaded if m.split(".")[0] in {"PySide6", "pyqtgraph", "superqt", "shiboken6"}
    }


def test_import_studio_is_light():
    loaded = _modules_after_import("studio")
    assert "torch" not in loaded and "PySide6" not in loaded


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed")
    result = subprocess.run([exe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
