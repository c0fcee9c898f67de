"""Compare for runs that translate images: the paired scores on known images (identical images
give the capped PSNR and SSIM 1), and a comparison of two tiny Pix2Pix runs gives a row per run
with L1, PSNR, SSIM and FD/KID, measured on the same held-out inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import make_tiny_pairs, train_tiny_run

from studio.core.jobs import run_sync
from studio.engine.compare import CompareSettings, compare_job, report_table, write_report
from studio.engine.metrics import PSNR_CAP, paired_scores, ssim


def _images(n: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 200, (n, size, size, 3), dtype=np.uint8)


def test_paired_scores_on_known_images():
    a = _images()
    same = paired_scores(a, a)
    assert same == {"l1": 0.0, "psnr": PSNR_CAP, "ssim": 1.0}
    shifted = a + np.uint8(8)  # no pixel clips: every difference is 8 levels
    scores = paired_scores(a, shifted)
    assert scores["l1"] == pytest.approx(8 / 255)
    assert scores["psnr"] == pytest.approx(20 * math.log10(255 / 8))
    assert 0.9 < scores["ssim"] < 1.0  # a brightness shift keeps the structure
    assert ssim(a, 255 - a) < 0  # the negative: anti-correlated structure
    flat_black, flat_white = np.zeros_like(a), np.full_like(a, 255)
    assert paired_scores(flat_black, flat_white)["psnr"] == 0.0
    with pytest.raises(ValueError):
        paired_scores(a, a[:2])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare_i2i")
    a, b = make_tiny_pairs(base / "pairs", n=20)
    return [
        train_tiny_run(base / "p2p_one", "i2i.pix2pix", a, data_b=str(b)),
        train_tiny_run(base / "p2p_two", "i2i.pix2pix", a, data_b=str(b), steps=3, seed=1),
    ]


def test_two_pix2pix_runs_compare_with_a_row_each(runs, tmp_path):
    settings = CompareSettings(
        runs, n=8, extractor_steps=5, cache_dir=tmp_path / "cache", device="cpu"
    )
    out = run_sync(compare_job(settings))
    assert out.ok, out.error or out.details
    report = out.result
    assert [p.name for p in report.panels] == ["p2p_one", "p2p_two"]
    for panel in report.panels:
        q = panel.quality
        assert 0 <= q["l1"] <= 1 and 0 < q["psnr"] <= PSNR_CAP and -1 <= q["ssim"] <= 1
        assert math.isfinite(q["fd"]) and math.isfinite(q["kid_mean"])
        assert len(panel.samples) == report.n_reference == 4  # 20 pairs, 0.2 held out
        # The sheet: rows of input | output | target (18 px per cell with the padding).
        assert panel.grid.shape[1] == 3 * 18 + 2
    table = report_table(report)
    assert "PSNR" in table and "SSIM" in table and "L1" in table
    paths = write_report(report, tmp_path / "report")
    saved = json.loads(paths["json"].read_text())
    assert {"l1", "psnr", "ssim"} <= set(saved["panels"][0])
    assert "l1" in paths["csv"].read_text().splitlines()[0]


def test_a_translating_run_and_another_are_refused(runs, tmp_path):
    from helpers import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)
    other = train_tiny_run(tmp_path / "gan", "gan.dcgan", data)
    settings = CompareSettings([runs[0], other], n=4, device="cpu")
    out = run_sync(compare_job(settings))
    assert not out.ok and "different dataset" in (out.error or "")


def test_an_unpaired_run_compares_by_fd_and_kid_without_targets(tmp_path):
    from helpers import make_tiny_unpaired

    a, b = make_tiny_unpaired(tmp_path / "data", n_a=12, n_b=12)
    run = train_tiny_run(tmp_path / "cycle", "i2i.cyclegan", a, data_b=str(b))
    settings = CompareSettings(
        [run], n=8, extractor_steps=5, cache_dir=tmp_path / "c", device="cpu"
    )
    out = run_sync(compare_job(settings))
    assert out.ok, out.error or out.details
    q = out.result.panels[0].quality
    assert math.isfinite(q["fd"]) and "psnr" not in q
    assert "PSNR" not in report_table(out.result)
    assert any("Unpaired" in note for note in out.result.notes)
    assert out.result.panels[0].grid.shape[1] == 2 * 18 + 2  # input | translation


def test_studio_compare_prints_the_target_scores(runs, tmp_path, monkeypatch, capsys):
    import argparse

    from studio.cli import compare as compare_cli

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="auto")
    parser = argparse.ArgumentParser()
    compare_cli.add_parser(parser.add_subparsers(dest="command"), common)
    args = parser.parse_args(
        ["compare", "--runs", *map(str, runs), "--n", "4", "--out", str(tmp_path / "cli"),
         "--device", "cpu", "--extractor-steps", "5"]
    )  # fmt: skip
    monkeypatch.setattr("studio.core.paths.cache_dir", lambda: tmp_path / "cache")
    assert compare_cli.cmd_compare(args) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "SSIM" in printed and "p2p_two" in printed
    header = (tmp_path / "cli" / "report.csv").read_text().splitlines()[0]
    assert header.endswith("l1,psnr,ssim,l1_bicubic,psnr_bicubic,ssim_bicubic")


def test_a_superres_run_compares_beside_bicubic(tmp_path):
    from helpers import make_tiny_dataset

    from studio.engine.compare_report import panel_lines

    data = make_tiny_dataset(tmp_path / "data", n=12, size=16, classes=2)
    run = train_tiny_run(tmp_path / "sr", "i2i.superres", data, steps=2, holdout_fraction=0.4)
    settings = CompareSettings(
        [run], n=4, extractor_steps=5, cache_dir=tmp_path / "c", device="cpu"
    )
    out = run_sync(compare_job(settings))
    assert out.ok, out.error or out.details
    panel = out.result.panels[0]
    q = panel.quality
    for name in ("l1", "psnr", "ssim"):
        assert math.isfinite(q[name]) and math.isfinite(q[f"{name}_bicubic"])
    assert q["psnr_bicubic"] > 10  # bicubic of a mild degradation is close
    assert len(panel.samples) == 4 and panel.samples.shape[1:] == (16, 16, 3)
    assert panel.grid.shape[1] == 3 * 18 + 2  # bicubic | output | original
    assert any("bicubic" in line for line in panel_lines(panel))
    table = report_table(out.result)
    assert "PSNR bicubic" in table and "SSIM bicubic" in table
    assert any("restore" in note for note in out.result.notes)
    paths = write_report(out.result, tmp_path / "report")
    assert "psnr_bicubic" in json.loads(paths["json"].read_text())["panels"][0]
    # The panel's sampler steps reach the upscaling; bicubic's numbers do not move.
    settings.overrides = {str(run): {"steps": 1}}
    again = run_sync(compare_job(settings))
    assert again.ok, again.error or again.details
    assert again.result.panels[0].conditions["steps"] == 1
    assert again.result.panels[0].quality["psnr_bicubic"] == q["psnr_bicubic"]
