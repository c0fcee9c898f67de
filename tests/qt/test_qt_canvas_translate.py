"""Translate on the Canvas with a tiny trained image-to-image run: only translating runs are
offered, the job runs on the engine thread, the result is staged, Accept is one undoable step
(the whole image or only the feathered mask), Cancel leaves the canvas as it was."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from test_qt_canvas_support import open_workspace, test_image

from studio.core.brush import grow

LEFT = Qt.MouseButton.LeftButton
TRANSLATING, OTHER = "i2i.pix2pix", "gan.dcgan"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A two-step pix2pix run on tiny pairs and a two-step DCGAN run (trained once)."""
    from helpers import make_tiny_dataset, make_tiny_pairs, train_tiny_run

    base = tmp_path_factory.mktemp("translate_runs")
    a, b = make_tiny_pairs(base / "pairs", n=10)
    data = make_tiny_dataset(base / "data", n=8, size=16, classes=2)
    return {
        TRANSLATING: train_tiny_run(base / "p2p", TRANSLATING, a, data_b=str(b)),
        OTHER: train_tiny_run(base / "gan", OTHER, data),
    }


@pytest.fixture
def workspace(qtbot, app_settings, runs):
    for path in runs.values():
        app_settings.add_recent_run(path)
    yield from open_workspace(qtbot, app_settings)


def listed(qtbot, panel) -> list[str]:
    with qtbot.waitSignal(panel.runs_listed, timeout=30_000):
        panel.refresh_runs()
    return [panel.run_combo.itemData(i) for i in range(panel.run_combo.count())]


def run_to_end(qtbot, panel) -> None:
    assert panel.running and not panel.translate_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)


def test_only_translating_runs_are_offered_and_others_are_refused(qtbot, workspace, runs):
    panel = workspace.translate_panel
    assert not panel.isVisible()  # the side tools are tabs: Inpaint in front
    assert workspace.show_panel(panel) is panel and panel.isVisible()
    assert listed(qtbot, panel) == [str(runs[TRANSLATING])]
    assert panel.run() == str(runs[TRANSLATING])
    assert not panel.direction_combo.isEnabled()  # pix2pix translates A to B only
    # A run opened by hand that does not translate: refused, with a reason, not offered.
    panel.set_run(runs[OTHER])
    qtbot.waitUntil(lambda: panel.banner.isVisible(), timeout=30_000)
    assert "does not translate" in panel.banner.text()
    assert panel.run_combo.findData(str(runs[OTHER])) < 0
    # A run that translates both ways (its config.json is all the list reads) gets a direction.
    import json

    both = runs[TRANSLATING].parent / "both_ways"
    both.mkdir(exist_ok=True)
    (both / "config.json").write_text(json.dumps({"family": "i2i.cyclegan"}), encoding="utf-8")
    panel.set_run(both)
    qtbot.waitUntil(lambda: panel.run() == str(both), timeout=30_000)
    assert panel.direction_combo.isEnabled()
    panel.direction_combo.setCurrentIndex(panel.direction_combo.findData("b2a"))
    assert panel.choice().direction == "b2a"
    panel.run_combo.setCurrentIndex(panel.run_combo.findData(str(runs[TRANSLATING])))
    assert not panel.direction_combo.isEnabled() and panel.choice().direction is None
    # Nothing on the canvas: Translate says so.
    assert not panel.start() and "Open an image" in panel.banner.text()


def test_translate_whole_image_is_staged_and_accept_is_undoable(qtbot, workspace, runs):
    original = test_image(36, 52, seed=1)
    workspace.set_image(original, "photo")
    panel = workspace.translate_panel
    listed(qtbot, panel)
    assert workspace.translate_action.isEnabled()
    assert "Translate" in [a.text() for a in workspace.build_menu().actions()]
    workspace.translate_action.trigger()
    run_to_end(qtbot, panel)
    assert workspace.staging.count() == 1, panel.banner.text()
    assert "Translated by p2p" in workspace.staging.caption.text()
    doc = workspace.document
    assert np.array_equal(doc.image, original)  # staged, not committed
    workspace.staging.choose(0)
    assert workspace.view.previewing
    qtbot.mouseClick(workspace.staging.accept_button, LEFT)
    assert not np.array_equal(doc.image, original) and doc.image.shape == original.shape
    assert workspace.undo.stack.undoText() == "Accept translation"
    QTest.keyClick(workspace.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(doc.image, original)


def test_translate_masked_region_only_changes_the_feathered_mask(qtbot, workspace, runs):
    original = test_image(48, 64, seed=2)
    workspace.set_image(original, "photo")
    doc = workspace.document
    panel = workspace.translate_panel
    listed(qtbot, panel)
    panel.area_combo.setCurrentIndex(panel.area_combo.findData("masked"))
    assert not panel.start() and "No mask painted" in panel.banner.text()
    mask = np.zeros(doc.shape, np.float32)
    mask[12:30, 20:44] = 1.0
    workspace.undo.record(doc.set_mask(mask))
    feather = workspace.options.feather
    assert panel.start()
    run_to_end(qtbot, panel)
    workspace.staging.choose(0)
    qtbot.mouseClick(workspace.staging.accept_button, LEFT)
    near = grow(mask, 2 * math.ceil(feather) + 1) > 0
    assert np.array_equal(doc.image[~near], original[~near])  # untouched beyond the feather
    assert (doc.image[mask == 1] != original[mask == 1]).any()


def test_cancel_leaves_the_canvas_alone(qtbot, workspace, runs):
    original = test_image(40, 40, seed=3)
    workspace.set_image(original, "photo")
    panel = workspace.translate_panel
    listed(qtbot, panel)
    assert panel.start()
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert "Cancelled" in panel.status_label.text() and workspace.staging.count() == 0
    assert np.array_equal(workspace.document.image, original)
