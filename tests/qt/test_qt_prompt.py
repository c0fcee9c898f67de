"""The Prompt workspace end to end with a tiny random Stable Diffusion pipeline (16 px, 2 steps):
generation runs on the engine thread and gives images of the requested size, saved to the
history with their settings; cancel keeps nothing and leaves the canvas alone; history recall
and a dropped PNG restore the settings; image-to-image lands on the canvas's staging strip."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication
from test_qt_canvas_support import engine, test_image

from studio.qt.canvas import CanvasWorkspace
from studio.qt.prompt import PromptWorkspace, model_list

LEFT = Qt.MouseButton.LeftButton
TINY = {"steps": 2, "width": 16, "height": 16, "guidance": 2.0, "scheduler": "ddim"}


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny random SD pipeline folder, built once per module (and so loaded once: the
    workspace's pipeline cache keys on the path)."""
    from prompt_fixtures import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("prompt_models") / "tiny-sd")


@contextlib.contextmanager
def open_prompt(qtbot, settings, model: Path) -> Iterator[PromptWorkspace]:
    """A shown Prompt workspace beside a Canvas workspace, ``model`` in the library."""
    from studio.engine.prompt.library import ModelLibrary

    ModelLibrary().add(model, name="tiny-sd")
    with engine() as runner:
        canvas = CanvasWorkspace(runner, settings)
        ws = PromptWorkspace(runner, settings, canvas)
        sent: list[tuple[np.ndarray, str]] = []
        ws.send_to_canvas = lambda image, name: sent.append((image, name))
        ws.sent = sent
        qtbot.addWidget(canvas)
        qtbot.addWidget(ws)
        ws.resize(1200, 760)
        with qtbot.waitSignal(ws.model_list.models_loaded, timeout=60_000):
            ws.show()  # the first show lists the models and the history
        qtbot.waitUntil(lambda: ws.history.loaded, timeout=30_000)
        assert ws.model_list.current() is not None
        ws.params.set_values({**TINY, "prompt": "a red circle", "batch_count": 1})
        yield ws
        ws.shutdown()
        canvas.shutdown()


@pytest.fixture
def workspace(qtbot, app_settings, tiny_sd):
    with open_prompt(qtbot, app_settings, tiny_sd) as ws:
        yield ws


def generate(qtbot, ws, timeout: int = 120_000) -> None:
    qtbot.mouseClick(ws.generate_button, LEFT)
    assert ws.running, ws.banner.text()
    assert not ws.generate_button.isEnabled()
    qtbot.waitUntil(lambda: not ws.running, timeout=timeout)
    assert not ws.banner.text(), ws.banner.text()


def test_model_list_shows_type_size_and_precision(workspace) -> None:
    tree = workspace.model_list.tree
    row = [tree.topLevelItem(0).text(c) for c in range(4)]
    assert row[0] == "tiny-sd"
    assert row[1].endswith("folder")  # a diffusers folder (too tiny to tell SD 1 or 2)
    assert row[2].endswith(("KB", "MB")) and row[3] in ("fp32", "fp16", "bf16", "mixed")


def test_choosing_a_run_trained_here_sets_its_own_size(workspace) -> None:
    from studio.engine.prompt.library import ModelEntry

    sd = workspace.model_list.current()
    run = ModelEntry("run:texty", "texty", "/runs/texty", "studio-run", "studio", resolution=32)
    workspace.params.width_spin.setValue(512)
    workspace.params.height_spin.setValue(512)
    workspace.model_list.set_entries([sd, run])
    assert workspace.params.width_spin.value() == 512  # the SD model is still the chosen one
    workspace.model_list.tree.setCurrentItem(workspace.model_list.tree.topLevelItem(1))
    assert workspace.model_list.current().id == "run:texty"
    assert (workspace.params.width_spin.value(), workspace.params.height_spin.value()) == (32, 32)


def test_txt2img_gives_images_of_the_requested_size_saved_with_settings(qtbot, workspace):
    from studio.engine.prompt.pngmeta import read_png_metadata

    ws = workspace
    ws.params.set_values({"width": 24, "height": 16, "batch_count": 2, "seed": 11})
    ws.params.lock_seed.setChecked(True)
    previews_before = ws.preview.generation
    generate(qtbot, ws)
    result = ws.result
    assert result is not None and len(result.images) == 2
    assert all(im.shape == (16, 24, 3) and im.dtype == np.uint8 for im in result.images)
    assert result.seeds == [11, 12]
    assert not np.array_equal(result.images[0], result.images[1])
    assert ws.preview.generation > previews_before  # previews and the result were shown
    assert ws.results.count() == 2 and ws.history.count() == 2
    # Every output is in the history, its PNG carrying its settings.
    assert len(result.paths) == 2
    meta = read_png_metadata(result.paths[0])
    assert meta["prompt"] == "a red circle" and meta["seed"] == 11 and meta["width"] == 24
    # Send to canvas hands the chosen full-size image to the window's hook.
    ws.results.choose(1)
    qtbot.mouseClick(ws.results.send_button, LEFT)
    assert len(ws.sent) == 1 and np.array_equal(ws.sent[0][0], result.images[1])


