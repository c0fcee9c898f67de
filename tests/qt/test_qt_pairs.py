"""The Dataset workspace's Pairs… dialog: two folders (or side-by-side files) checked on the scan
lane, the pairs shown side by side, every file left out listed with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from studio.engine.pairs import NO_PARTNER, ODD_WIDTH, SIZE_MISMATCH


def _img(path: Path, size=(16, 16), colour=(200, 10, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _rows(dialog) -> dict[str, str]:
    t = dialog.left_out
    return {
        f"{t.item(r, 0).text()}/{t.item(r, 1).text()}": t.item(r, 2).text()
        for r in range(t.rowCount())
    }


def _check(qtbot, dialog) -> None:
    assert dialog.check_button.isEnabled()
    dialog.check()
    qtbot.waitUntil(lambda: dialog.scan is not None or dialog.banner.isVisible(), timeout=15_000)
    qtbot.waitUntil(lambda: dialog._job is None, timeout=15_000)


def test_two_folders_show_pairs_side_by_side_and_what_is_left_out(qtbot, window, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    _img(a / "cat_01.png", colour=(255, 0, 0))
    _img(b / "cat_01.jpg", colour=(0, 0, 255))
    _img(a / "only_a.png")
    _img(a / "wide.png", (32, 16))
    _img(b / "wide.png")
    (b / "notes.md").write_text("x")
    dialog = window.dataset_panel.show_pairs()
    assert not dialog.check_button.isEnabled()  # no folders yet
    dialog.set_folder("A", a)
    dialog.set_folder("B", b)
    _check(qtbot, dialog)
    assert dialog.pairs_list.count() == 1
    item = dialog.pairs_list.item(0)
    assert item.text() == "cat_01.png ↔ cat_01.jpg"
    assert "16 × 16 px" in item.toolTip()
    icon = item.icon().pixmap(dialog.pairs_list.iconSize()).toImage()
    left, right = icon.pixelColor(20, 36), icon.pixelColor(icon.width() - 20, 36)
    assert left.red() > 200 and left.blue() < 50  # A on the left
    assert right.blue() > 200 and right.red() < 50  # B on the right
    assert _rows(dialog) == {
        "A/only_a.png": NO_PARTNER,
        "A/wide.png": SIZE_MISMATCH,
        "B/notes.md": "not an image",
    }
    assert dialog.status.text().startswith("1 pair; 3 files left out")
    assert dialog.tabs.tabText(1) == "Left out (3)"


def test_side_by_side_folder_and_no_pairs_say_why(qtbot, window, tmp_path: Path):
    folder = tmp_path / "ab"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(folder / "p.png")
    _img(folder / "odd.png", (9, 8))
    dialog = window.dataset_panel.show_pairs()
    dialog.side_by_side.setChecked(True)
    assert not dialog.folder_buttons["B"].isVisibleTo(dialog)
    dialog.set_folder("A", folder)
    _check(qtbot, dialog)
    assert dialog.pairs_list.count() == 1 and _rows(dialog) == {"AB/odd.png": ODD_WIDTH}

    lonely = tmp_path / "lonely"
    _img(lonely / "x.png", (9, 8))
    dialog.set_folder("A", lonely)
    _check(qtbot, dialog)
    assert dialog.pairs_list.count() == 0
    assert dialog.banner.isVisible() and "has a partner" in dialog.banner.text()
    assert dialog.tabs.currentIndex() == 1


def test_a_missing_folder_is_a_message(qtbot, window, tmp_path: Path):
    dialog = window.dataset_panel.show_pairs()
    dialog.set_folder("A", tmp_path / "nowhere")
    dialog.set_folder("B", tmp_path)
    dialog.check()
    qtbot.waitUntil(lambda: dialog._job is None, timeout=15_000)
    assert "does not exist" in dialog.banner.text()
