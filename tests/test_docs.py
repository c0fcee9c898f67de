"""Documentation that is generated from the code stays current."""

from __future__ import annotations

from pathlib import Path

from studio.models.catalog import render_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_models_doc_is_current():
    doc = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    assert doc == render_markdown(), "regenerate: python -m studio.models.catalog > docs/models.md"


def test_readme_names_the_test_command_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install "torch==2.13.0" -e ".[test]"' in readme
    assert 'pip install -q "torch==2.13.0" -e ".[test]"' in ci
    assert "python -m pytest" in readme and "python -m pytest" in ci
