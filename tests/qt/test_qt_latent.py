"""The Explore workspace, driven like a user would: sliders, fast drags, strips, made sliders,
encoding, a run that cannot be explored, and a clean shutdown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

from studio.engine.runs import RunFolder
from studio.models.registry import get_family
from studio.qt.engine_thread import JobRunner
from studio.qt.latent import LatentWorkspace

TINY = {
    "gan.dcgan": {"latent_dim": 8, "width": 8},
    "gan.cgan": {"latent_dim": 8, "width": 8, "num_classes": 2},
    "vae.conv": {"latent_dim": 6, "width": 8},
    "vae.hierarchical": {"levels": 2, "latent_channels": 2, "width": 8},
    "vae.vqvae": {"codebook_size": 16, "embedding_dim": 4, "downsample": 4, "width": 8},
    "flow.realnvp": {"scales": 2, "couplings": 2, "hidden": 16},
    "diffusion.ddpm": {"width": 8, "layers_per_block": 1, "attention_res": 4},
}


def make_run(folder: Path, key: str, seed: int = 0) -> Path:
    """A run folder with an untrained tiny model (enough to explore)."""
    torch.manual_seed(seed)
    family = get_family(key)
    model = family(family.Config.from_dict(dict(TINY[key], resolution=16)))
    if key.startswith("gan."):
        # The DCGAN init draws flat grey; PyTorch's default init and batch-norm statistics
        # from a few batches make images that vary with z.
        g = model.generator
        for m in g.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.reset_parameters()
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        with torch.no_grad():
            g.train()
            for _ in range(4):
                g(torch.randn(32, g.latent_dim), torch.arange(32) % 2 if g.embed else None)
            g.eval()
    run = folder / key.replace(".", "-")
    model.save(run / "model")
    RunFolder(run).write_config({"family": key, "train": {"family": key}})
    return run


@pytest.fixture
def workspace(qtbot, app_settings):
    app_settings.set_device_preference("cpu")
    runner = JobRunner()
    ws = LatentWorkspace(runner, app_settings)
    ws.pca_samples, ws.pca_k = 64, 4
    qtbot.addWidget(ws)
    ws.resize(1200, 760)
    ws.show()
    yield ws
    assert ws.shutdown()
    runner.shutdown(5_000)


def open_and_wait(qtbot, ws: LatentWorkspace, run: Path) -> None:
    ws.open_run(run)
    qtbot.waitUntil(lambda: ws.directions_ready() and ws.image is not None, timeout=20_000)
    settle(qtbot, ws)


def settle(qtbot, ws: LatentWorkspace) -> None:
    """Wait until the newest decode asked for is the one on show, and Explore's jobs ended."""
    qtbot.waitUntil(
        lambda: ws.displayed_request == ws.last_request and not ws.jobs.is_busy(),
        timeout=10_000,
    )


def test_moving_a_slider_changes_the_image(qtbot, workspace, tmp_path):
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, "gan.dcgan"))
    assert len(ws.slider_panel.sliders) == 4
    assert "GANSpace" in ws.slider_panel.method_label.text()
    assert not ws.slider_panel.temperature_spin.isVisibleTo(ws)  # DCGAN declares none
    before = ws.image.copy()
    shown = ws.image_view.generation
    ws.slider_panel.sliders[0].setValue(250)  # +2.5 standard deviations along PC1
    settle(qtbot, ws)
    assert ws.image_view.generation > shown
    assert not np.array_equal(before, ws.image)
    ws.reset()
    settle(qtbot, ws)
    assert np.array_equal(before, ws.image)  # back to the sample as drawn


