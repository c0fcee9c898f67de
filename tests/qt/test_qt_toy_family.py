"""Acceptance of the family contract: a family defined only in this file, registered at run
time, trains from the Train form with its own settings, samples, compares in Compare, moves on
Explore's sliders and inpaints on the Canvas, in the window and through the command line,
with no edit anywhere else (docs/writing-a-family.md walks through it)."""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import Qt
from torch import Tensor, nn

from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    GenerativeModel,
    ModelConfig,
    SampleStep,
    StepContext,
    setting,
)
from studio.models.capabilities import TEMPERATURE, LatentSpec
from studio.models.latent_inpaint import LatentInpainting
from studio.models.registry import register_family, unregister_family

# -- the toy family: a linear autoencoder with a Gaussian prior ------------------------------


@dataclass
class ToyConfig(ModelConfig):
    latent_dim: int = setting(4, label="Toy latent size", minimum=1, maximum=64, main=True)
    lr: float = setting(1e-2, label="Learning rate", minimum=1e-6, maximum=1.0)


class ToyAutoencoder(LatentInpainting, GenerativeModel):
    info = FamilyInfo(
        key="toy.linear",
        kind="toy",
        display_name="Toy autoencoder",
        summary="A linear autoencoder: the smallest family the contract carries.",
        capabilities=Capability.TRAIN
        | Capability.SAMPLE
        | Capability.LATENT
        | Capability.LIKELIHOOD
        | Capability.INPAINT,
        loss_names=("loss",),
        kind_title="Toy models",
    )
    Config = ToyConfig
    conditions = ("temperature",)
    sampling_options = (TEMPERATURE,)

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        pixels = config.channels * config.resolution**2
        self.encoder = nn.Linear(pixels, config.latent_dim)
        self.decoder = nn.Linear(config.latent_dim, pixels)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        self.optimizers = {"ae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}
        return self.optimizers

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        with ctx.autocast():
            loss = self._error(batch.images).mean()
        self.optimizer_step("ae", loss, ctx)
        return {"loss": loss.detach()}

    def sample_iter(
        self, n: int, generator: torch.Generator, **conditions: Any
    ) -> Generator[SampleStep, None, Tensor]:
        self.check_conditions(conditions)
        t = float(conditions.get("temperature") or 1.0)
        with torch.no_grad():
            images = self.decode_latents(self.prior_latents(n, generator, t).to(self.device), None)
        yield SampleStep(1, 1, images)
        return images

    def _error(self, images: Tensor) -> Tensor:
        x = images.flatten(1).to(self.device)
        return (torch.tanh(self.decoder(self.encoder(x))) - x).square().mean(1)

    # the latent protocol
    def latent_spec(self) -> LatentSpec:
        return LatentSpec((self.config.latent_dim,), encoder="the linear encoder")

    def prior_latents(self, n: int, generator: torch.Generator, temperature: float) -> Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator) * temperature

    def decode_latents(self, z: Tensor, labels: Tensor | None) -> Tensor:
        c = self.config
        return torch.tanh(self.decoder(z)).view(len(z), c.channels, c.resolution, c.resolution)

    def encode_latents(self, images: Tensor, labels: Tensor | None) -> Tensor:
        return self.encoder(images.flatten(1))

    def direction_features(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        codes = self.encode_latents(self.decode_latents(z, labels), labels)
        return codes, codes

    # the likelihood protocol: a Gaussian of the reconstruction error (a toy score)
    @torch.no_grad()
    def bits_per_dim(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        var = self._error(images).clamp_min(1e-6)
        return 0.5 * torch.log2(2 * math.pi * math.e * var) + 8


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def toy() -> Iterator[type]:
    register_family("toy.linear", ToyAutoencoder)
    yield ToyAutoencoder
    unregister_family("toy.linear")


@pytest.fixture
def broken_family() -> Iterator[str]:
    """A family whose module cannot be imported (as a plug-in with a missing dependency)."""
    register_family("toy.broken", "studio_no_such_plugin_module:Missing")
    yield "toy.broken"
    unregister_family("toy.broken")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    """A six-step toy run on 16 px images (trained once for the module)."""
    from helpers import make_tiny_dataset, train_tiny_run

    register_family("toy.linear", ToyAutoencoder)
    base = tmp_path_factory.mktemp("toy")
    data = make_tiny_dataset(base / "data", n=20, size=16, classes=2)
    run = train_tiny_run(base / "run", "toy.linear", data, {"latent_dim": 3}, steps=6)
    unregister_family("toy.linear")
    return run


# -- the window ---------------------------------------------------------------------------------


def test_the_toy_trains_from_the_train_form_with_its_own_settings(
    qtbot, broken_family, window, tiny_dataset
) -> None:
    from qt_steps import load_dataset

    from studio.core.jobs import Status

    assert load_dataset(qtbot, window, tiny_dataset) == 32
    window.show_workspace(window.TRAIN)
    panel = window.train_panel
    combo = panel.picker.combo
    assert "Toy models" in [combo.itemText(i) for i in range(combo.count())]
    # A family that cannot be imported is skipped with a note; the others are all there.
    listed = set(panel.picker.keys())
    assert broken_family not in listed and "gan.dcgan" in listed
    notes = [line for line in panel.view.log_lines() if broken_family in line]
    assert notes and "unavailable" in notes[0] and "studio_no_such_plugin_module" in notes[0]
    assert panel.picker.set_current_key("toy.linear")
    assert "latent_dim" in panel.model_form.values()
    panel.model_form.set_values({"latent_dim": 3})
    panel.options_form.set_values(
        {"steps": 6, "batch_size": 4, "sample_every": 3, "log_every": 1, "device": "cpu"}
    )
    with qtbot.waitSignal(window.runner.job_finished, timeout=120_000) as blocker:
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    outcome = blocker.args[1]
    assert outcome.status is Status.FINISHED, outcome.error
    run = panel.run_path
    assert run is not None and (run / "model" / "model.safetensors").is_file()
    assert "loss" in panel.view.plot.names()


def test_the_toy_compares_in_compare_with_its_sampling_option(qtbot, app_settings, toy_run):
    from studio.core.jobs import CancelToken, run_sync
    from studio.qt.compare import CompareWorkspace
    from studio.qt.engine_jobs import describe_families
    from studio.qt.engine_thread import JobRunner

    assert run_sync(describe_families()(CancelToken())).ok  # what the Train page does
    runner = JobRunner()
    ws = CompareWorkspace(runner, app_settings)
    ws.extractor_steps = 10
    qtbot.addWidget(ws)
    try:
        assert ws.add_run(toy_run)
        panel = ws.panels[0]
        assert set(panel.sampling_row.controls) == {"temperature"}  # declared, not hard-coded
        panel.sampling_row.controls["temperature"].setValue(0.5)
        assert ws.compare_settings()["overrides"] == {str(toy_run): {"temperature": 0.5}}
        ws.n.setValue(4)
        with qtbot.waitSignal(ws.report_ready, timeout=120_000) as blocker:
            ws.regenerate()
        report = blocker.args[0]
        assert report.panels[0].conditions == {"temperature": 0.5}
        assert "FD" in panel.numbers.text() and "bits/dim" in panel.numbers.text()
    finally:
        assert runner.shutdown(20_000, grace_ms=5_000)


def test_the_toy_moves_on_explore_sliders(qtbot, app_settings, runner, toy_run):
    from qt_steps import small_latent_workspace
    from test_qt_latent import open_and_wait, settle

    ws = small_latent_workspace(qtbot, app_settings, runner)
    open_and_wait(qtbot, ws, toy_run)
    assert len(ws.slider_panel.sliders) == 2
    assert "PCA of the latents" in ws.slider_panel.method_label.text()
    before = ws.image.copy()
    ws.slider_panel.sliders[0].setValue(300)
    settle(qtbot, ws)
    assert not np.array_equal(before, ws.image)
    assert ws.shutdown()


def test_the_toy_inpaints_on_the_canvas(qtbot, app_settings, toy_run):
    from test_qt_canvas_inpaint import choose_run, generate, paint_rect
    from test_qt_canvas_support import open_workspace, test_image

    for workspace in open_workspace(qtbot, app_settings):
        original = test_image(48, 48, seed=3)
        workspace.set_image(original, "photo")
        mask = paint_rect(workspace, 10, 10, 30, 30)
        panel = workspace.inpaint_panel
        info = choose_run(qtbot, workspace, toy_run)
        assert info.can_inpaint and "Toy autoencoder" in panel.family_label.text()
        assert not panel._form.isRowVisible(panel.method_combo)  # one way to inpaint
        assert "Adam steps" in panel.preset_label.text()  # the shared latent inpainter
        panel.variations_spin.setValue(2)
        generate(qtbot, workspace)
        assert workspace.staging.count() == 2
        assert np.array_equal(workspace.document.mask, mask)


# -- the command line ---------------------------------------------------------------------------


def test_the_toy_through_the_command_line(tmp_path, capsys, toy_run):
    from helpers import make_tiny_dataset

    from studio.cli.main import main

    data = make_tiny_dataset(tmp_path / "data", n=20, size=16, classes=2)
    run = tmp_path / "run"
    assert main(["families"]) == 0
    listed = capsys.readouterr().out
    assert "toy.linear" in listed and "registered at run time" in listed
    args = [
        "train",
        "--family",
        "toy.linear",
        "--data",
        str(data),
        "--resolution",
        "32",
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--out",
        str(run),
        "--device",
        "cpu",
        "--set",
        "latent_dim=3",
    ]
    assert main(args) == 0
    grid = tmp_path / "grid.png"
    assert (
        main(
            [
                "sample",
                "--run",
                str(run),
                "-n",
                "4",
                "--out",
                str(grid),
                "--with",
                "temperature=0.5",
            ]
        )
        == 0
    )
    assert Image.open(grid).size[0] >= 16
    assert (
        main(["sample", "--run", str(run), "-n", "1", "--out", str(grid), "--with", "top_k=3"]) != 0
    )
    assert "temperature" in capsys.readouterr().err

    img = np.full((24, 24, 3), 128, np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    mask = np.zeros((24, 24), np.uint8)
    mask[8:16, 8:16] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "filled.png"
    assert (
        main(
            [
                "inpaint",
                "--run",
                str(run),
                "--image",
                str(tmp_path / "img.png"),
                "--mask",
                str(tmp_path / "mask.png"),
                "--out",
                str(out),
                "--steps",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert np.asarray(Image.open(out)).shape == img.shape

    report = tmp_path / "compare"  # a run with held-out images (the CLI run keeps one)
    assert (
        main(
            [
                "compare",
                "--runs",
                str(toy_run),
                "-n",
                "4",
                "--out",
                str(report),
                "--extractor-steps",
                "5",
                "--device",
                "cpu",
                "--with",
                "temperature=0.5",
            ]
        )
        == 0
    )
    saved = json.loads((report / "report.json").read_text(encoding="utf-8"))
    assert saved["panels"][0]["conditions"] == {"temperature": 0.5}
