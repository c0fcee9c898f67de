"""Explore over a layered latent (StyleGAN's w+): the layer-group selector, style mixing and
its grid export, w / w+ projection; none of it for a model with one latent (DCGAN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from test_qt_latent import make_run, open_and_wait, settle, workspace  # noqa: F401

from studio.engine.latent_layers import PAD, tile_scale
from studio.engine.runs import RunFolder
from studio.models.registry import get_family

RES = 16


def style_run(folder: Path) -> Path:
    key = "gan.stylegan"
    torch.manual_seed(0)
    family = get_family(key)
    tiny = {"latent_dim": 8, "w_dim": 8, "mapping_layers": 2, "width": 8, "resolution": RES}
    model = family(family.Config.from_dict(tiny))
    with torch.no_grad():  # biases and noise off their zero init, as training leaves them
        for layer in model.generator_ema.synthesis.layers:
            layer.bias.normal_(0, 0.5)
    run = folder / "style"
    model.save(run / "model")
    RunFolder(run).write_config({"family": key, "train": {"family": key}})
    return run


def keep_two(qtbot, ws) -> None:
    ws.keep_current()
    ws.randomise()
    qtbot.waitUntil(lambda: ws.edit.origin_name != "Seed 0", timeout=10_000)
    settle(qtbot, ws)
    ws.keep_current()
    assert len(ws.tray.items()) == 2


def test_groups_move_their_layers_and_mixing_exports_a_grid(qtbot, workspace, tmp_path):  # noqa: F811
    ws = workspace
    open_and_wait(qtbot, ws, style_run(tmp_path))
    sp, loaded = ws.slider_panel, ws.loaded
    assert sp.group_combo.isVisibleTo(ws)
    assert [sp.group_combo.itemText(i) for i in range(sp.group_combo.count())] == [
        "All layers",
        "Coarse only",
        "Fine only",  # 16 px: 4 and 8 px are coarse, 16 px fine
    ]
    assert ws.tabs.isTabVisible(ws.MIX)
    assert ws.encode_panel.per_layer_combo.isVisibleTo(ws.encode_panel)

    # the coarse sliders move only the coarse layers' latents
    coarse = loaded.layer_groups[0]
    sp.group_combo.setCurrentIndex(1)
    settle(qtbot, ws)
    before = ws.current_z().reshape(loaded.layers, -1)
    sp.sliders[0].setValue(250)
    settle(qtbot, ws)
    after = ws.current_z().reshape(loaded.layers, -1)
    moved = np.any(after != before, axis=1)
    assert moved[coarse.start : coarse.stop].all() and not moved[coarse.stop :].any()
    # switching group keeps the edit and puts the sliders at 0
    sp.group_combo.setCurrentIndex(2)
    settle(qtbot, ws)
    assert np.array_equal(ws.current_z().reshape(loaded.layers, -1), after)
    assert sp.sliders[0].value() == 0

    keep_two(qtbot, ws)
    a, b = ws.tray.items()
    ws.tabs.setCurrentIndex(ws.MIX)
    panel = ws.mix_panel
    assert panel.crossover.maximum() == loaded.layers
    panel.crossover.setValue(0)  # every layer from B: B's own image
    qtbot.waitUntil(lambda: panel.mixed is not None and not ws.jobs.is_busy(), timeout=10_000)
    assert np.array_equal(panel.mixed[1], b.image)
    panel.crossover.setValue(loaded.layers)  # every layer from A
    qtbot.waitUntil(lambda: np.array_equal(panel.mixed[0], a.z), timeout=10_000)
    assert np.array_equal(panel.mixed[1], a.image)

    out = tmp_path / "grid.png"
    ws.tools.export_mix_grid(out)
    qtbot.waitUntil(lambda: out.exists() and not ws.jobs.is_busy(), timeout=10_000)
    tile = RES * tile_scale(RES)
    side = 3 * (tile + PAD) + PAD  # the originals' row and column, then 2 x 2 mixes
    with Image.open(out) as image:
        assert image.size == (side, side) and image.mode == "RGB"
    # an existing file is not written over unless asked
    stamp = out.stat().st_mtime_ns, out.read_bytes()
    ws.tools.export_mix_grid(out)
    qtbot.waitUntil(lambda: "already exists" in ws.banner.text(), timeout=10_000)
    assert (out.stat().st_mtime_ns, out.read_bytes()) == stamp


def test_a_single_latent_model_shows_no_groups_and_no_mixing(qtbot, workspace, tmp_path):  # noqa: F811
    ws = workspace
    open_and_wait(qtbot, ws, make_run(tmp_path, "gan.dcgan"))
    assert not ws.slider_panel.group_combo.isVisibleTo(ws)
    assert not ws.tabs.isTabVisible(ws.MIX)
    assert not ws.encode_panel.per_layer_combo.isVisibleTo(ws.encode_panel)
    assert ws.encode_panel.per_layer() is False


def test_a_project_latent_kept_before_the_layers_opens_at_every_layer(qtbot, workspace, tmp_path):  # noqa: F811
    from studio.qt.latent.items import LatentItem

    ws = workspace
    w = np.arange(8, dtype=np.float32)  # one layer's latent (w_dim 8), as kept before w+
    image = np.zeros((RES, RES, 3), np.uint8)
    ws.open_run(style_run(tmp_path), kept=[LatentItem("old", w, image)])
    qtbot.waitUntil(lambda: ws.loaded is not None and len(ws.tray.items()) == 1, timeout=20_000)
    settle(qtbot, ws)
    kept = ws.tray.items()[0].z.reshape(ws.loaded.layers, -1)
    assert np.array_equal(kept, np.tile(w, (ws.loaded.layers, 1)))
