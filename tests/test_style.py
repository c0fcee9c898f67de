"""The code stays as ruff (the version the test extras pin) formats and lints it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATHS = ["studio", "tests", "benchmarks", "packaging", "resources", "setup.py"]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        import ruff  # noqa: F401
    except ImportError:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *PATHS], cwd=REPO, capture_output=True, text=True
    )


def test_ruff_lint_passes() -> None:
    done = _ruff("check", "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    done = _ruff("format", "--check", "--no-cache")
    assert done.returncode == 0, f"run `ruff format {' '.join(PATHS)}`:\n" + done.stdout