def test_a_declared_prior_temperature_gets_a_control(qtbot, workspace, tmp_path):
    """StyleGAN declares its truncation psi (LatentSpec.temperature_option): Explore shows it,
    and psi 0 draws the average w for every seed."""
    key = "gan.stylegan"
    torch.manual_seed(0)
    family = get_family(key)
    tiny = {"latent_dim": 8, "w_dim": 8, "mapping_layers": 2, "width": 8, "resolution": 16}
    model = family(family.Config.from_dict(tiny))
    with torch.no_grad():
        model.generator_ema.w_avg.normal_()  # as training leaves it: away from 0
    w_avg = np.tile(model.generator_ema.w_avg.numpy(), model.num_ws)  # w+: every layer
    run = tmp_path / "style"
    model.save(run / "model")
    RunFolder(run).write_config({"family": key, "train": {"family": key}})
    ws = workspace
    open_and_wait(qtbot, ws, run)
    sp = ws.slider_panel
    assert sp.temperature_spin.isVisibleTo(ws) and sp.temperature_label.text() == "Truncation"
    assert sp.temperature_spin.value() == 1.0
    assert not np.allclose(ws.current_z(), w_avg, atol=1e-3)
    sp.temperature_spin.setValue(0.0)
    qtbot.waitUntil(lambda: np.allclose(ws.current_z(), w_avg, atol=1e-5), timeout=10_000)
    settle(qtbot, ws)
    sp.seed_spin.setValue(sp.seed_spin.value() + 1)  # another seed: the same average
    settle(qtbot, ws)
    assert np.allclose(ws.current_z(), w_avg, atol=1e-5)
    sp.temperature_spin.setValue(1.0)
    qtbot.waitUntil(lambda: not np.allclose(ws.current_z(), w_avg, atol=1e-3), timeout=10_000)


def test_a_hierarchical_latent_gets_the_lower_levels_switch(qtbot, workspace, tmp_path):
    """The hierarchical VAE declares LatentSpec.details_option: Explore shows "Lower levels",
    fixed by default (the same picture for the same sliders); "Resample" and "New details"
    draw the levels below anew. A one-level VAE shows no switch."""
    ws, sp = workspace, workspace.slider_panel
    open_and_wait(qtbot, ws, make_run(tmp_path, "vae.conv"))
    assert not sp.details_row.isVisibleTo(ws) and not sp.resampling_details()

    run = make_run(tmp_path, "vae.hierarchical")
    open_and_wait(qtbot, ws, run)
    assert sp.details_row.isVisibleTo(ws) and sp.details_label.text() == "Lower levels"
    assert sp.details_combo.currentText() == "Fixed"
    assert not sp.new_details_button.isVisibleTo(ws)
    fixed = ws.image.copy()
    ws.reset()  # the same slider values again: the same picture
    settle(qtbot, ws)
    assert np.array_equal(ws.image, fixed)

    sp.details_combo.setCurrentIndex(sp.details_combo.findText("Resample"))
    settle(qtbot, ws)
    assert sp.resampling_details() and sp.new_details_button.isVisibleTo(ws)
    first = ws.image.copy()
    assert not np.array_equal(first, fixed)
    qtbot.mouseClick(sp.new_details_button, Qt.MouseButton.LeftButton)
    settle(qtbot, ws)
    assert not np.array_equal(ws.image, first)  # new details, the same latent

    sp.details_combo.setCurrentIndex(sp.details_combo.findText("Fixed"))
    settle(qtbot, ws)
    assert np.array_equal(ws.image, fixed)
    open_and_wait(qtbot, ws, make_run(tmp_path, "vae.conv"))  # the switch goes with the run
    assert not sp.details_row.isVisibleTo(ws)


@pytest.mark.parametrize("key", ["gan.cgan", "vae.vqvae", "flow.realnvp"])
def test_every_latent_kind_opens_and_slides(qtbot, workspace, tmp_path, key):
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, key))
    before, before_z = ws.image.copy(), ws.current_z()
    ws.slider_panel.sliders[0].setValue(300)
    settle(qtbot, ws)
    assert not np.array_equal(before, ws.image)
    combo = ws.slider_panel.class_combo
    assert combo.isVisibleTo(ws) == (key == "gan.cgan")
    if key == "gan.cgan":
        shown = ws.image.copy()
        combo.setCurrentIndex(1)  # the same latent, the other class
        qtbot.waitUntil(lambda: not np.array_equal(shown, ws.image), timeout=10_000)
    edited = ws.current_z()
    ws.slider_panel.raw_toggle.setChecked(True)  # the edit is kept; the raw sliders start at 0
    assert ws.slider_panel.sliders[0].accessibleName() == "z0"
    assert np.allclose(ws.current_z(), edited, atol=1e-5)
    ws.slider_panel.sliders[0].setValue(100)
    assert not np.allclose(ws.current_z(), edited, atol=1e-5)
    ws.reset()
    assert np.allclose(ws.current_z(), before_z, atol=1e-6)


