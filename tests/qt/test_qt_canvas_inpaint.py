"""Inpainting from the canvas, end to end, with tiny two-step DCGAN and DDPM runs: the job runs
on the engine thread, variations land in the staging strip, Accept is one undoable step that
changes only the masked (and feathered) area, Cancel leaves everything as it was."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from test_qt_canvas_support import drag, open_workspace, test_image, widget_point

from studio.core.brush import grow
from studio.qt.canvas.tools import Tool

LEFT = Qt.MouseButton.LeftButton


@pytest.fixture
def workspace(qtbot, app_settings):
    yield from open_workspace(qtbot, app_settings)


TINY_RUNS = {
    "gan.dcgan": {"latent_dim": 8, "width": 8},
    "diffusion.ddpm": {"width": 8, "layers_per_block": 1, "attention_res": 4},
}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """Two-step DCGAN and DDPM runs on 16 px images in two classes (trained once per module)."""
    from helpers import make_tiny_dataset, train_tiny_run

    base = tmp_path_factory.mktemp("canvas_runs")
    data = make_tiny_dataset(base / "data", n=16, size=16, classes=2)
    runs = {key: train_tiny_run(base / key, key, data, model) for key, model in TINY_RUNS.items()}
    return runs


def choose_run(qtbot, workspace, path: Path):
    panel = workspace.inpaint_panel
    with qtbot.waitSignal(panel.run_loaded, timeout=60_000) as blocker:
        panel.set_run(path)
    return blocker.args[0]


def paint_rect(workspace, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    workspace.tools.set_tool(Tool.RECT)
    drag(workspace.view, [(x0, y0), (x1, y1)])
    mask = workspace.document.mask.copy()
    assert mask.max() == 1.0
    return mask


def generate(qtbot, workspace) -> None:
    panel = workspace.inpaint_panel
    qtbot.mouseClick(panel.generate_button, LEFT)
    assert panel.running and not panel.generate_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)


def blend_region(mask: np.ndarray, feather: float) -> np.ndarray:
    """Where an accepted result may differ: the mask grown by twice the feather (+1 px for
    the anti-aliased rim)."""
    return grow((mask > 0).astype(np.float32), 2 * math.ceil(feather) + 1) > 0


def accept_and_check(qtbot, workspace, original: np.ndarray, mask: np.ndarray, feather: float):
    staging, doc = workspace.staging, workspace.document
    staging.choose(1)
    assert workspace.view.previewing and np.array_equal(doc.image, original)  # not committed
    qtbot.mouseClick(staging.accept_button, LEFT)
    assert staging.count() == 0 and not workspace.view.previewing
    new = doc.image
    near = blend_region(mask, feather)
    assert np.array_equal(new[~near], original[~near])  # untouched far from the mask
    assert (new[mask == 1.0] != original[mask == 1.0]).any()  # regenerated inside it
    assert workspace.undo.stack.undoText() == "Accept inpainting"
    QTest.keyClick(workspace.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(doc.image, original) and np.array_equal(doc.mask, mask)


def test_inpaint_with_a_dcgan_stages_variations_and_accept_is_undoable(
    qtbot, workspace, tiny_runs
) -> None:
    original = test_image(72, 96, seed=1)
    workspace.set_image(original, "photo")
    mask = paint_rect(workspace, 30, 20, 50, 40)
    panel = workspace.inpaint_panel
    info = choose_run(qtbot, workspace, tiny_runs["gan.dcgan"])
    assert info.kind == "gan" and "DCGAN" in panel.family_label.text()
    assert not panel._form.isRowVisible(panel.method_combo)  # diffusion only
    assert not panel._form.isRowVisible(panel.class_combo)  # unconditional
    assert "Adam steps" in panel.preset_label.text()
    panel.variations_spin.setValue(3)
    panel.feather_spin.setValue(3)
    panel.padding_spin.setValue(4)
    panel.lock_seed.setChecked(True)
    panel.seed_spin.setValue(11)
    generate(qtbot, workspace)
    assert workspace.staging.count() == 3 and workspace.staging.isVisible()
    assert "seed 11" in workspace.staging.caption.text()
    assert panel.preview.generation > 0  # intermediate previews arrived
    assert np.array_equal(workspace.document.mask, mask)  # the mask stays with its image
    accept_and_check(qtbot, workspace, original, mask, 3.0)

    # Variations are whole images made from the pixels of their time: once the image has
    # changed (here by the accept just made), older ones are refused rather than pasted.
    generate(qtbot, workspace)
    QTest.keyClick(workspace.view, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)  # redo
    workspace.staging.choose(0)
    qtbot.mouseClick(workspace.staging.accept_button, LEFT)
    assert "image changed" in workspace.banner.text()
    assert workspace.staging.count() == 3


def test_inpaint_with_a_conditional_ddpm_and_masks_survive_run_changes(
    qtbot, workspace, tiny_runs
) -> None:
    original = test_image(64, 64, seed=2)
    workspace.set_image(original, "photo")
    mask = paint_rect(workspace, 20, 24, 36, 40)
    panel = workspace.inpaint_panel
    choose_run(qtbot, workspace, tiny_runs["gan.dcgan"])
    info = choose_run(qtbot, workspace, tiny_runs["diffusion.ddpm"])
    assert np.array_equal(workspace.document.mask, mask)  # changing the model keeps the mask
    assert info.class_names == ("class_0", "class_1")
    assert panel._form.isRowVisible(panel.method_combo)
    assert panel._form.isRowVisible(panel.class_combo)
    assert [panel.class_combo.itemText(i) for i in range(3)][1:] == ["class_0", "class_1"]
    assert "150 UNet evaluations" in panel.preset_label.text()  # RePaint fast
    panel.method_combo.setCurrentIndex(panel.method_combo.findData("masked"))
    assert "25 UNet evaluations" in panel.preset_label.text()
    panel.class_combo.setCurrentIndex(2)
    panel.variations_spin.setValue(2)
    panel.feather_spin.setValue(2)
    assert panel.request_settings()["conditions"] == {"label": 1}
    generate(qtbot, workspace)
    assert workspace.staging.count() == 2
    recent = workspace._settings.recent_runs()
    assert str(tiny_runs["diffusion.ddpm"]) == recent[0]  # chosen runs become recent runs
    accept_and_check(qtbot, workspace, original, mask, 2.0)


@pytest.mark.parametrize("radius", [0.0, 1.0, 4.5, 8.0])
def test_the_feather_preview_is_the_blend_inpainting_uses(radius: float) -> None:
    from studio.engine.inpaint import blend_masks
    from studio.qt.canvas.overlay import blend

    rng = np.random.default_rng(int(radius * 10))
    mask = np.zeros((60, 80), np.float32)
    mask[20:35, 30:50] = rng.random((15, 20), dtype=np.float32)
    mask[5, 5] = 1.0
    assert np.array_equal(blend(mask, radius), blend_masks(mask, radius)[0])


def test_cancel_mid_inpaint_leaves_the_canvas_untouched(qtbot, workspace, tiny_runs) -> None:
    original = test_image(48, 48, seed=4)
    workspace.set_image(original, "photo")
    mask = paint_rect(workspace, 10, 10, 30, 30)
    panel = workspace.inpaint_panel
    choose_run(qtbot, workspace, tiny_runs["diffusion.ddpm"])
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("quality"))  # 500 UNet calls
    commands = workspace.undo.stack.count()
    cancelled = []

    def on_progress(handle, progress, image, points) -> None:
        if progress.stage == "inpaint" and progress.step >= 2 and not cancelled:
            cancelled.append(progress.step)
            qtbot.mouseClick(panel.cancel_button, LEFT)

    workspace.runner.job_progress.connect(on_progress)
    generate(qtbot, workspace)
    assert cancelled and "Cancelled" in panel.status_label.text()
    assert workspace.staging.count() == 0 and not workspace.view.previewing
    assert np.array_equal(workspace.document.image, original)
    assert np.array_equal(workspace.document.mask, mask)
    assert workspace.undo.stack.count() == commands
    assert panel.generate_button.isEnabled()


def test_inpaint_errors_say_what_to_do(qtbot, workspace, tiny_runs, tmp_path) -> None:
    panel = workspace.inpaint_panel
    assert not panel.generate_button.isEnabled()  # no run yet
    assert not panel.generate()
    assert "Choose a run" in panel.banner.text()
    panel.set_run(tmp_path)  # an ordinary folder, described on a worker
    qtbot.waitUntil(lambda: "not a run folder" in panel.banner.text(), timeout=30_000)
    choose_run(qtbot, workspace, tiny_runs["gan.dcgan"])
    assert panel.banner.text() == ""
    assert not panel.generate()
    assert "Open an image" in panel.banner.text()
    workspace.set_image(test_image(), "photo")
    assert not panel.generate()
    assert "No mask painted" in panel.banner.text()
    assert workspace.staging.count() == 0


def landscape_vae(base: Path, steps: int) -> Path:
    """A small VAE trained on crops of :func:`landscape`, so its inpainting looks like sky and
    hills (the two-step test runs paint noise). Minutes of training would be wasted here."""
    from PIL import Image

    from studio.core.jobs import CancelToken, run_sync
    from studio.engine.runs import TrainConfig
    from studio.engine.train import train_job

    scene, rng = landscape(), np.random.default_rng(0)
    data = base / "crops"
    data.mkdir(parents=True)
    for i in range(96):
        s = int(rng.integers(64, 200))
        y, x = int(rng.integers(0, scene.shape[0] - s)), int(rng.integers(0, scene.shape[1] - s))
        crop = Image.fromarray(scene[y : y + s, x : x + s]).resize((16, 16), Image.LANCZOS)
        crop.save(data / f"{i:03d}.png")
    config = TrainConfig(
        family="vae.conv", data=str(data), resolution=16, batch_size=16, steps=steps, seed=1,
        sample_every=10_000, checkpoint_every=10_000, log_every=50, samples=4,
        holdout_fraction=0.0, device="cpu", model={"latent_dim": 16, "width": 16},
    )  # fmt: skip
    out = run_sync(train_job(base / "landscape-vae", CancelToken(), config))
    assert out.ok, out.error or out.details
    return base / "landscape-vae"


def test_screenshot_of_the_canvas(qtbot, app_settings, tmp_path) -> None:
    """Renders the themed workspace with a painted mask, the overlay and staged variations;
    with ``STUDIO_SCREENSHOT_DIR`` set it writes ``canvas.png`` there (docs use docs/images)."""
    import pyqtgraph as pg
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    from studio.qt.theme import apply_theme

    docs_dir = os.environ.get("STUDIO_SCREENSHOT_DIR")
    run = landscape_vae(tmp_path, 400 if docs_dir else 20)
    app = QApplication.instance()
    saved = (app.style().name(), QPalette(app.palette()), app.styleSheet(), dict(pg.CONFIG_OPTIONS))
    apply_theme(app)
    try:
        for workspace in open_workspace(qtbot, app_settings):
            workspace.resize(1230, 800)  # what the window gives it beside the navigation
            workspace.set_image(landscape(), "hillside")
            qtbot.wait(20)
            workspace.tools.set_brush(size=40, hardness=0.6)
            drag(workspace.view, [(318, 112), (340, 104), (362, 112), (366, 132), (348, 150)])
            drag(workspace.view, [(322, 136), (340, 148), (356, 140), (340, 124)])
            panel = workspace.inpaint_panel
            choose_run(qtbot, workspace, run)
            panel.variations_spin.setValue(4)
            generate(qtbot, workspace)
            workspace.view.set_zoom(1.25)
            QTest.mouseMove(workspace.view, widget_point(workspace.view, 420, 150))  # brush outline
            qtbot.wait(200)  # the smooth zoom copy
            shot = workspace.grab()
            targets = [tmp_path] + ([Path(docs_dir)] if docs_dir else [])
            for folder in targets:
                folder.mkdir(parents=True, exist_ok=True)
                assert shot.save(str(folder / "canvas.png"))
                assert (folder / "canvas.png").stat().st_size > 10_000
    finally:
        style, palette, sheet, options = saved
        app.setStyleSheet(sheet)
        app.setStyle(style)
        app.setPalette(palette)
        pg.setConfigOptions(**options)


def landscape(h: int = 360, w: int = 540) -> np.ndarray:
    """A small painted scene: sky, sun, two hills, a house."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([120 + 80 * yy / h, 170 + 50 * yy / h, 235 - 20 * yy / h], -1)
    img = sky.copy()
    sun = (xx - 340) ** 2 + (yy - 128) ** 2 < 30**2
    img[sun] = (255, 220, 120)
    back = yy > 230 - 50 * np.sin(xx / 90.0)
    img[back] = np.stack([70 + 0 * xx, 140 + 20 * np.sin(xx / 13.0), 80 + 0 * xx], -1)[back]
    front = yy > 290 - 30 * np.cos(xx / 70.0 + 1)
    img[front] = np.stack([50 + 0 * xx, 110 + 15 * np.cos(yy / 7.0), 50 + 0 * xx], -1)[front]
    house = (xx > 120) & (xx < 190) & (yy > 200) & (yy < 255)
    img[house] = (200, 170, 140)
    roof = (yy > 170) & (yy <= 200) & (np.abs(xx - 155) < (yy - 170) * 1.3)
    img[roof] = (150, 60, 50)
    noise = np.random.default_rng(0).normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _fake_result(image: np.ndarray, n: int = 3, step: int | None = 7):
    from studio.qt.canvas.jobs import InpaintResult

    images = [np.full_like(image, 40 * (i + 1)) for i in range(n)]
    thumbs = [np.full((16, 16, 3), 40 * (i + 1), np.uint8) for i in range(n)]
    return InpaintResult(images, thumbs, seed=3, live=False, step=step)


