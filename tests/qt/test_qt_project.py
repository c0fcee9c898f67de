"""Projects in the window: File → New / Save / Open project through the menu, a moved project
folder, missing runs named while the rest opens, refusals, and ``studio open PROJECT``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QFileDialog

from studio.__main__ import OPEN_USAGE, main, route
from studio.core.project import MANIFEST, CompareBoard, Project, load_project, save_project
from studio.engine.project_files import save_kept


def _file_actions(window) -> dict[str, object]:
    menu = window.menuBar().actions()[0].menu()
    return {a.text(): a for a in menu.actions() if a.text()}


def _canvas_clean(window) -> bool:
    return window.canvas.document is not None and not window.canvas.has_unsaved_changes()


def test_new_save_and_open_a_moved_project_through_the_menu(
    qtbot, window, tmp_path: Path, monkeypatch
) -> None:
    actions = _file_actions(window)
    assert {"New project…", "Open project…", "Save project", "Recent projects"} <= set(actions)
    folder = tmp_path / "projects" / "Cats"
    window.prompt.state.update({"prompt": "a cat in a hat", "steps": 12})
    image = np.zeros((24, 32, 3), np.uint8)
    image[:, :16] = 200
    assert window.canvas.set_image(image, "Cat sketch")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(folder), ""))
    actions["New project…"].trigger()
    qtbot.waitUntil(
        lambda: window.projects.message.startswith("Saved") and _canvas_clean(window),
        timeout=20_000,
    )
    data = json.loads((folder / MANIFEST).read_text())
    assert data["canvas"]["open"] == "canvas/Cat sketch.studio-canvas"  # relative: inside
    assert data["prompt"]["settings"]["prompt"] == "a cat in a hat"
    assert window.windowTitle().startswith("Cats")

    window.prompt.state.update({"prompt": "a dog"})  # Save project writes the change
    actions["Save project"].trigger()
    qtbot.waitUntil(
        lambda: load_project(folder).prompt_settings.get("prompt") == "a dog", timeout=10_000
    )

    moved = tmp_path / "another computer" / "Cats copy"  # the folder moved elsewhere
    shutil.copytree(folder, moved)
    shutil.rmtree(folder)
    window.prompt.state.update({"prompt": "something else", "steps": 30})
    manifest = str(moved / MANIFEST)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (manifest, ""))
    actions["Open project…"].trigger()
    qtbot.waitUntil(lambda: window.prompt.state["prompt"] == "a dog", timeout=10_000)
    assert window.prompt.state["steps"] == 12
    qtbot.waitUntil(lambda: window.projects.message.startswith("Opened"), timeout=10_000)
    qtbot.waitUntil(
        lambda: window.projects._canvas_path == moved / "canvas" / "Cat sketch.studio-canvas",
        timeout=10_000,
    )
    doc = window.canvas.document
    assert doc is not None and doc.shape == (24, 32)
    assert int(doc.image[0, 0, 0]) == 200
    window.projects._fill_recent()
    assert [a.text() for a in window.projects.recent_menu.actions()][0] == str(moved)
    window.projects._fill_canvases()
    canvases = window.projects.canvases_menu.actions()
    assert [a.text() for a in canvases] == ["Cat sketch.studio-canvas"]
    window.show_workspace(window.DATASET)
    canvases[0].trigger()
    assert window.stack.currentWidget() is window.canvas


def test_missing_runs_are_named_and_the_rest_opens(qtbot, window, tmp_path: Path) -> None:
    from test_qt_latent import make_run

    folder = tmp_path / "proj"
    save_project(Project(folder=folder))
    run = make_run(folder / "runs", "gan.dcgan")
    gone_run, gone_doc = tmp_path / "old runs" / "vae-1", folder / "canvas" / "gone.studio-canvas"
    z = np.linspace(-1, 1, 8).astype(np.float32)
    save_kept(
        folder / "explore" / "kept.safetensors", [("My pick", z, np.zeros((16, 16, 3), np.uint8))]
    )
    save_project(
        Project(
            folder=folder,
            dataset=tmp_path / "gone data",
            runs=[run, gone_run],
            train_run=gone_run,
            canvas=[gone_doc],
            canvas_open=gone_doc,
            compare=CompareBoard(runs=[gone_run], seed=3, n=8),
            explore_run=run,
            kept_names=["My pick"],
        )
    )
    ws = window.latent_workspace
    ws.pca_samples, ws.pca_k = 32, 2
    window.projects.open(folder)
    qtbot.waitUntil(lambda: "missing" in window.projects.message, timeout=10_000)
    text = window.projects.message
    for path in (gone_run, gone_doc, tmp_path / "gone data"):
        assert str(path) in text
    assert str(run) not in text
    assert window.compare_panel.seed.value() == 3 and window.compare_panel.runs() == []
    qtbot.wait(100)
    assert ws.loaded is None  # the run's model loads when Explore is shown, not before
    window.projects.save()  # meanwhile a save keeps the kept latents and the missing items
    qtbot.waitUntil(lambda: window.projects.message.startswith("Saved"), timeout=10_000)
    saved = load_project(folder)
    assert saved.kept_names == ["My pick"] and saved.train_run == gone_run
    assert saved.canvas_open == gone_doc and saved.dataset == tmp_path / "gone data"
    window.show_workspace(window.EXPLORE)
    qtbot.waitUntil(lambda: len(ws.tray.items()) == 1, timeout=30_000)
    assert ws.loaded.path == run
    kept = ws.tray.items()[0]
    assert kept.name == "My pick"
    np.testing.assert_allclose(kept.z, z)


@pytest.mark.parametrize("content", ['{"format": "other"}', "{ torn"])
def test_a_corrupt_or_foreign_project_is_one_message(
    qtbot, window, tmp_path: Path, monkeypatch, content: str
) -> None:
    (tmp_path / MANIFEST).write_text(content)
    title = window.windowTitle()
    manifest = str(tmp_path / MANIFEST)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (manifest, ""))
    _file_actions(window)["Open project…"].trigger()
    qtbot.waitUntil(lambda: manifest in window.projects.message, timeout=10_000)
    assert "\n" not in window.projects.message and "Traceback" not in window.projects.message
    assert window.windowTitle() == title and window.projects.project is None


def test_new_project_refuses_a_folder_holding_other_files(
    qtbot, window, tmp_path: Path, monkeypatch
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"mine")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(photos), ""))
    _file_actions(window)["New project…"].trigger()
    assert "already holds other files" in window.projects.message
    qtbot.wait(200)
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.jpg"]


def test_studio_open_routes_to_the_window_with_the_project(capsys) -> None:
    assert route(["open", "/x/My project"]) == ("gui", [], "/x/My project")
    assert route([]) == ("gui", [], None)
    assert route(["train", "--steps", "3"]) == ("cli", ["train", "--steps", "3"], None)
    assert route(["open"])[0] == "error" and route(["open", "a", "b"])[0] == "error"
    assert main(["open"]) == 2
    assert OPEN_USAGE in capsys.readouterr().err
    assert main(["open", "--help"]) == 0
    assert OPEN_USAGE in capsys.readouterr().out


def test_dataset_is_scanned_its_change_told_and_missing_items_survive_a_save(
    qtbot, window, tmp_path: Path, tiny_dataset: Path
) -> None:
    folder = tmp_path / "proj"
    save_project(Project(folder=folder))
    shutil.copytree(tiny_dataset, folder / "data")
    gone = tmp_path / "old runs" / "gan-7"
    save_project(
        Project(folder=folder, dataset=folder / "data", fingerprint="stale", train_run=gone)
    )
    window.projects.open(folder)
    qtbot.waitUntil(lambda: window.dataset_panel.n_images == 32, timeout=30_000)
    qtbot.waitUntil(lambda: "changed since" in window.projects.message, timeout=5_000)
    assert window.dataset_panel.folder == str(folder / "data")
    window.projects.save()
    qtbot.waitUntil(lambda: window.projects.message.startswith("Saved"), timeout=10_000)
    data = json.loads((folder / MANIFEST).read_text())
    assert data["dataset"]["path"] == "data"
    assert data["dataset"]["fingerprint"] == window.dataset_panel.scan_result.fingerprint
    assert data["train"]["run"] == str(gone)  # still named, though not on this computer


def test_a_users_canvas_file_is_referenced_and_a_later_sample_never_overwrites_it(
    qtbot, window, tmp_path: Path
) -> None:
    from studio.core.canvas import CanvasDocument
    from studio.engine.canvas_io import save_document

    mine = tmp_path / "my work" / "portrait.studio-canvas"
    mine.parent.mkdir()
    doc = CanvasDocument(np.full((8, 8, 3), 50, np.uint8), name="portrait")
    doc.mask[:4] = 1.0
    save_document(doc, mine)
    before = mine.read_bytes()
    window.canvas.open_image(mine)
    qtbot.waitUntil(lambda: window.canvas.document is not None, timeout=10_000)
    folder = tmp_path / "proj"
    window.projects.save_as(folder)  # the menu's New project, past its folder question
    qtbot.waitUntil(lambda: window.projects.message.startswith("Saved"), timeout=10_000)
    assert load_project(folder).canvas_open == mine  # outside the project: absolute, no copy
    assert window.send_to_canvas(np.zeros((8, 8, 3), np.uint8), "Sample") is None
    qtbot.waitUntil(lambda: window.canvas.document.name == "Sample", timeout=5_000)
    window.projects.save()
    qtbot.waitUntil(lambda: (folder / "canvas" / "Sample.studio-canvas").is_file(), timeout=10_000)
    qtbot.waitUntil(
        lambda: load_project(folder).canvas_open == folder / "canvas" / "Sample.studio-canvas",
        timeout=10_000,
    )
    assert mine.read_bytes() == before
    assert set(load_project(folder).canvas) == {mine, folder / "canvas" / "Sample.studio-canvas"}


def test_recent_projects_are_kept_newest_first(app_settings) -> None:
    assert app_settings.recent_projects() == []
    app_settings.add_recent_project("/a")
    app_settings.add_recent_project(Path("/b"))
    app_settings.add_recent_project("/a")
    app_settings.sync()
    assert app_settings.recent_projects() == ["/a", "/b"]