def test_a_fast_drag_decodes_latest_wins_and_ends_on_the_last_value(qtbot, workspace, tmp_path):
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, "gan.dcgan"))
    jobs, slider = ws.jobs, ws.slider_panel.sliders[1]
    decodes, requests = jobs.decode_count, jobs.requested_count
    for i in range(100):  # one event-loop turn's worth of drag events
        slider.setValue(-300 + 6 * i)
    settle(qtbot, ws)
    assert jobs.requested_count - requests == 100
    ran = jobs.decode_count - decodes
    assert 1 <= ran <= 25, f"{ran} decodes for 100 slider events: a backlog"
    assert slider.value() == 294
    expected = jobs.holder.space.decode(ws.current_z())  # the engine is idle now
    assert np.array_equal(ws.image, expected)


def test_interpolation_strip_has_n_frames_and_exports(qtbot, workspace, tmp_path):
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, "vae.conv"))
    assert ws.keep_current() == 0
    first = ws.image.copy()
    ws.randomise()  # the next seed: a new sample
    qtbot.waitUntil(lambda: not np.array_equal(ws.image, first), timeout=10_000)
    settle(qtbot, ws)
    assert ws.keep_current() == 1
    panel = ws.interpolate_panel
    assert panel.make_button.isEnabled()
    panel.frames_spin.setValue(6)
    qtbot.mouseClick(panel.make_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.frames is not None, timeout=10_000)
    assert panel.frames.shape == (6, 16, 16, 3)
    items = ws.tray.items()
    assert np.array_equal(panel.frames[0], items[0].image)
    assert np.array_equal(panel.frames[-1], items[1].image)
    strip = panel.strip_view.image()  # four frames to a row on screen
    assert strip.width() > 4 * 16 and strip.height() > 2 * 16
    for name in ("strip.png", "strip.gif"):
        ws.export_strip(tmp_path / name)
        qtbot.waitUntil(lambda n=name: (tmp_path / n).is_file(), timeout=10_000)


def test_reload_keeps_the_kept_latents_and_another_run_clears_them(qtbot, workspace, tmp_path):
    ws = workspace
    run = make_run(tmp_path, "vae.conv")
    open_and_wait(qtbot, ws, run)
    assert ws.keep_current() == 0
    kept = ws.tray.items()[0].z.copy()
    ws.reload()  # the same run again (new weights, say): its latents still mean something
    qtbot.waitUntil(lambda: ws.directions_ready() and ws.loaded is not None, timeout=20_000)
    settle(qtbot, ws)
    assert len(ws.tray.items()) == 1 and np.array_equal(ws.tray.items()[0].z, kept)
    open_and_wait(qtbot, ws, make_run(tmp_path / "other", "gan.dcgan"))
    assert ws.tray.items() == []


def test_only_the_open_runs_training_ending_asks_for_a_reload(qtbot, workspace, tmp_path):
    from studio.engine.train import TrainResult

    ws = workspace
    run = make_run(tmp_path, "vae.conv")
    open_and_wait(qtbot, ws, run)

    def finish(path):
        def factory(token):
            return TrainResult(path, 10, 10, False, {})
            yield  # a generator job

        done: list = []
        ws._runner.job_finished.connect(lambda h, o: done.append(o))
        ws._runner.submit("Train", factory)
        qtbot.waitUntil(lambda: bool(done), timeout=10_000)

    finish(tmp_path / "another-run")
    assert "Training finished" not in ws.caption.text()
    finish(run)
    assert ws.caption.text() == "Training finished: Reload for the newest weights"