def test_staging_variations_keeps_the_zoom_and_accept_shows_the_result(qtbot, workspace):
    workspace.resize(1000, 700)
    workspace.show()
    qtbot.waitExposed(workspace)
    original = test_image(72, 96, seed=1)
    workspace.set_image(original, "photo")
    paint_rect(workspace, 30, 20, 50, 40)
    qtbot.wait(50)
    scale, size = workspace.view.scale, workspace.view.size()
    doc = workspace.document
    workspace.stager.stage(_fake_result(original), doc, doc.image_revision)
    workspace.staging.choose(0)
    qtbot.wait(50)
    assert workspace.view.size() == size and workspace.view.scale == scale  # no jump
    assert "checkpoint of step 7" in workspace.staging.caption.text()
    assert workspace.view.show_overlay
    qtbot.mouseClick(workspace.staging.accept_button, LEFT)
    # The overlay would cover the accepted result: hidden, and back with the next mask edit.
    assert not workspace.view.show_overlay
    assert not workspace.options.overlay_button.isChecked()
    workspace.grab().save(os.path.join(os.environ.get("TMPDIR", "/tmp"), "canvas_accepted.png"))
    workspace.tools.clear()
    assert workspace.view.show_overlay


def test_opening_another_image_drops_the_old_previews(qtbot, workspace, tiny_runs):
    workspace.set_image(test_image(64, 64, seed=1), "first")
    paint_rect(workspace, 20, 20, 40, 40)
    choose_run(qtbot, workspace, tiny_runs["gan.dcgan"])
    workspace.inpaint_panel.variations_spin.setValue(1)
    generate(qtbot, workspace)
    panel = workspace.inpaint_panel
    assert not panel.preview.image().isNull()
    assert "Saved weights: checkpoint of step 2" in panel.status_label.text()
    workspace.document.history.mark_clean()  # (no "replace the canvas?" question)
    assert workspace.set_image(test_image(48, 80, seed=5), "second")
    assert panel.preview.image().isNull() and panel.status_label.text() == ""
    assert workspace.staging.count() == 0