def test_unload_frees_the_loaded_model_and_the_next_generate_loads_it(qtbot, workspace):
    from studio.engine.prompt.generate import default_cache

    ws = workspace
    generate(qtbot, ws)
    assert len(default_cache()) >= 1
    lists = ws.model_list
    qtbot.mouseClick(lists.unload_button, LEFT)
    qtbot.waitUntil(lambda: not lists.busy, timeout=30_000)
    assert "Unloaded tiny-sd" in lists.banner.text() and len(default_cache()) == 0
    generate(qtbot, ws)  # loads it again
    assert len(default_cache()) >= 1


def test_cancel_mid_run_keeps_nothing_and_leaves_the_canvas_alone(qtbot, workspace) -> None:
    ws, canvas = workspace, workspace.canvas
    canvas.set_image(test_image(16, 16), "start")
    doc = canvas.document
    before = doc.image.copy()
    ws.params.set_values({"mode": "img2img", "steps": 400, "strength": 1.0})
    seen: list[int] = []

    def on_progress(handle, progress, image, points) -> None:
        if ws.generation.job is not None and handle is ws.generation.job and progress.total:
            seen.append(progress.step)
            ws.cancel()

    ws.calls.runner.job_progress.connect(on_progress)
    generate(qtbot, ws, timeout=60_000)
    assert seen and max(seen) < 400  # it was cancelled while running
    assert "Cancelled" in ws.status_label.text()
    assert ws.result is None and ws.results.count() == 0 and ws.history.count() == 0
    assert ws.preview.image().isNull()  # the partial preview is dropped too
    assert canvas.document is doc and np.array_equal(doc.image, before)
    assert canvas.staging.count() == 0 and canvas.undo.stack.count() == 0


def test_img2img_results_are_staged_on_the_canvas(qtbot, workspace) -> None:
    ws, canvas = workspace, workspace.canvas
    canvas.set_image(test_image(16, 16), "start")
    doc = canvas.document
    before = doc.image.copy()
    ws.params.set_values({"mode": "img2img", "strength": 0.5, "steps": 4, "batch_count": 2})
    with qtbot.waitSignal(ws.staged_on_canvas, timeout=120_000) as blocker:
        generate(qtbot, ws)
    assert blocker.args == [2]
    assert canvas.staging.count() == 2
    assert np.array_equal(doc.image, before)  # staged, not yet accepted
    canvas.staging.choose(0)
    qtbot.mouseClick(canvas.staging.accept_button, LEFT)
    assert np.array_equal(doc.image, ws.result.images[0])
    assert not np.array_equal(doc.image, before)


def test_inpaint_uses_the_canvas_mask(qtbot, workspace) -> None:
    ws, canvas = workspace, workspace.canvas
    canvas.set_image(test_image(16, 16), "start")
    ws.params.set_values({"mode": "inpaint"})
    assert not ws.generate() and "mask" in ws.banner.text().lower()  # nothing painted yet
    mask = np.zeros((16, 16), np.float32)
    mask[4:12, 4:12] = 1.0
    canvas.undo.record(canvas.document.set_mask(mask, "test mask"))
    ws.params.set_values({"strength": 1.0, "steps": 2, "mask_blur": 0})
    generate(qtbot, ws)
    assert canvas.staging.count() == 1
    out = ws.result.images[0]
    assert out.shape == (16, 16, 3)
    assert ws.result.metadata[0]["mode"] == "inpaint"