def test_make_a_slider_adds_a_named_slider_saved_with_the_run(qtbot, workspace, tmp_path):
    ws = workspace
    run = make_run(tmp_path, "gan.dcgan")
    open_and_wait(qtbot, ws, run)
    ws.tabs.setCurrentIndex(ws.MAKE_SLIDER)
    panel = ws.attribute_panel
    qtbot.waitUntil(lambda: panel._z is not None, timeout=10_000)
    assert not panel.fit_button.isEnabled()
    for tile in panel.tiles[:4]:
        qtbot.mouseClick(tile, Qt.MouseButton.LeftButton)  # +
    for tile in panel.tiles[4:8]:
        qtbot.mouseClick(tile, Qt.MouseButton.LeftButton)
        qtbot.mouseClick(tile, Qt.MouseButton.LeftButton)  # −
    assert panel.count_label.text() == "+ 4 · − 4"
    panel.name_edit.setText("bright")
    assert panel.fit_button.isEnabled()
    qtbot.mouseClick(panel.fit_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ws.named_slider_names() == ["bright"], timeout=30_000)
    assert "accuracy" in panel.result_label.text()
    saved = json.loads((run / "latent" / "sliders.json").read_text())
    assert [s["name"] for s in saved["sliders"]] == ["bright"]
    assert (run / "latent" / "sliders.safetensors").is_file()
    named = ws.slider_panel.named_rows.sliders
    assert len(named) == 1
    settle(qtbot, ws)
    before = ws.image.copy()
    named[0].setValue(300)
    settle(qtbot, ws)
    assert not np.array_equal(before, ws.image)

    ws.open_run(run)  # reopening finds the slider in the run folder
    qtbot.waitUntil(lambda: ws.loaded is not None, timeout=20_000)
    assert ws.named_slider_names() == ["bright"]


def test_encoding_an_image_shows_it_beside_its_reconstruction(qtbot, workspace, tmp_path):
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, "vae.conv"))
    picture = np.zeros((40, 40, 3), np.uint8)
    picture[:, :20] = (200, 40, 40)
    ws.encode_file(picture, "halves.png")
    qtbot.waitUntil(lambda: len(ws.tray.items()) == 1, timeout=10_000)
    assert ws.tray.items()[0].name == "Encoded halves.png"
    assert "MSE" in ws.encode_panel.error_label.text()
    assert "posterior mean" in ws.encode_panel.error_label.text()
    assert ws.encode_panel.input_view.image().width() == 16
    assert ws.encode_panel.fit_label.text().startswith("Resized from 40x40 to 16 px")

    # A photograph of another shape: the result says it was cropped, not just shrunk.
    ws.encode_file(np.full((30, 60, 3), 120, np.uint8), "wide.png")
    qtbot.waitUntil(lambda: len(ws.tray.items()) == 2, timeout=10_000)
    note = ws.encode_panel.fit_label
    assert note.text().startswith("Centre-cropped to square and resized to 16 px")
    assert note.isVisibleTo(ws.encode_panel)
    ws.encode_file(np.full((16, 16, 3), 120, np.uint8), "exact.png")
    qtbot.waitUntil(lambda: len(ws.tray.items()) == 3, timeout=10_000)
    assert note.text() == "" and not note.isVisibleTo(ws.encode_panel)

    # Dropping an image file onto the workspace encodes it too.
    from PIL import Image
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    path = tmp_path / "dropped.png"
    Image.fromarray(picture[::-1]).save(path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(
        QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )  # fmt: skip
    ws.dropEvent(event)
    qtbot.waitUntil(lambda: len(ws.tray.items()) == 4, timeout=10_000)
    assert ws.tray.items()[3].name == "Encoded dropped.png"


def test_gan_projection_shows_progress_and_cancels(qtbot, workspace, tmp_path):
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, "gan.dcgan"))
    panel = ws.encode_panel
    assert panel.steps_row.isVisibleTo(panel)  # projection has a step count
    panel.steps_spin.setValue(5000)
    ws.encode_file(np.full((16, 16, 3), 90, np.uint8), "grey.png")
    assert panel.progress.isVisibleTo(panel)
    qtbot.waitUntil(lambda: panel.progress.value() > 5, timeout=10_000)
    # The sliders stay live during a projection: decodes run between its steps.
    ws.slider_panel.sliders[0].setValue(150)
    settle_decode = lambda: ws.displayed_request == ws.last_request  # noqa: E731
    qtbot.waitUntil(settle_decode, timeout=10_000)
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.progress.isVisibleTo(panel), timeout=10_000)
    assert ws.tray.items() == []  # a cancelled projection keeps nothing
    assert panel.progress.value() < 5000


