"""Families as plug-ins: an installed package adds families through the ``studio.families``
entry-point group; ``studio families`` says where each comes from; a plug-in that fails to
import is listed with its error and breaks neither the other families nor the window's list."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.models import registry

GOOD = """
import dataclasses

from studio.models.gan.dcgan import DCGAN


class PluginGAN(DCGAN):
    info = dataclasses.replace(
        DCGAN.info, key="plugin.gan", display_name="Plug-in GAN", kind_title="Plug-in models"
    )
"""


@pytest.fixture
def installed(tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """A distribution "studio-plugin-demo" installed on sys.path (a dist-info folder), with one
    working family and one whose module fails to import."""
    site = tmp_path / "site"
    dist = site / "studio_plugin_demo-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: studio-plugin-demo\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [studio.families]
            plugin.gan = plugin_demo_good:PluginGAN
            plugin.broken = plugin_demo_broken:Missing
            gan.dcgan = plugin_demo_good:PluginGAN
            """
        ),
        encoding="utf-8",
    )
    (site / "plugin_demo_good.py").write_text(GOOD, encoding="utf-8")
    (site / "plugin_demo_broken.py").write_text(
        "raise ImportError(\"this plug-in needs the package 'wibble'\")\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(site))
    registry.refresh_plugins()
    yield site
    monkeypatch.undo()
    registry.refresh_plugins()


def test_entry_points_add_families_and_say_where_they_come_from(installed):
    sources = registry.family_sources()
    assert sources["plugin.gan"].origin == "studio-plugin-demo"
    assert sources["gan.dcgan"].origin == registry.BUILT_IN  # a plug-in cannot replace it
    assert list(sources)[: len(registry.FAMILIES)] == list(registry.FAMILIES)
    family = registry.get_family("plugin.gan")
    assert family.info.display_name == "Plug-in GAN"
    assert registry.get_family("gan.dcgan").__name__ == "DCGAN"
    errors = registry.family_errors()
    assert set(errors) == {"plugin.broken"} and "wibble" in errors["plugin.broken"]


def test_studio_families_lists_a_broken_plugin_with_its_error(installed, capsys):
    from studio.cli.main import main

    assert main(["families"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "Plug-in GAN" in lines["plugin.gan"] and "from studio-plugin-demo" in lines["plugin.gan"]
    assert "unavailable" in lines["plugin.broken"] and "wibble" in lines["plugin.broken"]
    assert "from" not in lines["gan.dcgan"]  # built-in


def test_the_window_lists_the_working_plugin_and_notes_the_broken_one(installed):
    from studio.core.jobs import CancelToken, run_sync
    from studio.qt.engine_jobs import describe_families

    out = run_sync(describe_families()(CancelToken()))
    assert out.ok, out.error
    listing = out.result
    specs = {spec.key: spec for spec in listing.families}
    assert specs["plugin.gan"].group_title == "Plug-in models"
    assert specs["plugin.gan"].origin == "studio-plugin-demo"
    assert set(registry.FAMILIES) <= set(specs)
    assert [key for key, _ in listing.broken] == ["plugin.broken"]
    assert "wibble" in listing.broken[0][1]


def test_a_run_time_family_cannot_take_a_built_in_key():
    with pytest.raises(ValueError, match="built-in"):
        registry.register_family("gan.dcgan", registry.get_family("gan.cgan"))