def test_recall_from_history_restores_the_settings(qtbot, workspace) -> None:
    ws = workspace
    ws.params.set_values({"seed": 4242, "steps": 3, "guidance": 3.5, "scheduler": "euler"})
    ws.params.lock_seed.setChecked(True)
    ws.params.prompt_edit.setPlainText("a blue square")
    ws.params.negative_edit.setPlainText("green")
    generate(qtbot, ws)
    wanted = ws.params.values()
    ws.params.set_values(
        {"seed": 1, "steps": 9, "guidance": 9.0, "scheduler": "unipc", "width": 64}
    )
    ws.params.prompt_edit.setPlainText("something else")
    ws.params.lock_seed.setChecked(False)
    # The history as read back from disk, not just the in-memory list.
    with qtbot.waitSignal(ws.history.history_loaded, timeout=30_000):
        ws.history.refresh()
    assert ws.history.count() == 1
    with qtbot.waitSignal(ws.params_restored) as blocker:
        ws.history.list.setCurrentRow(0)
        qtbot.mouseClick(ws.history.recall_button, LEFT)
    assert {"seed", "steps", "guidance", "scheduler", "prompt"} <= set(blocker.args[0])
    assert ws.params.values() == wanted
    assert ws.params.lock_seed.isChecked()  # Generate now redoes that image

    # A seed beyond the seed box's range is not clamped (that would make another image): the
    # rest is restored, the seed is left alone, and the banner says so.
    names = ws.recall({**ws.params.values(), "seed": 2**64, "steps": 5}, "a PNG")
    assert "seed" not in names and "steps" in names
    assert ws.params.values()["seed"] == wanted["seed"] and ws.params.values()["steps"] == 5
    assert "except seed" in ws.banner.text()


