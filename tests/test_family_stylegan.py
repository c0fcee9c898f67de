"""StyleGAN2 (gan.stylegan): its layers, style mixing, truncation, the averaged generator
samples come from, classes, and that it learns a tiny dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from test_family_gan import colour_data, colour_error, mean_colour, train_for

from studio.models.base import Batch, StepContext
from studio.models.gan.style_networks import ModulatedConv2d, minibatch_std
from studio.models.gan.stylegan import StyleGAN

TINY = {"latent_dim": 8, "w_dim": 16, "mapping_layers": 2, "width": 8}


def make(seed: int = 0, **overrides: Any) -> StyleGAN:
    torch.manual_seed(seed)
    model = StyleGAN(StyleGAN.Config.from_dict({"resolution": 16, **TINY, **overrides}))
    model.configure_optimizers()
    return model


def train(model: StyleGAN, steps: int, labels: torch.Tensor | None = None) -> None:
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(9)) * 2 - 1
    for i in range(steps):
        model.train_step(Batch(x, labels), StepContext(i, torch.Generator().manual_seed(i)))


def test_demodulation_keeps_unit_variance_for_unit_input():
    torch.manual_seed(0)
    conv = ModulatedConv2d(64, 64, 3, w_dim=16)
    x = torch.randn(8, 64, 16, 16)
    w = 3 * torch.randn(8, 16)  # styles far from 1: some channels x5, some near 0
    with torch.no_grad():
        out = conv(x, w)[:, :, 1:-1, 1:-1]  # away from the zero padding
        conv.demodulate = False
        raw = conv(x, w)[:, :, 1:-1, 1:-1]
    assert 0.85 < float(out.var()) < 1.15
    per_image = out.var(dim=(1, 2, 3))
    assert ((per_image > 0.7) & (per_image < 1.3)).all()  # each image, whatever its style
    assert not 0.5 < float(raw.var()) < 2.0  # without demodulation the styles set the scale


def test_style_mixing_crossover_picks_each_layers_latent():
    model = make()
    train(model, 2)  # noise strengths and biases move off their zero init
    u = model.prior_latents(2, torch.Generator().manual_seed(1), 1.0)
    first, second = u[:1], u[1:]
    with torch.no_grad():
        img_first, img_second = (
            model.decode_latents(first, None),
            model.decode_latents(second, None),
        )
        assert torch.equal(model.mixed(first, second, 0), img_second)
        assert torch.equal(model.mixed(first, second, model.num_ws), img_first)
        middle = model.mixed(first, second, model.num_ws // 2)
    assert not torch.equal(middle, img_first) and not torch.equal(middle, img_second)


def test_truncation_zero_gives_the_mean_image_for_every_seed():
    model = make()
    train(model, 3)  # the running mean of w moves off 0
    assert model.generator_ema.w_avg.abs().sum() > 0
    a = model.sample(3, torch.Generator().manual_seed(0), truncation=0.0)
    b = model.sample(2, torch.Generator().manual_seed(5), truncation=0.0)
    assert all(torch.equal(img, a[0]) for img in (*a, *b))
    with torch.no_grad():
        mean = model.decode_latents(model.generator_ema.w_avg[None], None).clamp(-1, 1)
    assert torch.allclose(a[0], mean[0], atol=1e-5)
    full = model.sample(3, torch.Generator().manual_seed(0))
    assert not torch.equal(full[0], full[1])
    with pytest.raises(ValueError, match="truncation"):
        model.sample(1, torch.Generator(), truncation=1.5)


def test_samples_come_from_the_averaged_generator_saved_with_the_weights(tmp_path):
    model = make(ema_kimg=1.0)
    train(model, 4)
    ema = model.generator_ema.state_dict()
    raw = model.generator.state_dict()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # an average, not a copy
    before = model.sample(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)  # the trained weights change; samples do not
    assert torch.equal(model.sample(2, torch.Generator().manual_seed(3)), before)
    model.save(tmp_path / "m")
    loaded = StyleGAN.load(tmp_path / "m")
    assert torch.equal(loaded.sample(2, torch.Generator().manual_seed(3)), before)


def test_minibatch_std_feature_is_the_spread_across_images():
    same = torch.ones(4, 2, 4, 4)
    assert torch.allclose(minibatch_std(same)[:, 2], torch.full((4, 4, 4), 1e-4))
    spread = torch.randn(4, 2, 4, 4)
    assert minibatch_std(spread)[:, 2].min() > 0.1
    assert minibatch_std(torch.randn(6, 2, 4, 4)).shape == (6, 3, 4, 4)  # groups of 3


def test_classes_are_a_setting():
    off = make(num_classes=3)
    assert off.config.num_classes == 0  # unconditional: no class picker anywhere
    with pytest.raises(ValueError, match="without classes"):
        off.sample(1, torch.Generator(), label=0)
    on = make(num_classes=2, conditional=True)
    train(on, 2, labels=torch.arange(8) % 2)
    gen = torch.Generator
    a = on.sample(2, gen().manual_seed(0), label=0)
    b = on.sample(2, gen().manual_seed(0), label=1)
    assert not torch.equal(a, b)
    # The latent is class-free: the same u draws each class's version of it.
    u = on.prior_latents(1, gen().manual_seed(0), 1.0)
    with torch.no_grad():
        zero, one = (on.decode_latents(u, torch.tensor([c])) for c in (0, 1))
    assert not torch.equal(zero, one)


@pytest.mark.slow
def test_stylegan_learns_the_data_colour():
    # 150 steps at 8 px; worst error ratio over init seeds 0-5: 0.08.
    images, _ = colour_data(8, classes=1)
    torch.manual_seed(0)
    config = {"resolution": 8, **TINY, "style_mixing": 0.0}
    model = StyleGAN(StyleGAN.Config.from_dict(config))
    model.configure_optimizers()
    target = mean_colour(images)
    start = colour_error(model, target)
    train_for(model, images, None, 150)
    assert colour_error(model, target) < 0.3 * start


def test_cli_truncation_flag_reaches_families_that_declare_it(tmp_path, capsys):
    import numpy as np
    from helpers import make_tiny_dataset, train_tiny_run
    from PIL import Image

    from studio.cli.main import main

    data = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)
    run = train_tiny_run(tmp_path / "run", "gan.stylegan", data)
    out = tmp_path / "each"
    args = ["sample", "--run", str(run), "-n", "3", "--truncation", "0", "--out", f"{out}/"]
    assert main(args) == 0
    imgs = [np.asarray(Image.open(f)) for f in sorted(out.glob("*.png"))]
    assert len(imgs) == 3  # psi 0: one image, the average (per class: classes cycle)
    assert np.array_equal(imgs[0], imgs[2]) and not np.array_equal(imgs[0], imgs[1])
    capsys.readouterr()
    assert main([*args[:-2], "--truncation", "2", "--out", f"{out}/"]) == 1
    assert "truncation" in capsys.readouterr().err  # checked against the declared range
    plain = train_tiny_run(tmp_path / "dcgan", "gan.dcgan", data)
    assert main(["sample", "--run", str(plain), "--truncation", "0.5", "--out", "x.png"]) == 1
    assert "truncation" in capsys.readouterr().err  # DCGAN declares no truncation


def test_explore_works_in_w_plus_directions_and_projection():
    from studio.core.jobs import run_sync
    from studio.engine.latent import open_space
    from studio.engine.latent_directions import pca_directions
    from studio.engine.latent_project import project_job

    model = make(seed=2)
    train(model, 3)
    space = open_space(model)
    layers = model.num_ws
    assert space.dim == layers * TINY["w_dim"] and not space.can_encode
    u_plus = space.prior_sample(64, seed=1)
    assert np.array_equal(u_plus, space.prior_sample(64, seed=1))
    # w+: a prior draw is the same w at every layer
    assert np.array_equal(u_plus, np.tile(u_plus[:, : TINY["w_dim"]], (1, layers)))
    u = u_plus[:, : TINY["w_dim"]]
    # The prior is the mapped z: not N(0, I), and the temperature truncates toward w_avg.
    w_avg = model.generator_ema.w_avg.numpy()
    tame = space.prior_sample(64, seed=1, temperature=0.5)[:, : TINY["w_dim"]]
    assert np.allclose(tame - w_avg, 0.5 * (u - w_avg), atol=1e-5)
    d = pca_directions(space, n_samples=120, k=3, seed=0)
    assert np.allclose(d.vectors @ d.vectors.T, np.eye(3), atol=1e-4) and (d.std > 0).all()
    assert "w" in d.method
    target = space.decode(space.prior_sample(1, seed=99)[0])  # reachable: made by the model
    out = run_sync(project_job(space, target, steps=40, seed=0, lr=0.05))
    assert out.ok, out.error
    assert out.result.error < out.result.initial_error
    assert out.result.z.shape == (layers * TINY["w_dim"],)


def test_resume_continues_exactly_with_ema_and_adaptive_augmentation(tmp_path):
    from helpers import TINY_MODELS, make_tiny_dataset, tiny_train_config

    from studio.core.jobs import CancelToken, Progress, run_sync
    from studio.engine import checkpoint as ckpt
    from studio.engine.runs import RunFolder
    from studio.engine.train import train_job

    data = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)
    # p moves every 4 steps (after steps 4, 8, 12), by 0.016 (16 reals over 1,000 images).
    model = {**TINY_MODELS["gan.stylegan"], "ada_kimg": 1, "ada_target": 0.0}

    def config():
        return tiny_train_config("gan.stylegan", data, model, steps=14, checkpoint_every=100)

    assert run_sync(train_job(tmp_path / "a", CancelToken(), config())).ok
    token = CancelToken()

    def stop_at_10(p: Progress) -> None:  # p is above 0, and half a window is counted
        if p.stage == "train" and p.step == 10 and p.metrics:
            token.stop()

    first = run_sync(train_job(tmp_path / "b", token, config()), token, stop_at_10)
    assert first.result.step == 10
    assert run_sync(train_job(tmp_path / "b", CancelToken(), None, steps=14)).ok
    a, b = (RunFolder(tmp_path / r).read_metrics()[0] for r in "ab")
    a, b = ([r for r in rows if "loss_d" in r] for rows in (a, b))
    assert a[9]["augment_p"] > 0  # the adaptive probability moved before the stop
    for ra, rb in zip(a, b):
        assert (ra["loss_d"], ra["augment_p"]) == (rb["loss_d"], rb["augment_p"]), ra["step"]
    wa, wb = (
        ckpt.load_file(str(RunFolder(tmp_path / r).model_dir / "model.safetensors")) for r in "ab"
    )
    assert any(k.startswith("generator_ema.") for k in wa)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
