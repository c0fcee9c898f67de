"""The Train form's picker for a run setting (a run this one builds on): it offers the runs
of the family the setting requires, found on the engine thread, and Start hands the chosen
folder to the run as the setting's value."""

from __future__ import annotations

import json

from studio.core.paths import runs_dir
from studio.engine.runs import TrainConfig
from studio.models.registry import get_family
from studio.qt import engine_jobs
from studio.qt.engine_jobs import FamilySpec
from studio.qt.forms import RunPicker
from studio.qt.train_panel import TrainPanel


def test_the_picker_offers_runs_of_the_required_family(
    qtbot, runner, app_settings, tmp_path, monkeypatch
):
    # Listing reads each run's config.json only (no weights are opened for the list).
    vq = runs_dir() / "my-vqvae"  # offered
    other = runs_dir() / "a-gan"  # a run of another family: not offered
    for run, family in [(vq, "vae.vqvae"), (other, "gan.dcgan")]:
        run.mkdir(parents=True)
        train = TrainConfig(family=family, data=str(tmp_path)).to_dict()
        (run / "config.json").write_text(json.dumps({"family": family, "train": train}))

    family = get_family("ar.vq_prior")
    spec = FamilySpec("ar.vq_prior", "ar", "VQ-VAE prior", "codes", family.Config)
    panel = TrainPanel(runner, app_settings)
    qtbot.addWidget(panel)
    started = []
    monkeypatch.setattr(engine_jobs, "train_new", lambda run_dir, config: started.append(config))
    monkeypatch.setattr(panel, "_submit", lambda name, factory, **kw: None)
    panel.picker.set_families([spec])
    panel.set_dataset(str(tmp_path), 10)
    form = panel.model_form
    picker = form.widget("base_run")
    assert isinstance(picker, RunPicker) and picker.path() == ""
    qtbot.waitUntil(lambda: picker.combo.count() == 1, timeout=20_000)
    assert picker.combo.itemData(0) == str(vq)
    assert "VQ-VAE" in picker.combo.itemText(0)
    picker.combo.setCurrentIndex(0)
    assert form.values()["base_run"] == str(vq)
    panel.start()
    assert started[-1].model["base_run"] == str(vq)
    # A folder typed in (or browsed to) is the value as well.
    picker.set_path(str(tmp_path / "elsewhere"))
    assert form.values()["base_run"] == str(tmp_path / "elsewhere")
