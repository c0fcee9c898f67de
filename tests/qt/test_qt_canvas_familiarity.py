"""The canvas says when the opened image looks unlike the run's training images (a photograph
given to a 32 px model of shapes), computed on a worker from a few training images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_qt_canvas_support import open_workspace


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> Path:
    """A run folder (settings only) of a 32 px DCGAN trained on the demo shapes."""
    from studio.core.jobs import run_sync
    from studio.engine.demo import make_demo_dataset

    base = tmp_path_factory.mktemp("familiar")
    data = run_sync(make_demo_dataset(base / "shapes", count=48, size=32)).result
    run = base / "run"
    run.mkdir()
    config = {
        "family": "gan.dcgan",
        "train": {"family": "gan.dcgan", "resolution": 32, "data": str(data)},
        "model": {},
        "dataset": {"path": str(data)},
    }
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return run


def photograph(h: int = 300, w: int = 400, seed: int = 0) -> np.ndarray:
    """Something like a photograph: soft light across the frame, fine texture everywhere."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([90 + 80 * x, 110 + 60 * y, 70 + 40 * (x * y)], axis=2)
    texture = rng.normal(0, 38, (h, w, 3))
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def a_training_image(run: Path) -> np.ndarray:
    data = Path(json.loads((run / "config.json").read_text())["dataset"]["path"])
    first = sorted(data.rglob("*.png"))[5]
    return np.asarray(Image.open(first).convert("RGB"))


def test_a_photograph_is_unlike_shapes_and_a_shape_is_not(shapes_run: Path) -> None:
    from studio.qt.canvas.familiarity import familiarity_hint

    hint = familiarity_hint(shapes_run, photograph())
    assert hint.startswith("This image looks unlike the run's training images (")
    assert hint.endswith("results may be poor.") and "32 px" in hint
    assert familiarity_hint(shapes_run, a_training_image(shapes_run)) == ""
    # Enlarged shapes (an artist's upscaled sample) are still shapes.
    big = np.asarray(Image.fromarray(a_training_image(shapes_run)).resize((256, 256)))
    assert familiarity_hint(shapes_run, big) == ""


@pytest.fixture
def workspace(qtbot, app_settings):
    yield from open_workspace(qtbot, app_settings)


def test_the_canvas_shows_the_hint_for_the_image_on_it(qtbot, workspace, shapes_run) -> None:
    if True:
        panel = workspace.inpaint_panel
        with qtbot.waitSignal(panel.run_loaded, timeout=60_000):
            panel.set_run(shapes_run)
        workspace.set_image(photograph(), "photo")
        qtbot.waitUntil(lambda: panel.familiar_label.isVisibleTo(panel), timeout=20_000)
        assert "looks unlike" in panel.familiar_label.text()
        workspace.resize(1100, 700)
        workspace.grab().save(str(shapes_run / "familiar.png"))
        workspace.set_image(a_training_image(shapes_run), "shape")
        assert not panel.familiar_label.isVisibleTo(panel)  # hidden at once, then checked
        qtbot.wait(500)
        panel._tasks.wait(10_000)
        qtbot.wait(100)
        assert not panel.familiar_label.isVisibleTo(panel)
