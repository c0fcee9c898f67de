"""The Prompt workspace with an SDXL refiner chosen: Text to image is not offered (greyed out,
with the reason), a request for it says why instead of running, and Image to image works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_qt_canvas_support import test_image
from test_qt_prompt import generate, open_prompt

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def tiny_refiner(tmp_path_factory) -> Path:
    from prompt_fixtures import build_tiny_sdxl_refiner

    return build_tiny_sdxl_refiner(tmp_path_factory.mktemp("prompt_refiner") / "tiny-refiner")


def test_a_refiner_is_offered_image_to_image_only(qtbot, app_settings, tiny_refiner) -> None:
    with open_prompt(qtbot, app_settings, tiny_refiner) as ws:
        tree = ws.model_list.tree
        assert tree.topLevelItem(0).text(1) == "SDXL refiner folder"
        combo = ws.params.mode_combo
        item = combo.model().item(combo.findData("txt2img"))
        assert not item.isEnabled() and "refines an existing image" in item.toolTip()
        assert ws.params.mode == "img2img"  # moved off Text to image when it was chosen

        ws.params.set_mode("txt2img")  # e.g. settings recalled from another model's image
        assert not ws.generate() and not ws.running
        assert "refines an existing image" in ws.banner.text()

        ws.canvas.set_image(test_image(16, 16), "start")
        ws.params.set_values({"mode": "img2img", "strength": 0.5, "steps": 2})
        generate(qtbot, ws)
        out = ws.result.images[0]
        assert out.shape == (16, 16, 3) and not np.array_equal(out, ws.canvas.document.image)
        assert ws.result.metadata[0]["mode"] == "img2img"

        # a base model offers Text to image again
        ws.model_list.set_entries([])
        assert item.isEnabled() and not item.toolTip()
