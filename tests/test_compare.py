"""The compare job, its report files and ``studio compare``, on 2-step tiny runs."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import pytest
from helpers import make_tiny_dataset, train_tiny_run

from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.compare import (
    CompareSettings,
    PanelDone,
    compare_job,
    nearest_training_images,
    write_report,
)

TINY = {
    "gan.dcgan": {"latent_dim": 8, "width": 8},
    "vae.conv": {"latent_dim": 4, "width": 8},
    "diffusion.ddpm": {"width": 8, "layers_per_block": 1, "attention_res": 4},
}
N = 6  # samples per panel: as many as the held-out images, so the reference is all of them


def _train(run: Path, family: str, data: Path) -> Path:
    return train_tiny_run(run, family, data, TINY[family], holdout_fraction=0.25)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    data = make_tiny_dataset(root / "data", n=24, size=16, classes=2)
    return {key: _train(root / key.replace(".", "-"), key, data) for key in TINY}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare_cache")


def _settings(runs: dict[str, Path], cache: Path | None, **kw) -> CompareSettings:
    base = dict(n=N, seed=3, diffusion_sampler="ddim", diffusion_steps=2, device="cpu")
    base.update(kw)
    return CompareSettings(list(runs.values()), extractor_steps=10, cache_dir=cache, **base)


@pytest.fixture(scope="module")
def report(runs, cache):
    seen: list[Progress] = []
    out = run_sync(compare_job(_settings(runs, cache)), on_progress=seen.append)
    assert out.ok, out.error or out.details
    panel_reports = [p for p in seen if p.stage == "panel"]
    assert [p.info["panel"] for p in panel_reports] == [0, 1, 2]
    assert all(p.image is not None and p.image.ndim == 3 for p in panel_reports)
    assert [p.info["run"] for p in panel_reports] == [str(r) for r in runs.values()]
    # Each finished panel comes as a typed payload, the same PanelResult the report holds.
    assert all(isinstance(p.payload, PanelDone) for p in panel_reports)
    assert [p.payload.index for p in panel_reports] == [0, 1, 2]
    assert all(p.payload.result is r for p, r in zip(panel_reports, out.result.panels))
    assert {p.payload.extractor for p in panel_reports} == {out.result.extractor}
    return out.result


def test_one_panel_per_run_with_finite_numbers_and_one_n(report, runs):
    assert [p.family for p in report.panels] == list(TINY)
    assert report.n == N and report.n_reference == N
    assert "studio-cnn" in report.extractor
    for panel in report.panels:
        q = panel.quality
        assert q["n_samples"] == N and q["n_reference"] == N
        for key in ("fd", "kid_mean", "kid_std", "precision", "recall", "memorisation_share"):
            assert math.isfinite(q[key]), (panel.family, key)
        assert panel.seconds_per_image > 0
        assert panel.samples.shape == (N, 16, 16, 3) and panel.grid.ndim == 3
        assert panel.nearest_images.shape == (N, 16, 16, 3)
    bpd = {p.family: p.bits_per_dim for p in report.panels}
    assert bpd["vae.conv"] is not None and math.isfinite(bpd["vae.conv"])
    assert bpd["gan.dcgan"] is None and bpd["diffusion.ddpm"] is None
    ddpm = report.panels[2]
    assert ddpm.conditions == {"sampler": "ddim", "steps": 2}
    assert report.panels[0].conditions == {}


def test_nearest_training_images_sorted_closest_first(report):
    pairs = nearest_training_images(report, 1, k=3)
    assert len(pairs) == 3
    assert [p.distance for p in pairs] == sorted(p.distance for p in pairs)
    assert pairs[0].sample.shape == pairs[0].training_image.shape == (16, 16, 3)
    with pytest.raises(IndexError):
        nearest_training_images(report, 9)


def test_write_report_holds_every_setting(report, runs, tmp_path):
    paths = write_report(report, tmp_path / "out")
    assert all(p.is_file() for p in paths.values())
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["settings"]["runs"] == [str(r) for r in runs.values()]
    assert data["settings"]["n"] == N and data["seed"] == 3
    assert data["dataset"]["fingerprint"] and data["dataset"]["held_out"]["count"] == N
    assert data["extractor"] == report.extractor and data["extractor_meta"]["steps"] == 10
    assert {"studio", "torch", "numpy"} <= set(data["versions"]) and data["machine"]["device"]
    assert data["panels"][2]["conditions"] == {"sampler": "ddim", "steps": 2}
    assert any("biased" in note for note in data["notes"])
    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8")))
    assert len(rows) == 3 and rows[2]["sampler"] == "ddim" and rows[0]["bits_per_dim"] == ""
    from PIL import Image

    with Image.open(paths["sheet"]) as sheet:
        assert sheet.width >= 3 * 256


def test_runs_on_different_datasets_are_refused(runs, tmp_path):
    other = make_tiny_dataset(tmp_path / "other", n=12, size=16, classes=2, seed=5)
    odd = _train(tmp_path / "odd", "gan.dcgan", other)
    settings = CompareSettings([runs["gan.dcgan"], odd], n=N, device="cpu")
    out = run_sync(compare_job(settings))
    assert out.status is Status.FAILED
    assert "odd" in out.error and "different dataset" in out.error


def test_cli_writes_the_same_report_as_the_engine(report, runs, cache, tmp_path, monkeypatch):
    from studio.cli import compare as compare_cli

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="auto")
    parser = argparse.ArgumentParser()
    compare_cli.add_parser(parser.add_subparsers(dest="command"), common)
    args = parser.parse_args(
        ["compare", "--runs", *map(str, runs.values()), "--n", str(N), "--seed", "3",
         "--out", str(tmp_path / "cli"), "--sampler", "ddim", "--steps", "2",
         "--device", "cpu", "--extractor-steps", "10"]
    )  # fmt: skip
    # The engine report used the module's extractor cache; the CLI uses Studio's: share it.
    monkeypatch.setattr("studio.core.paths.cache_dir", lambda: cache)
    assert compare_cli.cmd_compare(args) == 0
    data = json.loads((tmp_path / "cli" / "report.json").read_text(encoding="utf-8"))
    assert (tmp_path / "cli" / "sheet.png").is_file()
    for cli_panel, panel in zip(data["panels"], report.panels):
        for key in ("fd", "kid_mean", "precision", "recall", "memorisation_share"):
            assert cli_panel[key] == pytest.approx(panel.quality[key], rel=1e-6, abs=1e-9)
        if panel.bits_per_dim is not None:
            assert cli_panel["bits_per_dim"] == pytest.approx(panel.bits_per_dim, rel=1e-6)


def test_cancel_returns_cancelled(runs, cache):
    token = CancelToken()

    def cancel_on_first_sample(p: Progress) -> None:
        if p.stage == "sample":
            token.cancel()

    out = run_sync(compare_job(_settings(runs, cache)), token, cancel_on_first_sample)
    assert out.status is Status.CANCELLED and out.result is None


def test_bad_settings_are_refused_clearly(runs, cache):
    out = run_sync(compare_job(_settings(runs, cache, n=1)))
    assert out.status is Status.FAILED and "at least 2" in out.error
    bad = _settings(runs, cache, diffusion_sampler="euler")
    out = run_sync(compare_job(bad))
    assert out.status is Status.FAILED and "euler" in out.error