def test_a_diffusion_run_slides_and_encodes_by_ddim_inversion(qtbot, workspace, tmp_path):
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, "diffusion.ddpm"))
    settings, sp = ws.diffusion_settings, ws.slider_panel
    assert settings.isVisibleTo(ws) and not sp.raw_toggle.isVisibleTo(ws)
    assert "alike in every direction" in sp.method_label.text()
    assert "DDIM inversion" in ws.header.subtitle.text()
    assert ws.interpolate_panel.mode() == "spherical"
    settings.steps_spin.setValue(4)  # fewer DDIM steps: a new picture of the same noise
    before = ws.image.copy()
    qtbot.waitUntil(lambda: not np.array_equal(before, ws.image), timeout=10_000)
    settle(qtbot, ws)
    assert ws.jobs.holder.space.steps == 4
    before, before_z = ws.image.copy(), ws.current_z()
    sp.sliders[0].setValue(300)
    settle(qtbot, ws)
    assert not np.array_equal(before, ws.image)
    assert np.array_equal(ws.image, ws.jobs.holder.space.decode(ws.current_z()))
    ws.reset()
    settle(qtbot, ws)
    assert np.array_equal(before, ws.image) and np.array_equal(ws.current_z(), before_z)

    picture = np.zeros((40, 40, 3), np.uint8)
    picture[:, :20] = (200, 40, 40)
    ws.encode_file(picture, "halves.png")
    qtbot.waitUntil(lambda: len(ws.tray.items()) == 1, timeout=20_000)
    panel = ws.encode_panel
    assert "MSE" in panel.error_label.text() and "DDIM inversion" in panel.error_label.text()
    assert panel.input_view.image().width() == 16 and panel.recon_view.image() is not None
    assert panel.progress.maximum() == 4 * 4 + 4  # passes: 4 steps x (1 + 3), then 4 back
    settle(qtbot, ws)
    assert np.array_equal(ws.image, ws.tray.items()[0].image)  # the sliders edit the encoding


def test_a_run_that_cannot_be_explored_says_why(qtbot, workspace, tmp_path):
    ws = workspace
    run = tmp_path / "text"
    RunFolder(run).write_config({"family": "diffusion.text", "train": {}})
    ws.open_run(run)
    qtbot.waitUntil(lambda: ws.banner.isVisible(), timeout=20_000)
    assert "cannot be explored" in ws.banner.text()
    assert ws.banner.level() == "info"
    assert not ws.slider_panel.isEnabled() and ws.loaded is None


def test_shutdown_leaves_no_running_thread(qtbot, workspace, tmp_path):
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, "vae.conv"))
    ws.slider_panel.sliders[0].setValue(100)
    assert ws.jobs.is_busy() or ws.displayed_request == ws.last_request
    assert ws.shutdown(5_000)
    assert not ws.jobs.is_busy()  # forgotten: nothing of Explore's is heard any more
    requests = ws.jobs.requested_count
    ws.slider_panel.sliders[0].setValue(-100)  # after shutdown: ignored, nothing is submitted
    assert ws.jobs.requested_count == requests and not ws.jobs.is_busy()
    # Explore has no thread of its own; its model is freed by a job on the engine thread.
    qtbot.waitUntil(lambda: ws.jobs.holder.space is None, timeout=10_000)


