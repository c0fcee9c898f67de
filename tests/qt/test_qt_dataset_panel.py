"""The Dataset workspace, driven through the main window."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from qt_steps import load_dataset


def _skipped_rows(panel) -> dict[str, str]:
    table = panel.skipped_table
    return {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount())}


def test_tiny_dataset_shows_count_thumbnails_and_skipped_files(
    qtbot, window, tiny_dataset: Path, app_settings
) -> None:
    panel = window.dataset_panel
    assert load_dataset(qtbot, window, tiny_dataset) == 32
    assert panel.folder == str(tiny_dataset)
    assert panel.count_label.text() == "32 images found"
    assert _skipped_rows(panel) == {"broken.png": "unreadable", "notes.md": "not an image"}
    assert panel.tabs.tabText(1) == "Skipped (2)"
    assert panel.thumbnails.count() == 32
    assert "16×16 (32)" in panel.sizes_label.text()
    assert "class_0, class_1" in panel.classes_label.text()
    assert not panel.banner.isVisible()
    assert not panel.busy_row.isVisible()
    assert app_settings.recent_folders()[0] == str(tiny_dataset)
    assert window.train_panel.start_button.isEnabled()  # the Train page heard about it


def test_empty_folder_shows_the_message_not_a_traceback(qtbot, window, empty_folder: Path) -> None:
    panel = window.dataset_panel
    assert load_dataset(qtbot, window, empty_folder) == 0
    assert panel.banner.isVisible()
    assert panel.banner.level() == "error"
    assert panel.banner.text() == f"The folder {empty_folder} is empty."
    assert panel.count_label.text() == "No usable images"
    assert not window.train_panel.start_button.isEnabled()


def test_folder_of_only_bad_files_points_at_the_skipped_list(qtbot, window, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"garbage")
    (folder / "b.jpg").write_bytes(b"")
    panel = window.dataset_panel
    assert load_dataset(qtbot, window, folder) == 0
    assert "No usable image" in panel.banner.text()
    assert "Traceback" not in panel.banner.text()
    assert _skipped_rows(panel) == {"a.png": "unreadable", "b.jpg": "zero bytes"}
    assert panel.tabs.currentIndex() == 1  # the Skipped tab is shown


def test_missing_folder(qtbot, window, tmp_path: Path) -> None:
    panel = window.dataset_panel
    assert load_dataset(qtbot, window, tmp_path / "nowhere") == 0
    assert "does not exist" in panel.banner.text()


def test_a_new_choice_replaces_a_running_scan(qtbot, window, tiny_dataset, empty_folder) -> None:
    panel = window.dataset_panel
    panel.set_folder(empty_folder)
    with qtbot.waitSignal(panel.dataset_changed, timeout=30_000) as blocker:
        panel.set_folder(tiny_dataset)  # the first scan's result must not win
    assert blocker.args == [str(tiny_dataset), 32]
    qtbot.waitUntil(lambda: not panel.scan_runner.is_busy(), timeout=10_000)
    assert panel.count_label.text() == "32 images found"


def test_cancel_a_scan(qtbot, window, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):
        Image.new("RGB", (64, 64), (i % 256, 0, 0)).save(folder / f"{i:03d}.png")
    panel = window.dataset_panel
    with qtbot.waitSignal(panel.dataset_changed, timeout=30_000) as blocker:
        panel.set_folder(folder)
        qtbot.waitUntil(lambda: panel.thumbnails.count() > 0, timeout=20_000)
        assert panel.cancel_button.isEnabled()
        panel.cancel_button.click()
    assert blocker.args == [str(folder), 0]
    assert panel.count_label.text() == "Scan cancelled"
    assert not panel.busy_row.isVisible()


def test_demo_dataset_button(qtbot, window, monkeypatch: pytest.MonkeyPatch) -> None:
    import studio.engine.demo as demo

    made = []

    def small_demo(folder=None):  # 3,000 images is too many for a unit test
        made.append(True)
        return (yield from demo.make_demo_dataset(demo.demo_dir(), count=24, size=16))

    monkeypatch.setattr(demo, "ensure_demo_dataset", small_demo)
    panel = window.dataset_panel
    with qtbot.waitSignal(panel.dataset_changed, timeout=60_000) as blocker:
        panel.demo_button.click()
        assert panel.busy_row.isVisible()
    assert made
    assert blocker.args == [str(demo.demo_dir()), 24]
    assert "circle" in panel.classes_label.text()


def test_training_waits_while_a_new_folder_is_checked(qtbot, window, tiny_dataset, tmp_path):
    assert load_dataset(qtbot, window, tiny_dataset) == 32
    assert window.train_panel.start_button.isEnabled()
    with qtbot.waitSignal(window.dataset_panel.dataset_changed, timeout=30_000):
        window.dataset_panel.set_folder(tmp_path / "nowhere")
        # The old dataset no longer counts while the new folder is checked.
        assert not window.train_panel.start_button.isEnabled()
    assert not window.train_panel.start_button.isEnabled()


def _opaque_box(item) -> tuple[int, int]:
    """Width and height of the part of a thumbnail's icon that is the picture (opaque red)."""
    import numpy as np
    from PySide6.QtGui import QImage

    from studio.qt.dataset_panel import ICON_SIZE

    image = item.icon().pixmap(ICON_SIZE, ICON_SIZE).toImage()
    assert (image.width(), image.height()) == (ICON_SIZE, ICON_SIZE)  # one size for all
    image = image.convertToFormat(QImage.Format.Format_RGBA8888)
    pixels = np.frombuffer(image.constBits(), np.uint8).reshape(ICON_SIZE, ICON_SIZE, 4)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 3] == 255)
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    return int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def test_thumbnails_are_whole_images_in_uniform_named_cells(qtbot, window, tmp_path: Path) -> None:
    from studio.qt.dataset_panel import CELL, ICON_SIZE

    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    long_name = "a_very_long_file_name_of_a_holiday_photograph_taken_in_2024.png"
    sizes = {
        "wide.png": (400, 100),
        "tall.png": (100, 400),
        "square.png": (64, 64),
        f"trip/{long_name}": (300, 200),
    }
    for rel, size in sizes.items():
        Image.new("RGB", size, (255, 0, 0)).save(folder / rel)
    panel = window.dataset_panel
    assert load_dataset(qtbot, window, folder) == 4
    view = panel.thumbnails
    items = {view.item(i).data(0x0100): view.item(i) for i in range(view.count())}
    assert set(items) == set(sizes)
    # Every cell the same size, tall enough for the icon and a line of text (nothing clipped).
    rects = {
        (view.visualItemRect(item).width(), view.visualItemRect(item).height())
        for item in items.values()
    }
    assert rects == {(CELL.width(), CELL.height())}
    assert CELL.height() >= ICON_SIZE + view.fontMetrics().height()
    # The whole picture, letterboxed: its long side fills the icon, the short side is in scale.
    assert _opaque_box(items["wide.png"]) == (ICON_SIZE, ICON_SIZE // 4)
    assert _opaque_box(items["tall.png"]) == (ICON_SIZE // 4, ICON_SIZE)
    assert _opaque_box(items["square.png"]) == (ICON_SIZE, ICON_SIZE)
    assert _opaque_box(items[f"trip/{long_name}"]) == (ICON_SIZE, ICON_SIZE * 2 // 3)
    # The name under each, elided in the middle when long; the size and path on hover.
    assert items["wide.png"].text() == "wide.png"
    elided = items[f"trip/{long_name}"].text()
    assert "…" in elided and elided.startswith("a_") and elided.endswith(".png")
    assert view.fontMetrics().horizontalAdvance(elided) <= CELL.width()
    assert items["wide.png"].toolTip() == "wide.png\n400 × 100 px\nwide.png"
    tip = items[f"trip/{long_name}"].toolTip()
    assert "300 × 200 px" in tip and f"trip/{long_name}" in tip
    panel.grab().save(str(tmp_path / "thumbnails.png"))  # for a look when it fails
