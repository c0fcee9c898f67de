"""Projects: the manifest round-trips, moves with its folder, names what is missing, and never
overwrites a file the studio did not write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from studio.core.jobs import CancelToken, Outcome, Status, run_sync
from studio.core.project import (
    KEPT_FILE,
    MANIFEST,
    CompareBoard,
    Project,
    ProjectError,
    load_project,
    missing_items,
    missing_message,
    save_project,
)
from studio.engine.project_files import open_project_job, save_project_job


def _go(factory) -> Outcome:
    token = CancelToken()
    return run_sync(factory(token), token)


def _run(folder: Path, name: str) -> Path:
    run = folder / name
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    return run


def _project(folder: Path, outside: Path) -> Project:
    save_project(Project(folder=folder))  # File > New project: the folder starts empty
    data = folder / "data"
    data.mkdir(parents=True)
    inside = _run(folder, "runs/gan")
    other = _run(outside, "elsewhere")
    doc = folder / "canvas" / "a.studio-canvas"
    doc.parent.mkdir()
    doc.write_bytes(b"zip")
    return Project(
        folder=folder,
        name="My project",
        dataset=data,
        fingerprint="abc123",
        runs=[inside, other],
        train_run=inside,
        canvas=[doc],
        canvas_open=doc,
        prompt_model=str(folder / "models" / "sd.safetensors"),
        prompt_settings={"prompt": "a cat", "steps": 20, "bad": object()},
        prompt_history=folder / "generations",
        compare=CompareBoard(runs=[inside, other], seed=7, n=16),
        explore_run=inside,
        explore_sliders=["smile"],
    )


def test_project_round_trips_and_inside_paths_are_relative(tmp_path: Path) -> None:
    folder, outside = tmp_path / "proj", tmp_path / "outside"
    project = _project(folder, outside)
    save_project(project)
    data = json.loads((folder / MANIFEST).read_text())
    assert data["dataset"] == {"path": "data", "fingerprint": "abc123"}
    assert data["runs"] == ["runs/gan", str(outside / "elsewhere")]
    assert data["canvas"]["documents"] == ["canvas/a.studio-canvas"]
    assert data["prompt"]["model"] == "models/sd.safetensors"
    assert data["prompt"]["settings"] == {"prompt": "a cat", "steps": 20}  # no object()
    back = load_project(folder / MANIFEST)
    assert back.name == "My project"
    assert back.dataset == folder / "data" and back.fingerprint == "abc123"
    assert back.runs == project.runs and back.train_run == project.train_run
    assert back.canvas == project.canvas and back.canvas_open == project.canvas_open
    assert back.prompt_model == project.prompt_model
    assert back.prompt_history == folder / "generations"
    assert back.compare == CompareBoard(runs=project.compare.runs, seed=7, n=16)
    assert back.explore_run == project.explore_run and back.explore_sliders == ["smile"]
    assert missing_items(back) == []


def test_moving_the_project_folder_keeps_relative_paths_working(tmp_path: Path) -> None:
    folder, outside = tmp_path / "proj", tmp_path / "outside"
    save_project(_project(folder, outside))
    moved = tmp_path / "another machine" / "proj copy"
    shutil.copytree(folder, moved)
    shutil.rmtree(folder)
    back = load_project(moved)
    assert back.dataset == moved / "data"
    assert back.train_run == moved / "runs" / "gan"
    assert back.canvas_open == moved / "canvas" / "a.studio-canvas"
    assert back.runs[1] == outside / "elsewhere"  # outside the project: kept absolute
    assert missing_items(back) == []


def test_missing_runs_and_documents_are_each_named(tmp_path: Path) -> None:
    folder, outside = tmp_path / "proj", tmp_path / "outside"
    save_project(_project(folder, outside))
    shutil.rmtree(outside / "elsewhere")
    (folder / "canvas" / "a.studio-canvas").unlink()
    shutil.rmtree(folder / "data")
    outcome = _go(open_project_job(folder))
    assert outcome.status is Status.FINISHED
    opened = outcome.result
    kinds = {(m.kind, m.path) for m in opened.missing}
    assert kinds == {
        ("the run", outside / "elsewhere"),
        ("the canvas document", folder / "canvas" / "a.studio-canvas"),
        ("the dataset folder", folder / "data"),
    }
    text = missing_message(opened.missing)
    assert str(outside / "elsewhere") in text and "a.studio-canvas" in text
    assert str(folder / "data") in text
    assert opened.project.train_run == folder / "runs" / "gan"  # the rest is there


@pytest.mark.parametrize(
    "content",
    [b"not json at all", b'{"format": "something-else", "version": 1}', b"[1, 2]", b"\xff\xfe"],
)
def test_a_corrupt_or_foreign_manifest_is_one_clear_message(tmp_path: Path, content) -> None:
    (tmp_path / MANIFEST).write_bytes(content)
    with pytest.raises(ProjectError) as err:
        load_project(tmp_path)
    assert str(tmp_path / MANIFEST) in str(err.value)
    assert "\n" not in str(err.value)
    outcome = _go(open_project_job(tmp_path))
    assert outcome.status is Status.FAILED and str(tmp_path / MANIFEST) in outcome.error


def test_a_newer_project_asks_for_a_newer_studio(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text('{"format": "studio-project", "version": 99}')
    with pytest.raises(ProjectError, match="newer Studio"):
        load_project(tmp_path)


def test_a_folder_that_is_no_project_is_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="has no studio-project.json"):
        load_project(tmp_path)
    with pytest.raises(ProjectError, match="no project folder"):
        load_project(tmp_path / "nowhere")


def test_saving_refuses_a_folder_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError, match="already holds other files"):
        save_project(Project(folder=tmp_path))
    assert not (tmp_path / MANIFEST).exists()
    outcome = _go(
        save_project_job(Project(folder=tmp_path), [("a", np.zeros(3), np.zeros((2, 2, 3)))])
    )
    assert outcome.status is Status.FAILED and "other files" in outcome.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written


def test_saving_refuses_to_replace_a_foreign_manifest(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text('{"someone": "else"}')
    with pytest.raises(ProjectError, match="not a Studio project"):
        save_project(Project(folder=tmp_path))
    assert (tmp_path / MANIFEST).read_text() == '{"someone": "else"}'


def test_saving_into_an_empty_folder_or_over_our_own_manifest(tmp_path: Path) -> None:
    save_project(Project(folder=tmp_path, name="one"))
    (tmp_path / "runs").mkdir()  # the project's own contents since
    save_project(Project(folder=tmp_path, name="two"))
    assert load_project(tmp_path).name == "two"


def test_kept_latents_round_trip_with_the_project(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    kept = [
        ("Seed 1", np.arange(4, dtype=np.float32), np.full((3, 3, 3), 9, np.uint8)),
        ("Seed 2 (edited)", np.ones(4, np.float32), np.zeros((3, 3, 3), np.uint8)),
    ]
    project = Project(folder=folder, explore_run=folder / "run")
    outcome = _go(save_project_job(project, kept))
    assert outcome.status is Status.FINISHED, outcome.error
    assert (folder / KEPT_FILE).is_file()
    opened = _go(open_project_job(folder)).result
    assert [k[0] for k in opened.kept] == ["Seed 1", "Seed 2 (edited)"]
    np.testing.assert_array_equal(opened.kept[0][1], kept[0][1])
    np.testing.assert_array_equal(opened.kept[0][2], kept[0][2])
    assert [str(m) for m in opened.missing] == [f"the run {folder / 'run'}"]


def test_damaged_kept_latents_are_one_clear_message(tmp_path: Path) -> None:
    save_project(Project(folder=tmp_path, kept_names=["a"]))
    (tmp_path / KEPT_FILE).parent.mkdir()
    (tmp_path / KEPT_FILE).write_bytes(b"\x00" * 20)
    outcome = _go(open_project_job(tmp_path))
    assert outcome.status is Status.FAILED
    assert "kept latents" in outcome.error and "Traceback" not in outcome.error
