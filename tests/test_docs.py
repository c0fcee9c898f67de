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


def test_readme_training_options_table_is_generated_from_the_schema():
    """Issue 14: the options are declared once (studio.core.options); the README's table
    is what the schema generates, so the two cannot drift."""
    from studio.core.options import OPTION_NAMES, options_table

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("| option | default | what it does |")
    end = readme.index("\n\n", start) + 1
    assert readme[start:end] == options_table(), "regenerate: python -m studio.core.options"
    assert all(f"| `{name}` |" in readme for name in OPTION_NAMES)


def test_every_place_that_lists_training_options_derives_them_from_the_schema():
    """TrainConfig, --option, the Train form and studio train's flags all come from one table."""
    import dataclasses

    from studio.cli.main import build_parser
    from studio.core import options
    from studio.engine.runs import TrainConfig

    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name != "model"}
    assert fields == {o.name: o.default for o in options.OPTIONS}
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # noqa: SLF001
    flags = {s for action in train._actions for s in action.option_strings}  # noqa: SLF001
    assert {o.flag for o in options.FLAG_OPTIONS} <= flags
    form = options.form_dataclass()
    shown = [f.name for f in dataclasses.fields(form)]
    assert shown == [o.name for o in options.OPTIONS if o.label]
    for f in dataclasses.fields(form):
        assert f.metadata["minimum"] == options.BY_NAME[f.name].minimum


def test_every_test_named_in_the_reliability_doc_exists():
    """docs/reliability.md maps each reliability case to tests: every `tests/...py::name` it
    names is a file that defines that test (a top-level function or a method of a class)."""
    import ast
    import re

    doc = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    refs = re.findall(r"(tests/[\w/]+\.py)::(\w+)(?:\[[^\]]*\])?", doc)
    assert len(refs) > 50, "docs/reliability.md names too few tests: the pattern broke?"
    defined: dict[str, set[str]] = {}
    missing = []
    for path, name in refs:
        if path not in defined:
            file = ROOT / path
            if not file.is_file():
                missing.append(f"{path} (no such file)")
                defined[path] = set()
                continue
            tree = ast.parse(file.read_text(encoding="utf-8"))
            names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
                names |= {m.name for m in cls.body if isinstance(m, ast.FunctionDef)}
            defined[path] = names
        if name not in defined[path] and (ROOT / path).is_file():
            missing.append(f"{path}::{name}")
    assert not missing, "docs/reliability.md names tests that do not exist: " + ", ".join(missing)
