"""The feed-forward style network (``style.fast``): it keeps any input's size, its style loss
falls as it trains on a tiny fixture (a tiny random VGG-19 saved by the test, never real
weights), and a missing VGG file or style image is a clear error before a run folder is made.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import TINY_MODELS, make_tiny_dataset, tiny_style_files, tiny_train_config

import studio.engine.file_inputs  # noqa: F401 - registers the readers the family uses
from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Status, run_sync
from studio.engine.train import train_job
from studio.models.base import Batch, StepContext
from studio.models.registry import get_family

KEY = "style.fast"


def tiny_style(**overrides) -> torch.nn.Module:
    family = get_family(KEY)
    torch.manual_seed(0)
    settings = {**dict(TINY_MODELS[KEY]), "resolution": 16, **overrides}
    model = family(family.Config.from_dict(settings))
    model.configure_optimizers()
    model.remember_base_lrs()
    return model


def test_keeps_any_size_and_ignores_the_seed():
    model = tiny_style()
    x = torch.rand(2, 3, 18, 23) * 2 - 1  # not multiples of 4
    a = model.sample(3, torch.Generator().manual_seed(1), image=x)
    b = model.sample(3, torch.Generator().manual_seed(2), image=x)
    assert a.shape == (3, 3, 18, 23) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    tiny = model.sample(1, torch.Generator(), image=torch.zeros(3, 3, 5))  # too small to reflect
    assert tiny.shape == (1, 3, 3, 5)
    with pytest.raises(ValueError, match="input image"):
        model.sample(1, torch.Generator())


def test_style_loss_falls_while_training():
    model = tiny_style(style_weight=1e3, content_weight=1.0, tv_weight=0.0)
    model.prepare_for_data(8)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1
    ctx = StepContext(0, torch.Generator().manual_seed(0), lr_scale=1.0)
    first = model.train_step(Batch(images[:4]), ctx)
    for step in range(1, 30):
        ctx = StepContext(step, torch.Generator().manual_seed(step), lr_scale=1.0)
        last = model.train_step(Batch(images[(step % 2) * 4 :][:4]), ctx)
    assert all(torch.isfinite(v) for v in last.values())
    assert float(last["loss_style"]) < 0.5 * float(first["loss_style"])
    assert {"loss", "loss_content", "loss_style", "loss_tv"} <= set(last)
    # The VGG and the style are not part of the saved weights.
    assert all(k.startswith("net.") for k in model.state_dict())
    assert model.extra_images()["style"].shape[:2] == (1, 3)


def test_a_missing_vgg_file_says_where_to_get_it(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=8, size=16)
    _, style = tiny_style_files()
    settings = {
        **dict(TINY_MODELS[KEY]),
        "vgg_weights": str(tmp_path / "nowhere.pth"),
        "style_image": str(style),
    }
    cfg = tiny_train_config(KEY, data, model=settings)
    out = run_sync(train_job(tmp_path / "run", CancelToken(), cfg))
    assert out.status is Status.FAILED
    assert "nowhere.pth" in out.error and "download.pytorch.org" in out.error
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    # No style image chosen: one sentence naming the setting.
    good_vgg = dict(TINY_MODELS[KEY])["vgg_weights"]
    cfg = dataclasses.replace(cfg, model={**settings, "vgg_weights": good_vgg, "style_image": ""})
    out = run_sync(train_job(tmp_path / "run2", CancelToken(), cfg))
    assert out.status is Status.FAILED and "Style image" in out.error


def test_reader_errors_are_studio_errors(tmp_path):
    from studio.models.file_inputs import read_file_input

    with pytest.raises(StudioError, match="There is no image"):
        read_file_input("image", tmp_path / "missing.png", "Style image")
    with pytest.raises(StudioError, match="Choose a file"):
        read_file_input("vgg19", "  ", "VGG-19 file")


@pytest.fixture(scope="module")
def style_run(tmp_path_factory):
    from helpers import train_tiny_run

    base = tmp_path_factory.mktemp("style_run")
    data = make_tiny_dataset(base / "data", n=10, size=16)
    return train_tiny_run(base / "run", KEY, data, sample_every=2)


def test_a_run_shows_input_output_rows_and_its_style(style_run):
    from PIL import Image

    grids = sorted((style_run / "samples").glob("step_*.png"))
    assert grids, "no sample grid"
    assert (style_run / "samples" / "style.png").exists()
    w, h = Image.open(grids[-1]).size
    assert w < 3 * 16  # two columns of 16 px images (input | output), not three
    import json

    logged = [json.loads(line) for line in (style_run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_style" in row and "loss_content" in row and "loss_tv" in row for row in logged)
    assert not any("heldout_psnr" in row for row in logged)  # nothing to score against


def test_studio_translate_and_stylize_apply_a_run_at_the_images_size(style_run, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from studio.cli.main import main

    src = tmp_path / "photo.png"
    Image.fromarray(np.full((21, 30, 3), 120, np.uint8)).save(src)
    out = tmp_path / "out.png"
    assert main(["translate", "--run", str(style_run), "--image", str(src), "--out", str(out)]) == 0
    assert Image.open(out).size == (30, 21)
    styl = tmp_path / "styl.png"
    args = ["stylize", "--run", str(style_run), "--content", str(src), "--out", str(styl)]
    assert main(args) == 0 and Image.open(styl).size == (30, 21)
    assert np.array_equal(np.asarray(Image.open(styl)), np.asarray(Image.open(out)))
    capsys.readouterr()
    assert main([*args, "--style", str(src)]) != 0
    assert "leave out --style" in capsys.readouterr().err
    assert main(["stylize", "--content", str(src), "--out", str(styl)]) != 0
    assert "--run RUN" in capsys.readouterr().err


def test_the_canvas_translates_with_a_style_run(style_run):
    import numpy as np

    from studio.engine.translate import translate_canvas_job, translating_runs

    assert [t.path for t in translating_runs([style_run])] == [style_run]
    image = np.random.default_rng(0).integers(0, 255, (24, 20, 3)).astype(np.uint8)
    mask = np.zeros((24, 20), np.float32)
    mask[4:12, 4:12] = 1
    out = run_sync(translate_canvas_job(style_run, image, mask, 1.0, device="cpu"))
    assert out.ok, out.error
    assert out.result.shape == image.shape and np.array_equal(out.result[20:], image[20:])


def test_compare_shows_style_runs_side_by_side(style_run, tmp_path):
    import shutil

    from studio.engine.compare import CompareSettings, compare_job

    twin = shutil.copytree(style_run, tmp_path / "twin")
    settings = CompareSettings(
        [style_run, twin], n=4, extractor_steps=2, cache_dir=tmp_path / "c", device="cpu"
    )
    out = run_sync(compare_job(settings))
    assert out.ok, out.error or out.details
    for panel in out.result.panels:
        assert panel.quality.get("psnr") is None  # no targets to score against
        assert panel.grid.shape[1] == 2 * 18 + 2  # rows of input | output
