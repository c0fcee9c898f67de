"""Progressive growing of the GANs (studio.models.gan.growing): the schedule, the fade at its
ends, the real images, training through the trainer, resume mid-fade, and sampling after."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_MODELS, make_tiny_dataset, tiny_train_config
from PIL import Image

from studio.core.jobs import CancelToken, Progress, TrainStatus, run_sync
from studio.engine import checkpoint as ckpt
from studio.engine.runs import RunFolder
from studio.engine.train import train_job
from studio.models.gan.growing import (
    GrowthSchedule,
    Stage,
    fade,
    reals_at,
    set_stage,
    upscale,
)
from studio.models.registry import get_family

GROWING = ["gan.dcgan", "gan.wgan_gp", "gan.stylegan"]


def grown_model(key: str, resolution: int = 32, **settings):
    family = get_family(key)
    torch.manual_seed(0)
    config = (
        {**TINY_MODELS[key], "conditional": False} if key == "gan.stylegan" else TINY_MODELS[key]
    )
    model = family(
        family.Config.from_dict(
            {**config, "resolution": resolution, "progressive": True, "grow_steps": 3, **settings}
        )
    )
    return model.eval()


def generate(model, z: torch.Tensor, stage: Stage | None) -> torch.Tensor:
    set_stage(model, stage)
    with torch.no_grad():
        return model.generator(z)


# -- the schedule --------------------------------------------------------------------------------


def test_the_schedule_at_its_boundaries():
    g = GrowthSchedule(32, 10)  # 8 stable, fade 16, 16 stable, fade 32, then 32 to the end
    expect = {
        0: (8, 1.0), 9: (8, 1.0),
        10: (16, 0.0), 15: (16, 0.5), 19: (16, 0.9),
        20: (16, 1.0), 29: (16, 1.0),
        30: (32, 0.0), 39: (32, 0.9),
        40: (32, 1.0), 41: (32, 1.0), 10**6: (32, 1.0),
    }  # fmt: skip
    for step, (res, alpha) in expect.items():
        stage = g.stage(step)
        assert (stage.resolution, stage.alpha) == pytest.approx((res, alpha)), step
    assert g.end_step == 40 and g.stage(39).fading and not g.stage(40).fading
    assert GrowthSchedule(64, 1).end_step == 6
    eight = GrowthSchedule(8, 5)  # nothing to grow
    assert eight.end_step == 0 and eight.stage(0) == eight.stage(99) == Stage(8, 1.0)
    assert g.describe(g.stage(15)) == "growing: fading 16 px in, alpha 0.50"
    assert g.describe(g.stage(25)) == "growing: 16 px stable"
    assert g.describe(g.stage(40)) == "grown: 32 px"


@pytest.mark.parametrize("resolution,steps", [(4, 10), (24, 10), (32, 0)])
def test_a_schedule_it_cannot_follow_is_refused(resolution, steps):
    with pytest.raises(ValueError, match="growing"):
        GrowthSchedule(resolution, steps)


def test_progressive_growing_is_off_by_default_and_adds_no_weights():
    family = get_family("gan.dcgan")
    plain = family(family.Config(resolution=32, latent_dim=8, width=8))
    grown = grown_model("gan.dcgan")
    assert plain.growth is None and not plain.config.progressive
    extra = set(grown.state_dict()) - set(plain.state_dict())
    assert extra and all(".grow_" in k for k in extra)
    assert set(plain.state_dict()) <= set(grown.state_dict())


# -- the fade -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", GROWING)
def test_the_fade_at_its_ends(key):
    model = grown_model(key)
    g, z = model.generator, torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    full = generate(model, z, None)
    mode = model._upsample_mode()
    synthesis = g.synthesis if key == "gan.stylegan" else g
    inputs = (g.ws(g.mapping(z), None), None) if key == "gan.stylegan" else (g._input(z, None),)
    for res in (16, 32):
        # The fade's own arithmetic at alpha 1: the grown network's image at this size.
        with torch.no_grad():
            before, new = synthesis.images_at(res, True, *inputs)
        whole = generate(model, z, Stage(res)) if res < 32 else full
        assert torch.equal(fade(upscale(before, res, mode), new, 1.0), whole)
        # At alpha 0: the previous stage's image, upsampled (nothing of the new layers).
        previous = generate(model, z, Stage(res // 2))
        assert previous.shape[-1] == res // 2
        assert torch.equal(generate(model, z, Stage(res, 0.0)), upscale(previous, res, mode))
        between = generate(model, z, Stage(res, 0.25))
        expect = 0.25 * whole + 0.75 * upscale(previous, res, mode)
        torch.testing.assert_close(between, expect, rtol=1e-5, atol=1e-5)
        assert not torch.equal(between, upscale(previous, res, mode))

    # The discriminator: at alpha 0 it judges the halved image with the previous stage's
    # layers; at alpha 1 it is the grown one; the full stage is the whole network.
    d, x = model.discriminator, torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        set_stage(model, None)
        whole = d(x)
        set_stage(model, Stage(32, 0.0))
        assert not torch.equal(d(x), whole)
        faded_out = d(x)
        set_stage(model, Stage(16))
        assert torch.equal(faded_out, d(F.avg_pool2d(x, 2)))
        set_stage(model, Stage(32, 1.0))
        assert torch.equal(d(x), whole)
        set_stage(model, Stage(16))
        with pytest.raises(ValueError, match="16 px stage"):
            d(x)


def test_real_images_shrink_and_fade_like_the_generators():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert reals_at(x, None) is x
    assert torch.equal(reals_at(x, Stage(32)), x)
    eight = reals_at(x, Stage(8))
    assert eight.shape[-1] == 8
    torch.testing.assert_close(eight[0, 0, 0, 0], x[0, 0, :4, :4].mean())
    half = upscale(F.avg_pool2d(x, 2), 32)
    assert torch.equal(reals_at(x, Stage(32, 0.0)), half)
    torch.testing.assert_close(reals_at(x, Stage(32, 0.5)), 0.5 * x + 0.5 * half)


# -- training through the trainer ---------------------------------------------------------------


def growing_config(key: str, data, **overrides):
    model = {**TINY_MODELS[key], "progressive": True, "grow_steps": 2}
    return tiny_train_config(key, data, model, **overrides)


@pytest.mark.parametrize("key", GROWING)
def test_each_family_trains_while_growing_and_samples_full_size(tmp_path, key):
    data = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)
    config = growing_config(key, data, steps=5, sample_every=1, samples=4)
    messages: list[str] = []
    phases: list[str] = []

    def seen(p: Progress) -> None:
        messages.append(p.message or "")
        phases.append(TrainStatus.read(p.info).phase)

    out = run_sync(train_job(tmp_path / "run", CancelToken(), config), on_progress=seen)
    assert out.ok, out.error or out.details
    rows = [r for r in RunFolder(tmp_path / "run").read_metrics()[0] if "loss_d" in r]
    # 8 px for steps 0-1, 16 px fading in over steps 2-3 (alpha 0, 0.5), then 16 px.
    assert [(r["resolution"], r["alpha"]) for r in rows] == [
        (8, 1), (8, 1), (16, 0), (16, 0.5), (16, 1)
    ]  # fmt: skip
    assert any(m.startswith("Progressive growing: from 8 px to 16 px") for m in messages)
    assert "growing: 8 px stable" in phases and "growing: fading 16 px in, alpha 0.50" in phases
    # Grids drawn at 8 px keep the run's size (each image enlarged to 16 px).
    grids = sorted((tmp_path / "run" / "samples").glob("step_*.png"))
    sizes = {Image.open(p).size for p in grids}
    assert len(grids) >= 5 and len(sizes) == 1
    # A trained model samples with the full networks (no stage), at the run's size.
    family = get_family(key)
    model = family.load(RunFolder(tmp_path / "run").model_dir)
    assert model.stage is None
    labels = {"label": 0} if model.config.num_classes else {}
    assert model.sample(3, torch.Generator().manual_seed(0), **labels).shape[-1] == 16


def test_samples_during_growth_are_the_stage_enlarged():
    model = grown_model("gan.dcgan")
    model.grow_to(0)  # 8 px
    images = model.sample(2, torch.Generator().manual_seed(0))
    assert images.shape[-1] == 32
    assert torch.equal(images, upscale(images[..., ::4, ::4], 32))  # blocks of 4x4


def test_the_batch_finder_probes_the_full_size():
    model = grown_model("gan.stylegan", r1_every=16)  # grow_steps 3: full size from step 12
    assert get_family("gan.dcgan")(get_family("gan.dcgan").Config()).memory_probe_step() == 0
    step = model.memory_probe_step()
    assert step >= 12 and step % 16 == 0 and model.growth.stage(step) == Stage(32)


@pytest.mark.parametrize("key", ["gan.dcgan", "gan.stylegan"])
def test_resume_mid_fade_continues_exactly(tmp_path, key):
    data = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)

    def config():
        return growing_config(key, data, steps=6, checkpoint_every=100)

    assert run_sync(train_job(tmp_path / "a", CancelToken(), config())).ok
    token = CancelToken()

    def stop_at_3(p: Progress) -> None:  # step 3 is the middle of the 16 px fade
        if p.stage == "train" and p.step == 3 and p.metrics:
            token.stop()

    first = run_sync(train_job(tmp_path / "b", token, config()), token, stop_at_3)
    assert first.result.step == 3
    assert run_sync(train_job(tmp_path / "b", CancelToken(), None, steps=6)).ok
    a, b = ([r for r in RunFolder(tmp_path / r).read_metrics()[0] if "loss_d" in r] for r in "ab")
    assert [r["alpha"] for r in b] == [1, 1, 0, 0.5, 1, 1]
    for ra, rb in zip(a, b):
        assert (ra["loss_d"], ra["loss_g"]) == (rb["loss_d"], rb["loss_g"]), ra["step"]
    wa, wb = (
        ckpt.load_file(str(RunFolder(tmp_path / r).model_dir / "model.safetensors")) for r in "ab"
    )
    assert any(".grow_" in k for k in wa)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_cli_status_line_shows_the_stage():
    import io

    from studio.cli.progress import ProgressPrinter

    out = io.StringIO()
    printer = ProgressPrinter(out, min_interval=0)
    printer(Progress("train", 3, 10, info={"phase": "growing: fading 16 px in, alpha 0.50"}))
    assert "growing: fading 16 px in, alpha 0.50" in out.getvalue()
    assert TrainStatus.read({"phase": None}).phase == ""
