"""The Dataset workspace's Odd ones out tab: score, rank, look closer, set aside, undo."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_dataset, train_tiny_run
from PIL import Image
from PySide6.QtCore import Qt

from studio.core.flagged import Transfer
from studio.qt.dataset_panel import DatasetPanel
from studio.qt.score_view import heat_map


@pytest.fixture
def panel(qtbot, runner, app_settings):
    """The Dataset workspace on its own (no window: no family listing to wait for)."""
    panel = DatasetPanel(runner, app_settings)
    qtbot.addWidget(panel)
    yield panel
    assert panel.shutdown(10_000)


def _scored_view(qtbot, panel, tmp_path: Path):
    folder = make_tiny_dataset(tmp_path / "data", n=12, size=16, classes=2)
    Image.new("RGB", (16, 16), (128, 128, 128)).save(folder / "odd.png")
    (folder / "broken.png").write_bytes(b"not an image")
    run = train_tiny_run(tmp_path / "run", "vae.conv", folder, {"latent_dim": 4, "width": 8})
    with qtbot.waitSignal(panel.dataset_changed, timeout=30_000) as scanned:
        panel.set_folder(folder)
    assert scanned.args[1] == 13
    view = panel.score_view
    view.set_run(run)
    assert view.score_button.isEnabled() and not view.export_button.isEnabled()
    with qtbot.waitSignal(view.scored, timeout=60_000) as blocker:
        view.score_button.click()
    assert blocker.args == [13]
    return view, folder


def test_scoring_ranks_flags_and_looks_closer(qtbot, panel, tmp_path):
    view, folder = _scored_view(qtbot, panel, tmp_path)
    assert view.table.rowCount() == 13
    assert [view.score_combo.itemData(i) for i in range(view.score_combo.count())] == [
        "recon",
        "neg_elbo",
    ]
    values = view.values()
    assert values == sorted(values, reverse=True)  # most unusual first
    assert view.table.item(0, 2).text() == f"{values[0]:.4g}"
    assert "could not be read" in view.banner.text()  # broken.png, listed not scored
    assert view.table.item(0, 1).icon().isNull() is False  # a thumbnail

    # The threshold flags the rows at or above it; dragging it changes the count.
    view.threshold.setValue(values[2])
    assert [img.path for img in view.flagged()] == [view.table.item(r, 1).text() for r in range(3)]
    assert view.flagged_label.text().startswith("3 of 13 images flagged")
    assert view.table.item(0, 0).background().color().alpha() > 0
    assert (
        view.table.item(5, 0).background().style() == Qt.BrushStyle.NoBrush
    )  # not flagged: no brush

    # Ranking by the other score re-sorts without scoring again.
    view.score_combo.setCurrentIndex(1)
    assert view.ranked_by == "neg_elbo"
    elbo = view.values()
    assert elbo == sorted(elbo, reverse=True)

    # The closer look: the image, its reconstruction and the error heat map.
    generation = view.heat_view.generation
    view.table.setCurrentCell(1, 1)
    qtbot.waitUntil(lambda: view.heat_view.generation > generation, timeout=30_000)
    assert not view.recon_view.image().isNull() and not view.heat_view.image().isNull()
    assert view.table.item(1, 1).text() in view.detail_label.text()


def test_export_move_and_undo(qtbot, panel, tmp_path):
    view, folder = _scored_view(qtbot, panel, tmp_path)
    view.threshold.setValue(view.values()[1])
    flagged = [img.path for img in view.flagged()]
    assert len(flagged) == 2

    out = tmp_path / "scores.csv"
    with qtbot.waitSignal(view._files.runner.job_finished, timeout=30_000):
        view.export_to(str(out))
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0] == ["rank", "path", "recon", "neg_elbo"] and len(rows) == 14
    assert [r[1] for r in rows[1:3]] == flagged

    before = {p: (folder / p).read_bytes() for p in flagged}
    target = tmp_path / "set_aside"
    with qtbot.waitSignal(view._files.runner.job_finished, timeout=30_000):
        view.transfer_to(str(target), Transfer.MOVE)
    qtbot.waitUntil(lambda: view.undo_button.isEnabled(), timeout=10_000)
    assert all(not (folder / p).exists() and (target / p).is_file() for p in flagged)
    assert view.table.rowCount() == 11  # the moved images left the list
    assert "Moved 2 files" in view.banner.text()

    with qtbot.waitSignal(view._files.runner.job_finished, timeout=30_000):
        view.undo_button.click()
    qtbot.waitUntil(lambda: view.table.rowCount() == 13, timeout=10_000)
    assert {p: (folder / p).read_bytes() for p in flagged} == before
    assert not any(p.is_file() for p in target.rglob("*"))
    assert not view.undo_button.isEnabled()

    # A target inside the scored folder is refused, and nothing moves.
    with qtbot.waitSignal(view._files.runner.job_finished, timeout=30_000):
        view.transfer_to(str(folder / "inside"), Transfer.MOVE)
    qtbot.waitUntil(lambda: "outside" in view.banner.text(), timeout=10_000)
    assert all((folder / p).is_file() for p in flagged)


def test_heat_map_is_black_to_white():
    error = np.array([[0.0, 0.5], [1.0, 2.0]])
    rgb = heat_map(error)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [255, 255, 255]
    assert heat_map(np.zeros((2, 2))).max() == 0
