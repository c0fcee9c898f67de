"""Stylize… on the Canvas with a tiny VGG-19-shaped file (random weights, saved here): the
dialog remembers the weights file and says where to get one, the job runs on the engine thread
with a live preview, the result is staged, Accept is one undoable step (the whole image or
only the feathered mask), Cancel and a refused file leave the canvas as it was."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_vgg_files
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialog
from test_qt_canvas_support import open_workspace, test_image

from studio.core.brush import grow
from studio.core.stylize import WEIGHTS_URL, StyleSettings
from studio.qt.canvas import stylize as stylize_ui

LEFT = Qt.MouseButton.LeftButton


@pytest.fixture
def workspace(qtbot, app_settings):
    yield from open_workspace(qtbot, app_settings)


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    paths = tiny_vgg_files(tmp_path / "vgg")
    paths["style"] = tmp_path / "style.png"
    Image.fromarray(test_image(40, 40, seed=7)[::-1, ::-1].copy()).save(paths["style"])
    return paths


def fill_dialog(monkeypatch, style: Path, vgg: Path, area: str | None = None, steps: int = 4):
    """Make the modal dialog answer by itself: fill it in and press Stylize."""

    def exec_(dialog: stylize_ui.StylizeDialog) -> int:
        dialog.style_edit.setText(str(style))
        dialog.vgg_edit.setText(str(vgg))
        dialog.steps_spin.setValue(steps)
        dialog.size_spin.setValue(32)
        if area is not None:
            dialog.area_combo.setCurrentIndex(dialog.area_combo.findData(area))
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
        return dialog.result()

    monkeypatch.setattr(stylize_ui.StylizeDialog, "exec", exec_)


def run_to_end(qtbot, panel) -> None:
    assert panel.running and not panel.stylize_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)


def test_stylize_whole_image_is_staged_and_accept_is_undoable(
    qtbot, workspace, files, app_settings, monkeypatch
):
    original = test_image(48, 64, seed=1)
    workspace.set_image(original, "photo")
    panel = workspace.stylize_panel
    assert workspace.stylize_action.isEnabled()
    assert "Stylize…" in [a.text() for a in workspace.build_menu().actions()]
    fill_dialog(monkeypatch, files["style"], files["pth"], steps=12)
    workspace.stylize_action.trigger()
    run_to_end(qtbot, panel)
    assert panel.preview.generation > 0  # the live preview arrived
    assert workspace.staging.count() == 1, panel.banner.text()
    assert "Style transfer: 12 iterations" in workspace.staging.caption.text()
    doc = workspace.document
    assert np.array_equal(doc.image, original)  # staged, not committed
    workspace.staging.choose(0)
    assert workspace.view.previewing
    qtbot.mouseClick(workspace.staging.accept_button, LEFT)
    assert not np.array_equal(doc.image, original) and doc.image.shape == original.shape
    assert workspace.undo.stack.undoText() == "Accept style transfer"
    QTest.keyClick(workspace.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(doc.image, original)
    # The file and the settings are remembered for the next time.
    assert app_settings.value(stylize_ui.VGG_KEY) == str(files["pth"])
    dialog = stylize_ui.StylizeDialog(app_settings, has_mask=False)
    assert dialog.vgg_edit.text() == str(files["pth"]) and dialog.steps_spin.value() == 12
    assert not dialog.area_combo.model().item(1).isEnabled()  # no mask: whole image only


def test_stylize_masked_region_only_changes_the_feathered_mask(
    qtbot, workspace, files, monkeypatch
):
    original = test_image(48, 64, seed=2)
    workspace.set_image(original, "photo")
    doc = workspace.document
    mask = np.zeros(doc.shape, np.float32)
    mask[12:30, 20:44] = 1.0
    workspace.undo.record(doc.set_mask(mask))
    feather = workspace.options.feather
    fill_dialog(monkeypatch, files["style"], files["safetensors"], area="masked")
    assert workspace.stylize_panel.open_dialog()
    run_to_end(qtbot, workspace.stylize_panel)
    workspace.staging.choose(0)
    qtbot.mouseClick(workspace.staging.accept_button, LEFT)
    near = grow(mask, 2 * math.ceil(feather) + 1) > 0
    assert np.array_equal(doc.image[~near], original[~near])  # untouched beyond the feather
    assert (doc.image[mask == 1] != original[mask == 1]).any()


def test_cancel_and_refused_files_leave_the_canvas_alone(
    qtbot, workspace, files, monkeypatch, tmp_path
):
    original = test_image(40, 40, seed=3)
    workspace.set_image(original, "photo")
    panel = workspace.stylize_panel
    fill_dialog(monkeypatch, files["style"], files["pth"], steps=100_000)
    assert panel.open_dialog()
    qtbot.waitUntil(lambda: "iteration" in panel.status_label.text(), timeout=60_000)
    qtbot.mouseClick(panel.cancel_button, LEFT)
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert "Cancelled" in panel.status_label.text() and workspace.staging.count() == 0
    assert np.array_equal(workspace.document.image, original)

    # Finish now stages the image so far.
    assert panel.open_dialog()
    qtbot.waitUntil(lambda: "iteration" in panel.status_label.text(), timeout=60_000)
    qtbot.mouseClick(panel.finish_button, LEFT)
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert workspace.staging.count() == 1 and "stopped at" in workspace.staging.caption.text()
    workspace.staging.discard_button.click()
    assert workspace.staging.count() == 0
    assert np.array_equal(workspace.document.image, original)

    # A pickle that runs code when unpickled: refused, its payload never runs.
    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": Payload()}, evil)
    fill_dialog(monkeypatch, files["style"], evil)
    assert panel.open_dialog()
    run_to_end(qtbot, panel)
    assert "refuses it" in panel.banner.text() and not canary.exists()
    assert workspace.staging.count() == 0

    # A missing weights file is said in the dialog, with where to get one.
    dialog = stylize_ui.StylizeDialog(workspace._settings, has_mask=False)
    dialog.style_edit.setText(str(files["style"]))
    dialog.vgg_edit.setText(str(tmp_path / "nowhere.pth"))
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    assert dialog.result() != QDialog.DialogCode.Accepted
    assert WEIGHTS_URL in dialog.problem.text()
    # Stale or hostile remembered settings fall back to the defaults.
    workspace._settings.set_value(stylize_ui.SETTINGS_KEY, '{"steps": -5, "size": "x"}')
    dialog = stylize_ui.StylizeDialog(workspace._settings, has_mask=False)
    assert dialog.steps_spin.value() == StyleSettings().steps
