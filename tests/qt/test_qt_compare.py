"""The Compare workspace: two tiny runs, Regenerate, panels filled, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_tiny_dataset, train_tiny_run

from studio.qt.compare import CompareWorkspace
from studio.qt.engine_thread import JobRunner

TINY = {"gan.dcgan": {"latent_dim": 8, "width": 8}, "vae.conv": {"latent_dim": 4, "width": 8}}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """Two 2-step runs (a GAN and a VAE) of one tiny dataset, in their own runs folder."""
    root = tmp_path_factory.mktemp("qt_compare")
    data = make_tiny_dataset(root / "data", n=24, size=16, classes=2)
    for key, model in TINY.items():
        train_tiny_run(
            root / "runs" / key.replace(".", "-"), key, data, model, holdout_fraction=0.25
        )
    return root / "runs"


@pytest.fixture
def workspace(qtbot, app_settings):
    runner = JobRunner()
    ws = CompareWorkspace(runner, app_settings)
    ws.extractor_steps = 10  # the real default (600) is for real datasets
    qtbot.addWidget(ws)
    yield ws
    assert runner.shutdown(20_000, grace_ms=5_000)


def test_regenerate_fills_panels_and_export_writes_files(qtbot, workspace, runs_root, tmp_path):
    from studio.core.jobs import CancelToken, run_sync
    from studio.qt.engine_jobs import describe_families

    assert run_sync(describe_families()(CancelToken())).ok  # the window lists them at start
    workspace.load_default_runs(runs_root)
    qtbot.waitUntil(lambda: len(workspace.panels) == 2, timeout=20_000)
    assert {p.kind for p in workspace.panels} == {"gan", "vae"}
    # Each panel offers exactly the sampling options its family declares.
    rows = {p.kind: p.sampling_row for p in workspace.panels}
    assert not rows["gan"].isVisibleTo(workspace) and not rows["gan"].controls
    assert rows["vae"].isVisibleTo(workspace) and set(rows["vae"].controls) == {"temperature"}

    workspace.n.setValue(4)
    workspace.seed.setValue(5)
    with qtbot.waitSignal(workspace.report_ready, timeout=50_000) as blocker:
        workspace.regenerate()
        assert workspace.cancel_button.isEnabled() and not workspace.regenerate_button.isEnabled()
    report = blocker.args[0]
    assert report.n == 4 and len(report.panels) == 2
    for panel in workspace.panels:
        assert panel.view.generation >= 1 and not panel.view.image().isNull()
        assert "FD" in panel.numbers.text() and "n=4" in panel.numbers.text()
        assert (
            "biased" in panel.numbers.toolTip().lower() and "studio-cnn" in panel.numbers.toolTip()
        )
        assert panel.nearest_button.isEnabled()
    vae = next(p for p in workspace.panels if p.kind == "vae")
    assert "bits/dim" in vae.numbers.text()

    dialog = workspace.show_nearest(vae, k=3)
    assert dialog is not None and not dialog.view.image().isNull()
    dialog.close()

    out = tmp_path / "export"
    with qtbot.waitSignal(workspace.exported, timeout=20_000):
        workspace.export(out)
    assert {f.name for f in out.iterdir()} >= {"report.json", "report.csv", "sheet.png"}
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["seed"] == 5 and data["n"] == 4 and len(data["panels"]) == 2


def test_a_run_of_another_dataset_is_refused(workspace, runs_root, tmp_path):
    assert workspace.add_run(runs_root / "gan-dcgan")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(
        json.dumps({"family": "vae.conv", "train": {}, "dataset": {"fingerprint": "other"}}),
        encoding="utf-8",
    )
    assert not workspace.add_run(odd)
    assert "different dataset" in workspace.banner.text()
    assert not workspace.add_run(runs_root / "gan-dcgan")  # no duplicates either
    assert len(workspace.panels) == 1


def test_feature_extractor_training_fills_the_progress_bar(workspace):
    from studio.core.jobs import Progress

    workspace._on_compare_progress(Progress("features", 30, 120, message="Training"), None, [])
    assert workspace.progress.value() == 250
    workspace._on_compare_progress(Progress("features", 120, 120), None, [])
    assert workspace.progress.value() == 1000


def test_showing_compare_again_adds_runs_made_since(qtbot, workspace, runs_root, tmp_path):
    import shutil

    from studio.core.jobs import CancelToken, run_sync
    from studio.qt.engine_jobs import describe_families

    assert run_sync(describe_families()(CancelToken())).ok
    root = tmp_path / "runs"
    shutil.copytree(runs_root, root)
    workspace.show()
    workspace.load_default_runs(root)  # the window's first look
    qtbot.waitUntil(lambda: len(workspace.panels) == 2, timeout=20_000)
    gan = next(p for p in workspace.panels if p.kind == "gan")
    workspace.remove_panel(gan)  # the user's choice: showing again must not undo it
    workspace.hide()
    workspace.show()
    qtbot.wait(1_000)  # the listing job runs and offers nothing new
    assert len(workspace.panels) == 1
    # A run finished while the user was elsewhere: it joins when Compare is shown again.
    data = runs_root.parent / "data"
    train_tiny_run(root / "gan-new", "gan.dcgan", data, TINY["gan.dcgan"], holdout_fraction=0.25)
    workspace.hide()
    workspace.show()
    qtbot.waitUntil(lambda: len(workspace.panels) == 2, timeout=20_000)
    assert {p.run.name for p in workspace.panels} == {"vae-conv", "gan-new"}
    assert "gan-new" in workspace.status.text()
