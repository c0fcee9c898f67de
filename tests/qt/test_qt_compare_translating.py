"""The Compare workspace with runs that translate images: two tiny Pix2Pix runs go on the
board, Regenerate fills each panel with rows of input | output | target and its L1, PSNR and
SSIM to the targets beside FD/KID; the sheet is rendered offscreen."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_tiny_pairs, train_tiny_run

from studio.qt.compare import CompareWorkspace
from studio.qt.engine_thread import JobRunner


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("qt_compare_i2i")
    a, b = make_tiny_pairs(root / "pairs", n=20)
    return [
        train_tiny_run(root / "runs" / "p2p_a", "i2i.pix2pix", a, data_b=str(b)),
        train_tiny_run(root / "runs" / "p2p_b", "i2i.pix2pix", a, data_b=str(b), steps=3),
    ]


@pytest.fixture
def workspace(qtbot, app_settings):
    runner = JobRunner()
    ws = CompareWorkspace(runner, app_settings)
    ws.extractor_steps = 5
    qtbot.addWidget(ws)
    yield ws
    assert runner.shutdown(20_000, grace_ms=5_000)


def test_translating_runs_go_on_the_board_with_target_scores(qtbot, workspace, runs):
    for run in runs:
        assert workspace.add_run(run), workspace.banner.text()
    assert len(workspace.panels) == 2
    workspace.n.setValue(4)
    with qtbot.waitSignal(workspace.report_ready, timeout=60_000) as blocker:
        workspace.regenerate()
    report = blocker.args[0]
    assert len(report.panels) == 2 and all("psnr" in p.quality for p in report.panels)
    for panel in workspace.panels:
        text = panel.numbers.text()
        assert "PSNR" in text and "SSIM" in text and "L1" in text and "FD" in text
        assert not panel.view.image().isNull()


def test_a_superres_panel_shows_bicubic_beside_the_run(qtbot, workspace, tmp_path):
    from helpers import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", n=12, size=16, classes=2)
    run = train_tiny_run(tmp_path / "sr", "i2i.superres", data, steps=2, holdout_fraction=0.4)
    assert workspace.add_run(run), workspace.banner.text()
    workspace.n.setValue(4)
    with qtbot.waitSignal(workspace.report_ready, timeout=60_000) as blocker:
        workspace.regenerate()
    assert "psnr_bicubic" in blocker.args[0].panels[0].quality
    text = workspace.panels[0].numbers.text()
    assert "Bicubic" in text and "PSNR" in text and "SSIM" in text
