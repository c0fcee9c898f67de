"""The Dataset workspace's Compress… dialog: it compresses on the engine thread and shows bits
per pixel, PSNR/SSIM and the decoded image."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_tiny_dataset, train_tiny_run
from PIL import Image

from studio.qt.dataset_panel import DatasetPanel

VQ = {"codebook_size": 16, "embedding_dim": 4, "downsample": 2, "width": 8}


@pytest.fixture
def panel(qtbot, runner, app_settings):
    panel = DatasetPanel(runner, app_settings)
    qtbot.addWidget(panel)
    yield panel
    assert panel.shutdown(10_000)


def test_the_dialog_compresses_images_and_shows_what_comes_back(qtbot, panel, tmp_path):
    folder = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)
    run = train_tiny_run(tmp_path / "run", "vae.vqvae", folder, VQ, steps=4)
    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 41, 3), np.uint8)).save(wide)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    dialog = panel.show_compress()
    assert not dialog.start_button.isEnabled()  # no run, no images yet
    dialog.set_run(run)
    dialog.set_images([wide, broken])
    dialog.out_edit.setText(str(tmp_path / "kept"))
    assert dialog.start_button.isEnabled()
    with qtbot.waitSignal(dialog.compressed, timeout=60_000) as done:
        dialog.start_button.click()
        assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()
    assert done.args == [1]
    assert dialog.table.rowCount() == 2
    cells = [dialog.table.item(0, c).text() for c in range(6)]
    report = dialog.results[0].report
    assert cells[:2] == ["wide.png", "41 × 20"] and float(cells[3]) == pytest.approx(
        report.bits_per_pixel, abs=1e-3
    )
    assert float(cells[4]) == pytest.approx(report.psnr, abs=0.01)
    assert "cannot read the image" in dialog.table.item(1, 1).text()
    assert "bits/pixel" in dialog.summary_label.text()
    # The first good row is selected: the original and the decoded image are shown.
    assert not dialog.decoded_view.pixmap().isNull() and not dialog.original_view.pixmap().isNull()
    assert (tmp_path / "kept" / "wide.svq").read_bytes() == report.data

    # Again into the same folder: the engine refuses, the file stays as it was.
    with qtbot.waitSignal(dialog.compressed, timeout=60_000) as refused:
        dialog.start_button.click()
    assert refused.args == [0] and "already exists" in dialog.banner.text()
    assert (tmp_path / "kept" / "wide.svq").read_bytes() == report.data


def test_a_run_without_codes_is_named(qtbot, panel, tmp_path):
    folder = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)
    run = train_tiny_run(tmp_path / "run", "vae.conv", folder, steps=1)
    dialog = panel.show_compress()
    dialog.set_run(run)
    dialog.set_images([next(folder.rglob("*.png"))])
    with qtbot.waitSignal(dialog.compressed, timeout=60_000) as done:
        dialog.start_button.click()
    assert done.args == [0] and "no discrete codes" in dialog.banner.text()
