"""A pickled checkpoint is listed as "Unknown file, pickle" until it is read; once a generation
has read it (after the usual consent question, on the engine thread), its row says what it is
and the modes offered follow: a refiner no longer offers Text to image."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_qt_canvas_support import test_image
from test_qt_prompt import generate, open_prompt

from studio.qt.prompt import model_list

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("no_network"),
]


@pytest.fixture(scope="module")
def refiner_ckpt(tmp_path_factory) -> Path:
    """A tiny SDXL refiner as one pickled .ckpt, its weightless config folder beside it."""
    from prompt_fixtures import build_tiny_sdxl_refiner, config_only_copy, export_pickled_checkpoint

    root = tmp_path_factory.mktemp("refiner_ckpt")
    folder = build_tiny_sdxl_refiner(root / "folder")
    file = export_pickled_checkpoint(folder, root / "tiny-refiner.ckpt")
    config_only_copy(folder, root / "tiny-refiner")
    return file


@pytest.fixture
def consent(monkeypatch) -> list[str]:
    """Say yes to the pickle question (recording it), and record the threads pickles are read on."""
    from studio.engine.prompt import files

    asked: list[str] = []
    monkeypatch.setattr(model_list, "ask_pickle_consent", lambda *a: asked.append(a[1]) or True)
    read = files.read_state_dict

    def spy(*args, **kwargs):
        asked.append("main thread" if threading.current_thread() is threading.main_thread() else "")
        return read(*args, **kwargs)

    monkeypatch.setattr(files, "read_state_dict", spy)
    return asked


def _txt2img_item(ws):
    combo = ws.params.mode_combo
    return combo.model().item(combo.findData("txt2img"))


def test_a_pickled_refiner_shows_its_type_once_it_has_loaded(
    qtbot, app_settings, refiner_ckpt, consent
) -> None:
    with open_prompt(qtbot, app_settings, refiner_ckpt) as ws:
        row = ws.model_list.tree.topLevelItem(0)
        txt2img = _txt2img_item(ws)
        assert row.text(1) == "Unknown file, pickle"  # not read yet: every mode offered
        assert txt2img.isEnabled()
        ws.canvas.set_image(test_image(16, 16), "start")
        ws.params.set_values({"mode": "img2img", "strength": 0.5, "steps": 2})
        with qtbot.waitSignal(ws.model_list.entry_updated, timeout=120_000) as updated:
            generate(qtbot, ws)
        assert ws.result is not None and len(ws.result.images) == 1
        # the trust question came first, as before; the pickle was read off the GUI thread
        assert consent[0] == str(refiner_ckpt) and "main thread" not in consent
        assert updated.args[0].arch == "sdxl-refiner"
        assert row.text(1) == "SDXL refiner file, pickle"
        assert ws.model_list.current().arch == "sdxl-refiner"
        assert not txt2img.isEnabled() and "refines an existing image" in txt2img.toolTip()
        # the library keeps it: listing again says the same
        with qtbot.waitSignal(ws.model_list.models_loaded, timeout=30_000):
            ws.model_list.refresh()
        assert ws.model_list.tree.topLevelItem(0).text(1) == "SDXL refiner file, pickle"


def test_a_pickled_refiner_refused_text_to_image_stops_offering_it(
    qtbot, app_settings, refiner_ckpt, consent
) -> None:
    with open_prompt(qtbot, app_settings, refiner_ckpt) as ws:
        row = ws.model_list.tree.topLevelItem(0)
        txt2img = _txt2img_item(ws)
        ws.params.set_mode("txt2img")
        with qtbot.waitSignal(ws.model_list.entry_updated, timeout=120_000):
            assert ws.generate()
        qtbot.waitUntil(lambda: not ws.running, timeout=30_000)
        assert "refines an existing image" in ws.banner.text() and ws.result is None
        assert consent[0] == str(refiner_ckpt) and "main thread" not in consent
        assert row.text(1) == "SDXL refiner file, pickle"
        assert not txt2img.isEnabled() and ws.params.mode == "img2img"


def test_update_entry_changes_one_row_and_only_when_something_changed(
    qtbot, app_settings, refiner_ckpt
) -> None:
    import dataclasses

    with open_prompt(qtbot, app_settings, refiner_ckpt) as ws:
        lists = ws.model_list
        entry = lists.current()
        chosen: list[object] = []
        lists.model_chosen.connect(chosen.append)
        assert not lists.update_entry(entry)  # nothing new
        assert not lists.update_entry(dataclasses.replace(entry, id="elsewhere", arch="sd1"))
        assert not chosen and lists.tree.topLevelItem(0).text(1) == "Unknown file, pickle"
        assert lists.update_entry(dataclasses.replace(entry, arch="sd1"))
        assert lists.tree.topLevelItem(0).text(1) == "SD 1.x file, pickle"
        assert [e.arch for e in lists.entries] == ["sd1"] and chosen[-1].arch == "sd1"
