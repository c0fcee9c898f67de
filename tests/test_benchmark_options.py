"""The benchmark scripts' training options are within the ranges the engine checks: a run
length the options refuse (checkpoint_minutes=1e9) once made every benchmark fail at once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from studio.core.options import OPTIONS, SettingError, check_option

ROOT = Path(__file__).resolve().parents[1]
BY_NAME = {o.name: o for o in OPTIONS}


def _constant_options() -> list[tuple[str, str, object]]:
    """(script, option, value) for every TrainConfig(...) keyword in benchmarks/ whose value is
    a constant expression (1e6, 10**7, 300)."""
    found = []
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(script.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "TrainConfig"):
                continue
            for kw in node.keywords:
                if kw.arg not in BY_NAME:
                    continue
                try:  # constants and arithmetic on them only; names are skipped
                    value = eval(compile(ast.Expression(kw.value), script.name, "eval"), {}, {})
                except NameError:
                    continue
                found.append((script.name, kw.arg, value))
    return found


def test_the_scan_finds_the_benchmarks_run_lengths():
    names = {name for _, name, _ in _constant_options()}
    assert {"checkpoint_minutes", "sample_every", "checkpoint_every"} <= names


@pytest.mark.parametrize("script,name,value", _constant_options())
def test_benchmark_option_is_in_range(script, name, value):
    try:
        check_option(BY_NAME[name], value)
    except SettingError as err:
        pytest.fail(f"{script}: {err}")


def test_an_old_run_length_is_refused():
    with pytest.raises(SettingError):
        check_option(BY_NAME["checkpoint_minutes"], 1e9)


def test_quality_set_can_be_scoped_to_one_family(monkeypatch):
    """`--set FAMILY:NAME=VALUE` reaches that family only (not the base run trained before
    it); an unscoped pair reaches every family."""
    import importlib.util
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # its sibling module machine_info
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks/quality.py")
    quality = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quality_bench", quality)  # its dataclasses look it up
    spec.loader.exec_module(quality)
    pairs = ["ar.vq_prior:architecture=gpt", "width=16", "vae.vqvae:note=a:b=c"]
    assert quality.settings_for("ar.vq_prior", pairs) == ["architecture=gpt", "width=16"]
    assert quality.settings_for("vae.vqvae", pairs) == ["width=16", "note=a:b=c"]
    assert quality.settings_for("flow.glow", pairs) == ["width=16"]
    plan = quality.plan_for("ar.vq_prior", ["ar.vq_prior:architecture=gpt", "vae.vqvae:width=16"])
    assert plan.model["architecture"] == "gpt"
    assert plan.base == "vae.vqvae"  # a --set once dropped the base run: the prior then failed
    assert quality.plan_for("vae.vqvae", ["ar.vq_prior:architecture=gpt"]).model == {"width": 32}