def _drop(widget, path: Path) -> QDropEvent:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    actions = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(QPoint(20, 20), actions, mime, LEFT, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(20, 20), actions, mime, LEFT, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop


def test_dropping_a_png_with_settings_restores_them(qtbot, workspace, tmp_path) -> None:
    from studio.engine.prompt.pngmeta import write_png
    from studio.engine.prompt.request import GenerateRequest

    ws = workspace
    request = GenerateRequest(
        model=str(ws.model_list.current().path), prompt="a green triangle",
        negative_prompt="blur", steps=7, guidance=5.5, scheduler="euler_a", seed=777,
        width=32, height=24, batch_count=1,
    )  # fmt: skip
    png = write_png(tmp_path / "made.png", test_image(24, 32), request.to_metadata())
    with qtbot.waitSignal(ws.params_restored, timeout=30_000):
        _drop(ws, png)
    values = ws.params.values()
    assert values["prompt"] == "a green triangle" and values["negative_prompt"] == "blur"
    assert (values["steps"], values["guidance"], values["scheduler"]) == (7, 5.5, "euler_a")
    assert (values["seed"], values["width"], values["height"]) == (777, 32, 24)
    assert "made.png" in ws.status_label.text()

    plain = tmp_path / "plain.png"
    from PIL import Image

    Image.fromarray(test_image(8, 8)).save(plain)
    _drop(ws, plain)
    qtbot.waitUntil(lambda: "no generation settings" in ws.banner.text(), timeout=30_000)
    assert ws.params.values()["prompt"] == "a green triangle"  # nothing changed


def test_a_pickled_model_is_not_read_without_consent(qtbot, workspace, tmp_path, monkeypatch):
    from prompt_fixtures import write_pickle_bomb

    ws = workspace
    canary = tmp_path / "canary"
    bomb = write_pickle_bomb(tmp_path / "model.ckpt", canary)
    with qtbot.waitSignal(ws.model_list.models_loaded, timeout=30_000):
        ws.model_list.add(bomb)
    entry = ws.model_list.current()
    assert entry.needs_consent and Path(entry.path).name == "model.ckpt"
    asked: list[str] = []
    monkeypatch.setattr(model_list, "ask_pickle_consent", lambda *a: asked.append(a[1]) or False)
    assert not ws.generate()
    assert asked and not ws.running and "pickled" in ws.banner.text()
    # Agreeing reads it in weights-only mode, which refuses the payload: it never runs.
    monkeypatch.setattr(model_list, "ask_pickle_consent", lambda *a: True)
    assert ws.generate()
    qtbot.waitUntil(lambda: not ws.running, timeout=60_000)
    assert ws.banner.text() and not canary.exists() and ws.result is None


def test_xy_grid_renders_a_labelled_grid(qtbot, workspace, tmp_path) -> None:
    from PIL import Image

    from studio.engine.prompt.pngmeta import read_png_metadata

    ws = workspace
    dialog = ws.open_xy_dialog()
    qtbot.addWidget(dialog)
    dialog.set_axes(("seed", "1, 2, 3"), ("guidance", "1, 4"))
    assert dialog.render_grid()
    qtbot.waitUntil(lambda: not dialog.running, timeout=120_000)
    assert dialog.grid is not None, dialog.banner.text()
    assert (dialog.result.rows, dialog.result.cols) == (2, 3)
    h, w = dialog.grid.shape[:2]
    assert w >= 3 * 16 and h >= 2 * 16 and w > h  # three columns, two rows, plus labels
    assert dialog.view.image().width() == w
    dialog.save(tmp_path / "grid.png")
    qtbot.waitUntil(lambda: (tmp_path / "grid.png").exists(), timeout=30_000)
    with Image.open(tmp_path / "grid.png") as saved:
        assert saved.size == (w, h)
    assert read_png_metadata(tmp_path / "grid.png") == dialog.result.metadata
    dialog.close()


def test_settings_persist(qtbot, app_settings, workspace) -> None:
    ws = workspace
    ws.params.set_values({"steps": 17, "scheduler": "unipc", "memory": "low"})
    ws.params.prompt_edit.setPlainText("kept")
    ws.save_prefs()
    with engine() as runner:
        again = PromptWorkspace(runner, app_settings)
        qtbot.addWidget(again)
        values = again.params.values()
        assert (values["steps"], values["scheduler"], values["memory"]) == (17, "unipc", "low")
        assert values["prompt"] == "kept"


def test_screenshot_of_the_prompt_workspace(qtbot, app_settings, tiny_sd, tmp_path) -> None:
    """Renders the themed workspace after a generation; with ``STUDIO_SCREENSHOT_DIR`` set it
    writes ``prompt.png`` there (docs use docs/images)."""
    import pyqtgraph as pg
    from PySide6.QtGui import QPalette

    from studio.qt.theme import apply_theme

    docs_dir = os.environ.get("STUDIO_SCREENSHOT_DIR")
    app = QApplication.instance()
    saved = (app.style().name(), QPalette(app.palette()), app.styleSheet(), dict(pg.CONFIG_OPTIONS))
    apply_theme(app)
    try:
        with open_prompt(qtbot, app_settings, tiny_sd) as ws:  # built themed, as in the app
            ws.resize(1230, 800)  # what the window gives it beside the navigation
            ws.params.set_values({"batch_count": 4, "steps": 4, "width": 32, "height": 32})
            ws.params.prompt_edit.setPlainText("a red circle on a blue background")
            ws.params.negative_edit.setPlainText("blurry")
            generate(qtbot, ws)
            qtbot.wait(50)
            shot = ws.grab()
        for folder in [tmp_path] + ([Path(docs_dir)] if docs_dir else []):
            folder.mkdir(parents=True, exist_ok=True)
            assert shot.save(str(folder / "prompt.png"))
            assert (folder / "prompt.png").stat().st_size > 10_000
    finally:
        style, palette, sheet, options = saved
        app.setStyleSheet(sheet)
        app.setStyle(style)
        app.setPalette(palette)
        pg.setConfigOptions(**options)


def test_the_window_has_a_prompt_workspace_wired_to_the_canvas(qtbot, app_settings) -> None:
    from studio.qt.main_window import MainWindow

    win = MainWindow(app_settings)
    qtbot.addWidget(win)
    win.close_timeout_ms = 20_000
    assert win.nav.item(win.PROMPT).text() == "Prompt"
    win.show_workspace(win.PROMPT)
    assert win.stack.currentWidget() is win.prompt and win.prompt.canvas is win.canvas
    image = test_image(16, 24)
    win.prompt.send_to_canvas(image, "Prompt 5")  # what "Send to canvas" calls
    assert win.stack.currentWidget() is win.canvas
    assert np.array_equal(win.canvas.document.image, image)


def test_a_prompt_run_trained_here_generates_in_the_workspace(
    qtbot, app_settings, tiny_sd, tmp_path
):
    """A diffusion.text run appears in the model list beside the SD models and generates."""
    from helpers import train_tiny_run
    from PIL import Image

    from studio.core.paths import runs_dir
    from studio.engine.prompt.pngmeta import read_png_metadata

    data = tmp_path / "captioned"
    data.mkdir()
    for i, (name, rgb) in enumerate([("red", (220, 40, 40)), ("blue", (40, 80, 210))] * 4):
        Image.new("RGB", (16, 16), rgb).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"a {name} square", encoding="utf-8")
    train_tiny_run(runs_dir() / "texty", "diffusion.text", data, steps=2, holdout_fraction=0.0)

    with open_prompt(qtbot, app_settings, tiny_sd) as ws:
        assert ws.model_list.select("run:texty"), [e.id for e in ws.model_list.entries()]
        assert (ws.params.width_spin.value(), ws.params.height_spin.value()) == (16, 16)
        ws.params.set_values({"prompt": "a red square", "seed": 3, "steps": 2, "batch_count": 1})
        ws.params.lock_seed.setChecked(True)
        generate(qtbot, ws)
        result = ws.result
        assert result is not None and len(result.images) == 1
        assert result.images[0].shape == (16, 16, 3)
        meta = read_png_metadata(result.paths[0])
        assert meta["prompt"] == "a red square" and meta["seed"] == 3
