"""The window's dataset scan on a folder built to hurt (issue 15, points 6 and 7): a FIFO as a
caption hung the scan (and the process at exit); a caption linked out of the folder was read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from qt_steps import load_dataset

pytestmark = pytest.mark.skipif(os.name != "posix", reason="FIFOs and symlinks need POSIX")


def test_fifo_captions_and_links_out_are_listed_not_read(qtbot, window, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("root:x:0:0:root:/root:/bin/bash")
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (8, 8), (200, 40, 40)).save(folder / f"{name}.png")
    os.mkfifo(folder / "a.txt")
    os.symlink(tmp_path / "secret.txt", folder / "b.txt")
    panel = window.dataset_panel
    assert load_dataset(qtbot, window, folder) == 2
    table = panel.skipped_table
    rows = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount())}
    assert rows == {"a.txt": "not a regular file", "b.txt": "outside the folder"}
