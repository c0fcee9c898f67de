"""The Dataset workspace's Make more… dialog: it runs the export on the engine thread."""

from __future__ import annotations

import json

import pytest
from helpers import make_tiny_dataset, train_tiny_run

from studio.qt.dataset_panel import DatasetPanel


@pytest.fixture
def panel(qtbot, runner, app_settings):
    panel = DatasetPanel(runner, app_settings)
    qtbot.addWidget(panel)
    yield panel
    assert panel.shutdown(10_000)


def test_the_dialog_makes_images_per_class_and_says_so(qtbot, panel, tmp_path):
    folder = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)
    run = train_tiny_run(tmp_path / "run", "gan.cgan", folder)
    dialog = panel.show_augment()
    assert not dialog.start_button.isEnabled()  # no run, no folder yet
    dialog.set_run(run)
    dialog.out_edit.setText(str(tmp_path / "more"))
    dialog.per_class_spin.setValue(2)
    dialog.seed_spin.setValue(4)
    assert dialog.start_button.isEnabled()
    with qtbot.waitSignal(dialog.exported, timeout=60_000) as done:
        dialog.start_button.click()
    assert done.args == [4]
    assert "class_0 2 of 2" in dialog.result_label.text()
    assert "Dropped: 0 too close" in dialog.result_label.text()
    manifest = json.loads((tmp_path / "more" / "augment.json").read_text(encoding="utf-8"))
    assert manifest["exports"][0]["settings"]["seed"] == 4 and len(manifest["files"]) == 4

    # A foreign folder: the engine's refusal is shown, nothing is written.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.png").write_bytes(b"x")
    dialog.out_edit.setText(str(tmp_path / "mine"))
    with qtbot.waitSignal(dialog.exported, timeout=60_000) as refused:
        dialog.start_button.click()
    assert refused.args == [0] and "not an earlier augmentation export" in dialog.banner.text()
