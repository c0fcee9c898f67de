"""Settings recall from PNGs other tools wrote, and from hostile ones (issue 15, points 8, 14):
seeds beyond 32 bits, AUTOMATIC1111's quoted values, and what could not be restored named on
the banner."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from test_qt_prompt import _drop, open_prompt, tiny_sd  # noqa: F401 - tiny_sd is a fixture

from studio.qt.prompt.params import ParamsForm
from studio.qt.seed_box import SeedBox

A1111 = (
    "a castle on a hill\n"
    "Negative prompt: blurry\n"
    "Steps: 6, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 3000000000, Size: 32x24, "
    'Model: tiny-sd, ControlNet 0: "Module: canny, Model: control_canny, Weight: 1.0", '
    "Clip skip: 2, Version: v1.9.4"
)


def _png(path: Path, key: str, text: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text(key, text)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
    path.write_bytes(buf.getvalue())
    return path


def test_the_seed_box_holds_any_seed_the_engine_takes(qtbot) -> None:
    form = ParamsForm()
    qtbot.addWidget(form)
    assert isinstance(form.seed_spin, SeedBox)
    assert "seed" in form.set_values({"seed": 3_000_000_000})
    assert form.values()["seed"] == 3_000_000_000
    assert "seed" in form.set_values({"seed": 2**63 - 1})
    assert "seed" not in form.set_values({"seed": 2**64})  # never clamped
    assert form.values()["seed"] == 2**63 - 1
    box = form.seed_spin
    box.setValue(4_294_967_294)
    box.stepBy(1)
    assert box.value() == 4_294_967_295
    box.lineEdit().selectAll()
    QTest.keyClicks(box, "12x34")  # the letter is refused
    assert box.value() == 1234 and box.lineEdit().text() == "1234"
    QTest.keyClick(box, Qt.Key.Key_Up)
    assert box.value() == 1235
    for _ in range(3):
        form.randomise_seed()
        assert 0 <= form.values()["seed"] <= 2**32 - 1


def test_an_a1111_png_restores_what_it_can_and_says_what_not(
    qtbot,
    app_settings,
    tiny_sd,  # noqa: F811 - the fixture
    tmp_path,
) -> None:
    png = _png(tmp_path / "a1111.png", "parameters", A1111)
    with open_prompt(qtbot, app_settings, tiny_sd) as ws:
        with qtbot.waitSignal(ws.params_restored, timeout=30_000):
            _drop(ws, png)
        values = ws.params.values()
        assert values["prompt"] == "a castle on a hill" and values["negative_prompt"] == "blurry"
        assert (values["steps"], values["guidance"], values["seed"]) == (6, 6.5, 3_000_000_000)
        assert (values["width"], values["height"], values["scheduler"]) == (32, 24, "dpmpp_2m")
        banner = ws.banner.text()
        assert "Not restored" in banner
        assert "ControlNet 0: Module: canny" in banner and "Clip skip: 2" in banner
        assert "Karras schedule is not available" in banner

        nested = _png(tmp_path / "nested.png", "studio", "[" * 50_000 + "]" * 50_000)
        _drop(ws, nested)
        qtbot.waitUntil(lambda: "nested more than" in ws.banner.text(), timeout=30_000)


def test_history_thumbnails_and_sample_grids_refuse_bombs_unread(tmp_path, monkeypatch) -> None:
    from helpers import write_png_header
    from PIL import ImageFile

    from studio.qt import engine_jobs, timeline
    from studio.qt.prompt import jobs

    decoded: list[str] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append("load"))
    bomb = write_png_header(tmp_path / "step_00000010.png", 12_000, 12_000)  # 144 MP
    assert jobs._read_thumb(bomb) is None
    with pytest.raises(ValueError, match="over the pixel limit"):
        engine_jobs._read_png(bomb)
    with pytest.raises(Exception, match="over the pixel limit"):
        timeline.decode_png(bomb)
    assert decoded == []
