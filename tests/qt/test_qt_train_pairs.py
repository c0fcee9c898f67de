"""The Train form's "Folder B (pairs)" picker: shown only for a family that trains on pairs
(FamilySpec.paired, from Capability.PAIRED), and handed to the run as ``data_b``."""

from __future__ import annotations

from dataclasses import dataclass

from studio.models.base import ModelConfig, setting
from studio.qt import engine_jobs
from studio.qt.engine_jobs import FamilySpec
from studio.qt.train_panel import TrainPanel


@dataclass
class _Config(ModelConfig):
    width: int = setting(8, label="Width", minimum=8, maximum=64)


PLAIN = FamilySpec("toy.plain", "toy", "Plain", "one folder", _Config)
PAIRED = FamilySpec("toy.paired", "toy", "Paired", "two folders", _Config, paired=True)
UNPAIRED = FamilySpec(
    "toy.unpaired", "toy", "Unpaired", "two collections", _Config, paired=True, unpaired=True
)


def test_folder_b_is_asked_for_paired_families_only(
    qtbot, runner, app_settings, tmp_path, monkeypatch
):
    panel = TrainPanel(runner, app_settings)
    qtbot.addWidget(panel)
    panel.show()
    started = []  # the configs Start hands the engine (no training here)
    monkeypatch.setattr(engine_jobs, "train_new", lambda run_dir, config: started.append(config))
    monkeypatch.setattr(panel, "_submit", lambda name, factory, **kw: None)
    panel.picker.set_families([PLAIN, PAIRED])
    panel.set_dataset(str(tmp_path / "a"), 10)
    assert panel.picker.current_key() == "toy.plain"
    assert not panel.pairs_box.isVisible()

    panel.picker.set_current_key("toy.paired")
    assert panel.pairs_box.isVisible()
    assert panel.folder_b_edit.placeholderText() == "none: side-by-side files"
    panel.set_folder_b(str(tmp_path / "b"))
    assert panel.folder_b_edit.text() == str(tmp_path / "b")
    panel.start()
    assert started[-1].data_b == str(tmp_path / "b")
    assert started[-1].data == str(tmp_path / "a")

    panel.picker.set_current_key("toy.plain")
    assert not panel.pairs_box.isVisible()
    panel.start()
    assert started[-1].data_b == ""  # a family of single images never gets folder B

    panel.picker.set_current_key("toy.paired")
    panel.set_folder_b("")
    assert not panel.folder_b_clear.isEnabled()
    panel.start()
    assert started[-1].data_b == ""  # side-by-side files in the Dataset folder
    assert len(started) == 3


def test_folder_b_of_an_unpaired_family_says_it_is_a_second_collection(
    qtbot, runner, app_settings, tmp_path, monkeypatch
):
    panel = TrainPanel(runner, app_settings)
    qtbot.addWidget(panel)
    panel.show()
    started = []
    monkeypatch.setattr(engine_jobs, "train_new", lambda run_dir, config: started.append(config))
    monkeypatch.setattr(panel, "_submit", lambda name, factory, **kw: None)
    panel.picker.set_families([PAIRED, UNPAIRED])
    panel.set_dataset(str(tmp_path / "a"), 10)
    panel.picker.set_current_key("toy.unpaired")
    assert panel.pairs_box.isVisible() and panel.folder_b_label.text() == "Folder B"
    assert "required" in panel.folder_b_edit.placeholderText()
    assert "nothing needs to match" in panel.folder_b_hint.text()
    panel.set_folder_b(str(tmp_path / "b"))
    panel.start()
    assert started[-1].data_b == str(tmp_path / "b")
    panel.picker.set_current_key("toy.paired")  # back to pairs: the texts follow
    assert panel.folder_b_label.text() == "Folder B (pairs)"
    assert panel.folder_b_edit.placeholderText() == "none: side-by-side files"