def test_inpaint_on_the_run_that_trains_says_training_waits_and_how_long(
    qtbot, workspace, tiny_runs
) -> None:
    """Canvas Generate on the run training here runs between its steps (training waits for
    it): the panel says so when it is submitted, and how long training waited when done."""
    import threading
    import time

    from studio.core.jobs import Progress
    from studio.engine import live
    from studio.qt.canvas.inpaint_panel import between_steps_text

    run = tiny_runs["gan.dcgan"]
    release, steps = threading.Event(), [0]

    def training(token):
        from studio.engine.sample import load_run_model

        live.register(run, load_run_model(run, "cpu"), token)
        try:
            while not release.is_set():
                time.sleep(0.01)
                steps[0] += 1
                yield Progress("train", steps[0], 10_000)
        finally:
            live.unregister(run)

    workspace.set_image(test_image(48, 48, seed=2), "photo")
    paint_rect(workspace, 10, 10, 30, 30)
    panel = workspace.inpaint_panel
    choose_run(qtbot, workspace, run)
    handle = panel._runner.submit("Train", training)
    try:
        qtbot.waitUntil(lambda: live.is_live(run) and steps[0] > 2, timeout=30_000)
        panel.variations_spin.setValue(1)
        qtbot.mouseClick(panel.generate_button, LEFT)
        assert "between two training steps; training waits" in panel.status_label.text()
        qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
        text = panel.status_label.text()
        assert "Ran between training steps: training waited " in text
        assert live.is_live(run)  # training goes on afterwards
    finally:
        release.set()
        qtbot.waitUntil(lambda: not live.is_live(run), timeout=30_000)
    assert handle.token is not None
    assert "Quality preset can take minutes: training waits" in between_steps_text("quality")
