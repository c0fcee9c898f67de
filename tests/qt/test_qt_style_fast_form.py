"""The Train form of the feed-forward style network: its style image and VGG-19 file are file
pickers, the VGG-19 file the Canvas's *Stylize…* remembered fills the empty one, and a file
chosen here is remembered for *Stylize…*; Start hands both paths to the run."""

from __future__ import annotations

from studio.models.registry import get_family
from studio.qt import engine_jobs
from studio.qt.engine_jobs import FamilySpec
from studio.qt.forms import FilePicker
from studio.qt.train_panel import TrainPanel

VGG_KEY = "stylize/vgg"  # where the Canvas's Stylize… keeps the VGG-19 file


def test_file_pickers_and_the_remembered_vgg_file(
    qtbot, runner, app_settings, tmp_path, monkeypatch
):
    app_settings.set_value(VGG_KEY, str(tmp_path / "vgg19.pth"))
    family = get_family("style.fast")
    spec = FamilySpec("style.fast", "style", family.info.display_name, "", family.Config)
    panel = TrainPanel(runner, app_settings)
    qtbot.addWidget(panel)
    started = []
    monkeypatch.setattr(engine_jobs, "train_new", lambda run_dir, config: started.append(config))
    monkeypatch.setattr(panel, "_submit", lambda name, factory, **kw: None)
    panel.picker.set_families([spec])
    panel.set_dataset(str(tmp_path), 10)
    form = panel.model_form
    style, vgg = form.widget("style_image"), form.widget("vgg_weights")
    assert isinstance(style, FilePicker) and isinstance(vgg, FilePicker)
    assert vgg.path() == str(tmp_path / "vgg19.pth") and style.path() == ""
    style.set_path(str(tmp_path / "starry.jpg"))
    vgg.set_path(str(tmp_path / "other.safetensors"))
    assert app_settings.value(VGG_KEY) == str(tmp_path / "other.safetensors")
    panel.start()
    assert started[-1].model["style_image"] == str(tmp_path / "starry.jpg")
    assert started[-1].model["vgg_weights"] == str(tmp_path / "other.safetensors")
