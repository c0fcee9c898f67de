"""Upscale on the Canvas with a tiny trained super-resolution run: only runs that enlarge are
offered, the job runs on the engine thread, the result is staged, Accept enlarges the canvas
and its mask in one undoable step, and Undo restores the old size and pixels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from test_qt_canvas_support import open_workspace, test_image

LEFT = Qt.MouseButton.LeftButton


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A two-step x2 super-resolution run (trained once) and a run that does not enlarge
    (its config.json is all the list reads)."""
    import json

    from helpers import make_tiny_dataset, train_tiny_run

    base = tmp_path_factory.mktemp("upscale_runs")
    data = make_tiny_dataset(base / "data", n=8, size=16, classes=2)
    other = base / "gan"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"family": "gan.dcgan"}), encoding="utf-8")
    return {"sr": train_tiny_run(base / "sr", "i2i.superres", data), "gan": other}


@pytest.fixture
def workspace(qtbot, app_settings, runs):
    for path in runs.values():
        app_settings.add_recent_run(path)
    yield from open_workspace(qtbot, app_settings)


def test_accept_enlarges_the_canvas_and_undo_restores_it(qtbot, workspace, runs):
    original = test_image(20, 28, seed=4)
    workspace.set_image(original, "photo")
    doc = workspace.document
    mask = np.zeros(doc.shape, np.float32)
    mask[4:12, 6:18] = 1.0
    workspace.undo.record(doc.set_mask(mask))
    panel = workspace.show_panel(workspace.upscale_panel)
    with qtbot.waitSignal(panel.runs_listed, timeout=30_000):
        panel.refresh_runs()
    offered = [panel.run_combo.itemData(i) for i in range(panel.run_combo.count())]
    assert offered == [str(runs["sr"])]
    assert panel.upscale_button.text() == "Upscale x2"
    panel.steps_spin.setValue(2)
    assert "Upscale" in [a.text() for a in workspace.build_menu().actions()]
    workspace.upscale_action.trigger()
    assert panel.running
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert workspace.staging.count() == 1, panel.banner.text()
    assert "Upscaled to 56 x 40" in workspace.staging.caption.text()
    assert doc.shape == (20, 28)  # staged, not committed
    workspace.staging.choose(0)
    assert workspace.view.previewing
    shot = os.environ.get("STUDIO_SHOT_DIR")  # render the panel to look at it
    if shot:
        panel.grab().save(str(Path(shot) / "upscale_panel.png"))
        workspace.grab().save(str(Path(shot) / "upscale_workspace.png"))
    qtbot.mouseClick(workspace.staging.accept_button, LEFT)
    assert doc.shape == (40, 56) and doc.image.shape == (40, 56, 3)
    assert doc.mask.shape == (40, 56) and doc.mask[12, 20] == 1.0 and doc.mask[0, 0] == 0.0
    assert workspace.undo.stack.undoText() == "Accept upscale"
    QTest.keyClick(workspace.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert doc.shape == (20, 28)
    assert np.array_equal(doc.image, original) and np.array_equal(doc.mask, mask)
    assert not workspace.translate_panel.list_runs([str(runs["sr"])])  # Upscale's, not Translate's
