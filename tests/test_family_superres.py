"""Diffusion super-resolution (i2i.superres): outputs of the right size at x2 and x4 from inputs
of any size, a seeded degradation, tiles blended without seams, a one-folder run with held-out
PSNR/SSIM against bicubic, ``studio upscale`` and its errors, and a tiny model that learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_dataset, tiny_pattern, tiny_train_config, train_tiny_run
from PIL import Image

from studio.cli.main import main
from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Status, run_sync
from studio.engine.train import train_job
from studio.engine.upscale import check_size, ramp, tile_starts, tiled, upscale_job
from studio.models.base import MODEL_CONFIG, Batch, Capability, StepContext
from studio.models.i2i.superres import SuperRes, SuperResConfig, degrade, upsample

TINY = {"width": 8, "layers_per_block": 1, "num_train_timesteps": 50}


def tiny(scale: int = 2, resolution: int = 16, **extra) -> SuperRes:
    torch.manual_seed(0)
    return SuperRes(SuperResConfig(resolution=resolution, scale=scale, **{**TINY, **extra}))


@pytest.mark.parametrize("scale", [2, 4])
def test_a_constant_input_samples_the_right_size(scale):
    model = tiny(scale)
    x = torch.full((1, 3, 16 // scale, 16 // scale), 0.3)
    out = model.sample(2, torch.Generator().manual_seed(0), image=x, steps=2)
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    # Any size, odd ones too: padded for the UNet's levels and cropped back.
    odd = model.sample(1, torch.Generator().manual_seed(0), image=torch.zeros(3, 5, 7), steps=1)
    assert odd.shape == (1, 3, 5 * scale, 7 * scale)


def test_sampling_needs_an_input_and_known_options():
    model = tiny()
    with pytest.raises(ValueError, match="upscales images"):
        model.sample(1, torch.Generator(), steps=2)
    with pytest.raises(ValueError):
        model.sample(1, torch.Generator(), image=torch.zeros(1, 3, 8, 8), guidance=2.0)
    with pytest.raises(ValueError):
        model.sample(1, torch.Generator(), image=torch.zeros(1, 1, 8, 8))  # channels
    with pytest.raises(ValueError, match="scale"):
        SuperResConfig(scale=3)
    with pytest.raises(ValueError, match="multiple"):
        SuperResConfig(resolution=18, scale=4)


def test_the_degradation_is_deterministic_for_a_seed():
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a = degrade(images, 4, 0.6, 0.05, torch.Generator().manual_seed(3))
    b = degrade(images, 4, 0.6, 0.05, torch.Generator().manual_seed(3))
    c = degrade(images, 4, 0.6, 0.05, torch.Generator().manual_seed(4))
    assert a.shape == (4, 3, 4, 4) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    # Without blur or noise a constant image stays that constant.
    flat = degrade(torch.full((2, 3, 16, 16), 0.25), 2, 0.0, 0.0, torch.Generator())
    assert torch.allclose(flat, torch.full_like(flat, 0.25), atol=1e-5)
    assert torch.allclose(upsample(flat, 2), torch.full((2, 3, 16, 16), 0.25), atol=1e-5)


# -- tiles ------------------------------------------------------------------------------------------


def _stand_in(scale: int, offsets: list[float] | None = None):
    """An identity-like upscaler (nearest neighbour), plus a constant per tile when given."""

    def fn(piece, index):
        yield 1, 1
        out = piece.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
        return out + (offsets[index] if offsets else 0.0)

    return fn


def _run(job):
    out = run_sync(job)
    assert out.ok, out.error
    return out.result


def test_tile_starts_cover_the_image_with_the_overlap():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(20, 32, 8) == [0]
    w = ramp(16, 4)
    assert w.min() > 0 and w.max() == 1 and torch.equal(w, w.flip(0))


def test_tiles_blend_without_seams():
    image = torch.rand(1, 3, 45, 70, generator=torch.Generator().manual_seed(0)) * 2 - 1
    whole = _run(tiled(image, 2, 0, _stand_in(2)))
    pieces = _run(tiled(image, 2, 16, _stand_in(2)))
    assert pieces.shape == whole.shape == (1, 3, 90, 140)
    assert torch.allclose(pieces, whole, atol=1e-5)  # tile boundaries invisible
    constant = _run(tiled(torch.full((1, 3, 40, 40), -0.4), 4, 16, _stand_in(4)))
    assert torch.allclose(constant, torch.full_like(constant, -0.4), atol=1e-6)
    # Tiles that disagree (a different constant each) fade into each other: no step between
    # neighbouring pixels is larger than the disagreement spread over the ramp.
    offsets = [0.0, 0.3, -0.2, 0.5, 0.1, -0.4, 0.2, 0.0, 0.35]
    flat = torch.zeros(1, 3, 40, 40)
    faded = _run(tiled(flat, 2, 16, _stand_in(2, offsets), overlap=4))
    ramp_px = 4 * 2
    limit = (max(offsets) - min(offsets)) / ramp_px * 1.01
    assert (faded.diff(dim=-1).abs().max() <= limit) and (faded.diff(dim=-2).abs().max() <= limit)
    hard = _run(tiled(flat, 2, 16, _stand_in(2, offsets), overlap=1))
    assert hard.diff(dim=-1).abs().max() > faded.diff(dim=-1).abs().max()  # the test can fail


def test_too_large_images_are_refused_with_a_tile_to_try():
    with pytest.raises(StudioError, match="--tile 128"):
        check_size(600, 800, 2, 0)
    with pytest.raises(StudioError, match="scale the image"):
        check_size(20000, 20000, 4, 128)
    with pytest.raises(StudioError, match="at least"):
        check_size(100, 100, 2, 4)
    check_size(600, 800, 2, 128)


def test_running_out_of_memory_suggests_a_smaller_tile(monkeypatch):
    model = tiny()

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        yield

    monkeypatch.setattr(model, "sample_iter", boom)
    image = np.zeros((40, 40, 3), np.uint8)
    out = run_sync(upscale_job("unused", image, tile=32, model=model))
    assert not out.ok and "--tile 16" in str(out.error)


def test_upscaling_cancels_between_passes():
    model = tiny()
    token = CancelToken()
    seen = []

    def cancel_second(p):
        seen.append(p)
        if p.stage == "sample" and p.step >= 2:
            token.cancel()

    image = np.zeros((40, 40, 3), np.uint8)
    out = run_sync(upscale_job("x", image, steps=3, tile=16, model=model), token, cancel_second)
    assert out.status is Status.CANCELLED and out.result is None
    assert seen[-1].total == 9 * 3  # 3 x 3 tiles of 3 passes


# -- the residual over bicubic, and runs saved before it ----------------------------------------------


@pytest.mark.parametrize("sampler", ["dpm++", "ddim"])
def test_a_fresh_residual_model_returns_bicubic(sampler):
    model = tiny(2)  # the defaults: the residual, predicted as a clean sample, zero-initialised
    assert model.config.residual and model.config.prediction_type == "sample"
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    # 5 steps divide the 50 training steps: DDIM's last step then lands on t = 0 exactly.
    out = model.sample(2, torch.Generator().manual_seed(1), image=x, sampler=sampler, steps=5)
    assert torch.allclose(out, upsample(x, 2), atol=1e-5)


def test_the_residual_round_trips_and_is_what_training_diffuses():
    model = tiny(2, residual_scale=4.0)
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8
    cond = upsample(degrade(hr, 2, 0.0, 0.0, torch.Generator().manual_seed(0)), 2)
    z = model.to_diffused(hr, cond)
    assert torch.allclose(z, ((hr - cond) * 4).clamp(-1, 1))
    small = (hr - cond).abs().max() * 4 <= 1
    if small:
        assert torch.allclose(model.from_diffused(z, cond), hr, atol=1e-5)
    old = tiny(2, residual=False, prediction_type="epsilon")
    assert old.to_diffused(hr, cond) is hr and old.from_diffused(hr, cond) is hr


def test_runs_saved_before_the_residual_setting_keep_their_behaviour(tmp_path):
    saved = SuperResConfig(
        resolution=16, residual=False, prediction_type="epsilon", **TINY
    ).to_dict()
    del saved["residual"], saved["residual_scale"]  # as a run from before the setting saved it
    old = SuperResConfig.from_saved(saved)
    assert not old.residual and old.prediction_type == "epsilon"
    assert SuperResConfig.from_dict({"resolution": 16}).residual  # a new run: the residual
    # Resuming: the run's start settings, plus the saved values of settings added since.
    assert SuperResConfig.resumed({"width": 8}, saved) == {
        "width": 8,
        "residual": False,
        "prediction_type": "epsilon",
    }
    assert SuperResConfig.resumed({}, SuperResConfig().to_dict())["residual"]
    # A saved old model loads as one.
    model = SuperRes(SuperResConfig.from_saved(saved))
    model.save(tmp_path / "m")
    meta_path = tmp_path / "m" / MODEL_CONFIG
    meta = json.loads(meta_path.read_text())
    for name in ("residual", "residual_scale"):
        meta["config"].pop(name)
    meta_path.write_text(json.dumps(meta))
    loaded = SuperRes.load(tmp_path / "m")
    assert not loaded.config.residual and loaded.config.prediction_type == "epsilon"


# -- a run, and the command line ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    data = make_tiny_dataset(tmp_path_factory.mktemp("sr_data"), n=12, size=16, classes=2)
    run = tmp_path_factory.mktemp("sr") / "run"
    return train_tiny_run(run, "i2i.superres", data, steps=3, samples=2), data


def test_a_one_folder_run_logs_psnr_and_ssim_against_bicubic(sr_run, tmp_path):
    sr_run, data = sr_run
    assert Capability.SINGLE_FOLDER in SuperRes.info.capabilities
    rows = [json.loads(line) for line in (sr_run / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in rows if "heldout_psnr" in r]
    assert held, rows[-1]
    for name in ("heldout_psnr", "heldout_psnr_bicubic", "heldout_ssim", "heldout_ssim_bicubic"):
        assert np.isfinite(held[-1][name])
    assert held[-1]["heldout_psnr_bicubic"] > 10  # bicubic of a mild degradation is close
    grid = sorted((sr_run / "samples").glob("*.png"))[-1]
    assert Image.open(grid).size[0] > 3 * 16  # input | output | original columns
    # Folder B is refused: the family makes its inputs itself.
    bad = tiny_train_config("i2i.superres", data, data_b=str(tmp_path))
    out = run_sync(train_job(tmp_path / "b", CancelToken(), bad))
    assert not out.ok and "folder B" in str(out.error)


def test_studio_upscale_writes_the_image_and_refuses_what_it_should(sr_run, tmp_path, capsys):
    sr_run, _ = sr_run
    src = tmp_path / "small.png"
    Image.fromarray(np.tile(tiny_pattern(1, 20, np.random.default_rng(0)), (1, 2, 1))).save(src)
    out = tmp_path / "big.png"
    args = ["upscale", "--run", str(sr_run), "--image", str(src), "--out", str(out)]
    assert main([*args, "--steps", "2", "--tile", "16", "--device", "cpu"]) == 0
    assert Image.open(out).size == (80, 40)
    first = out.read_bytes()
    # An existing output is refused unless --force; then it is replaced (same seed: same).
    assert main([*args, "--steps", "2", "--tile", "16"]) != 0
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--steps", "2", "--tile", "16", "--force", "--device", "cpu"]) == 0
    assert out.read_bytes() == first
    out.unlink()
    cases = [
        (["--run", str(tmp_path / "nope")], "no run"),
        (["--image", str(tmp_path / "missing.png")], "no image"),
        (["--tile", "4"], "at least"),
        (["--tile", "-1"], "--tile"),
        (["--steps", "0"], "--steps"),
    ]
    for extra, expected in cases:
        assert main([*args, *extra]) != 0
        assert expected in capsys.readouterr().err
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert main([*args[:3], "--image", str(damaged), "--out", str(out)]) != 0
    assert "cannot read" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_of_another_family_is_refused(tmp_path, capsys):
    run = tmp_path / "gan"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"family": "gan.dcgan"}))
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    out = tmp_path / "o.png"
    assert main(["upscale", "--run", str(run), "--image", str(img), "--out", str(out)]) != 0
    assert "does not upscale" in capsys.readouterr().err and not out.exists()


# -- it learns --------------------------------------------------------------------------------------


def test_a_tiny_superres_learns():
    """A tiny UNet on 8 px patterns: the denoising loss falls well below its start."""
    model = tiny(2, 8, width=16, warmup_steps=0, lr=5e-3, ema_decay=0.0)
    model.configure_optimizers()
    model.remember_base_lrs()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(np.stack([tiny_pattern(i % 4, 8, rng) for i in range(8)]))
    images = images.permute(0, 3, 1, 2).float().div(127.5).sub(1)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(25):
        model.train()
        out = model.train_step(Batch(images=images), StepContext(step, gen))
        losses.append(float(out["loss"]))
        assert set(out) == set(SuperRes.info.loss_names)
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses


def test_the_train_form_does_not_ask_for_folder_b():
    from studio.qt.engine_jobs import describe_families

    listing = run_sync(describe_families()(CancelToken()))
    assert listing.ok, listing.error
    specs = {s.key: s for s in listing.result.families}
    assert not specs["i2i.superres"].paired and specs["i2i.pix2pix"].paired


def test_the_plots_put_psnr_and_ssim_beside_bicubics():
    from studio.qt.plot_parts import LOSSES, group_of

    assert group_of("heldout_psnr") == group_of("heldout_psnr_bicubic") != LOSSES
    assert group_of("heldout_ssim") == group_of("heldout_ssim_bicubic") != LOSSES
    assert group_of("heldout_psnr") != group_of("heldout_ssim")
    assert group_of("heldout_l1") == LOSSES  # a paired run's error stays with its losses


def test_a_run_from_before_the_residual_setting_resumes_and_loads_as_it_was(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)
    old = {"residual": False, "prediction_type": "epsilon"}
    run = train_tiny_run(tmp_path / "run", "i2i.superres", data, model=old, steps=2)
    # Rewrite what the run saved as a run from before the setting would have it.
    config_path = run / "config.json"
    config = json.loads(config_path.read_text())
    for block in (config["model"], config["train"]["model"]):
        for name in ("residual", "residual_scale", "prediction_type"):
            block.pop(name, None)
    config["model"]["prediction_type"] = "epsilon"  # saved configs held every setting
    config_path.write_text(json.dumps(config))
    # (The checkpoint's own copy is hashed and stays: resuming builds from config.json.)
    for meta_path in run.rglob(MODEL_CONFIG):
        meta = json.loads(meta_path.read_text())
        meta["config"].pop("residual"), meta["config"].pop("residual_scale")
        meta_path.write_text(json.dumps(meta))
    from studio.engine.sample import load_run_model

    assert not load_run_model(run, "cpu").config.residual
    out = run_sync(train_job(run, CancelToken(), steps=3))
    assert out.ok, out.error or out.details
    # The model the resumed run saved was built as the old run was.
    resumed = json.loads((run / "model" / MODEL_CONFIG).read_text())["config"]
    assert resumed["residual"] is False and resumed["prediction_type"] == "epsilon"


def test_few_sampler_steps_by_default_here_and_in_compare():
    """After a short run 1 to 4 steps score best (docs/quality.md): super-resolution's own
    default, which the sampling options show and Compare uses, is 4, while DDPM keeps 20."""
    from studio.engine.compare import CompareSettings
    from studio.models.diffusion.ddpm import DDPM, DDPMConfig

    model = tiny()
    assert model.parse_sampling({"sampler": "dpm++"})[1] == 4
    assert model.parse_sampling({"sampler": "ddim"})[1] == 4
    assert model.parse_sampling({"sampler": "ddim", "steps": 9})[1] == 9
    ddpm = DDPM(DDPMConfig(resolution=16, width=8, layers_per_block=1))
    assert ddpm.parse_sampling({"sampler": "dpm++"})[1] == 20
    settings = CompareSettings(runs=["a"])
    assert settings.sampling_for("a", model.sampling_options)["steps"] == 4
    assert settings.sampling_for("a", ddpm.sampling_options)["steps"] == 20
    assert settings.sampling_for("a")["steps"] == 20


def test_a_dit_backbone_starts_at_bicubic_upscales_any_size_and_round_trips(tmp_path):
    """``backbone=dit``: diffusers' DiT on patches of the noisy image beside the upsampled
    input; its zero-started output projection makes a fresh residual model return bicubic, at
    any (non-square) size, and the weights save and load as DDPM's DiT's."""
    model = tiny(backbone="dit", dit_layers=1, dit_width=64, patch_size=4)
    assert model.uses_dit()
    x = torch.rand(2, 3, 10, 14, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = model.sample(2, torch.Generator().manual_seed(0), image=x)
    assert out.shape == (2, 3, 20, 28)
    assert torch.equal(out, upsample(x, 2).clamp(-1, 1))
    with torch.no_grad():  # weights that do something, then a round trip
        for p in model.ema_unet.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.02)
    model.save(tmp_path / "model")
    assert (tmp_path / "model" / "transformer").is_dir()
    again = SuperRes.load(tmp_path / "model")
    a = model.sample(1, torch.Generator().manual_seed(3), image=x[:1], steps=2)
    b = again.sample(1, torch.Generator().manual_seed(3), image=x[:1], steps=2)
    assert torch.equal(a, b) and not torch.equal(a, upsample(x[:1], 2).clamp(-1, 1))
    with pytest.raises(ValueError, match="patch size"):
        tiny(backbone="dit", patch_size=4, resolution=18)