@pytest.mark.timeout(900 if os.environ.get("STUDIO_SCREENSHOT_DIR") else 300)
def test_screenshot(qtbot, app_settings, tmp_path) -> None:
    """Renders the workspace offscreen. With ``STUDIO_SCREENSHOT_DIR`` set, a VAE trained for a
    few minutes on the demo shapes is explored and the picture is written there as
    ``latent.png``."""
    import pyqtgraph as pg
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    from studio.core.jobs import CancelToken, run_sync
    from studio.engine.demo import make_demo_dataset
    from studio.engine.runs import TrainConfig
    from studio.engine.train import train_job
    from studio.qt.theme import apply_theme

    docs_dir = os.environ.get("STUDIO_SCREENSHOT_DIR")
    if docs_dir:
        data = run_sync(make_demo_dataset(tmp_path / "shapes", count=600, size=32)).result
        cfg = TrainConfig(
            family="vae.conv", data=str(data), resolution=32, batch_size=32, steps=2400,
            sample_every=10_000, checkpoint_every=10_000, log_every=50, device="cpu",
            holdout_fraction=0.05, model={"latent_dim": 16, "width": 16},
        )  # fmt: skip
        run = tmp_path / "shapes-vae"
        assert run_sync(train_job(run, CancelToken(), cfg)).ok
    else:
        run = make_run(tmp_path, "vae.conv")

    app = QApplication.instance()
    saved = (app.style().name(), QPalette(app.palette()), app.styleSheet(), dict(pg.CONFIG_OPTIONS))
    apply_theme(app)
    runner = JobRunner()
    app_settings.set_device_preference("cpu")
    ws = LatentWorkspace(runner, app_settings)
    ws.pca_samples, ws.pca_k = (1000, 8) if docs_dir else (64, 4)
    qtbot.addWidget(ws)
    try:
        ws.resize(1360, 860)
        ws.show()
        open_and_wait(qtbot, ws, run)
        ws.keep_current()
        for seed in (7, 3):
            ws.slider_panel.seed_spin.setValue(seed)
            qtbot.waitUntil(
                lambda s=seed: ws.caption.text().startswith(f"Seed {s}"), timeout=10_000
            )
            settle(qtbot, ws)
            ws.keep_current()
        ws.interpolate_panel.pick_b.setCurrentIndex(1)
        ws.make_strip()
        qtbot.waitUntil(lambda: ws.interpolate_panel.frames is not None, timeout=10_000)
        # Make a "bright" slider: the four brightest samples of the grid against the four darkest.
        panel = ws.attribute_panel
        qtbot.waitUntil(lambda: panel._z is not None, timeout=10_000)
        brightness = ws.jobs.holder.space.decode(panel._z).mean(axis=(1, 2, 3))
        order = np.argsort(brightness)
        for i in order[-4:]:
            panel.tiles[i].set_mark(1)
        for i in order[:4]:
            panel.tiles[i].set_mark(-1)
        panel.name_edit.setText("bright")
        ws.fit_slider()
        qtbot.waitUntil(lambda: ws.named_slider_names() == ["bright"], timeout=30_000)
        for slider, value in zip(ws.slider_panel.sliders, (120, -80, 60)):
            slider.setValue(value)
        ws.slider_panel.named_rows.sliders[0].setValue(90)
        settle(qtbot, ws)
        qtbot.wait(100)
        pixmap = ws.grab()
        out_dirs = [tmp_path] + ([Path(docs_dir)] if docs_dir else [])
        for out in out_dirs:
            out.mkdir(parents=True, exist_ok=True)
            assert pixmap.save(str(out / "latent.png"))
            assert (out / "latent.png").stat().st_size > 10_000
    finally:
        ws.shutdown()
        runner.shutdown(5_000)
        style, palette, sheet, options = saved
        app.setStyleSheet(sheet)
        app.setStyle(style)
        app.setPalette(palette)
        pg.setConfigOptions(**options)
