"""Inpainting: exact unmasked pixels for every family, RePaint's schedule and UNet count, the
masked-only window on a large image, latent optimisation, seeds, cancel and the CLI.

Models are built untrained at 16 px (tiny widths); two runs are trained for 2 steps for the
command line tests.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from helpers import TINY_MODELS, make_tiny_dataset, tiny_pattern, train_tiny_run
from PIL import Image

from studio.cli.inpaint import add_parser, cmd_inpaint, output_paths
from studio.core.jobs import CancelToken, Status, run_sync
from studio.engine.device import cpu_generator
from studio.engine.inpaint import (
    InpaintRequest,
    Window,
    blend_masks,
    inpaint_job,
    plan_window,
)
from studio.models.base import (
    Batch,
    Capability,
    FamilyInfo,
    GenerativeModel,
    ModelConfig,
    StepContext,
)
from studio.models.diffusion import inpaint as diff
from studio.models.registry import FAMILIES, get_family

TINY: dict[str, dict] = {
    "gan.dcgan": {"latent_dim": 8, "width": 8},
    "gan.cgan": {"latent_dim": 8, "width": 8},
    "gan.wgan_gp": {"latent_dim": 8, "width": 8, "n_critic": 2},
    "gan.stylegan": {"latent_dim": 8, "w_dim": 8, "mapping_layers": 2, "width": 8},
    "hybrid.vaegan": {"latent_dim": 4, "width": 8, "conditional": True},
    "vae.conv": {"latent_dim": 4, "width": 8},
    "vae.beta": {"latent_dim": 4, "width": 8},
    "vae.cvae": {"latent_dim": 4, "width": 8},
    "vae.vqvae": {"codebook_size": 16, "embedding_dim": 4, "downsample": 2, "width": 8},
    "flow.nice": {"couplings": 4, "hidden": 16},
    "flow.realnvp": {"scales": 2, "couplings": 2, "hidden": 16},
    "flow.glow": {"levels": 2, "steps": 2, "hidden": 16},
    "flow.flowpp": {
        "scales": 2,
        "couplings": 1,
        "hidden": 8,
        "blocks": 1,
        "components": 4,
        "heads": 2,
        "dequant_couplings": 1,
    },
    "vae.hierarchical": {"levels": 2, "latent_channels": 2, "width": 8},
    "ae.kl": {"width": 8},
    "diffusion.ddpm": {"width": 8, "layers_per_block": 1, "attention_res": 4},
    "ar.pixelcnn": {"width": 8, "layers": 2, "mixtures": 2},
    "ebm.rbm": {"hidden": 16},
    "ar.vq_prior": TINY_MODELS["ar.vq_prior"],  # on the helpers' tiny VQ-VAE run
    "diffusion.latent": TINY_MODELS["diffusion.latent"],  # on the same VQ-VAE run
}


def tiny_model(key: str, num_classes: int = 2) -> GenerativeModel:
    family = get_family(key)
    torch.manual_seed(0)
    cfg = family.Config.from_dict(dict(TINY[key], resolution=16, num_classes=num_classes))
    return family(cfg).eval()


def picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def box_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    mask[y0:y1, x0:x1] = 1.0
    return mask


def run(model: GenerativeModel, request: InpaintRequest, **kw):
    out = run_sync(inpaint_job(model, request), **kw)
    assert out.status is Status.FINISHED, out.error or out.details
    return out.result


def unet_counter(model: GenerativeModel) -> tuple[list[int], object]:
    calls = [0]

    def hook(*_args):
        calls[0] += 1

    return calls, model.ema_unet.register_forward_hook(hook)


# -- every family ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(FAMILIES))
def test_unmasked_pixels_stay_exact(key):
    if Capability.TEXT in get_family(key).info.capabilities:
        pytest.skip("prompt models inpaint through the Prompt workspace: see the next test")
    if Capability.INPAINT not in get_family(key).info.capabilities:
        pytest.skip("the family declares no inpainting (an image-to-image family, say)")
    assert key in TINY, f"add a tiny config for {key}"
    model = tiny_model(key)
    img, mask = picture(24, 20), box_mask(24, 20, 6, 12, 5, 11)
    req = InpaintRequest(img, mask, seed=1, variations=2, feather=2, steps=3, mode="whole")
    results = run(model, req)
    blend, _ = blend_masks(mask, 2)
    assert len(results) == 2
    for res in results:
        assert res.shape == img.shape and res.dtype == np.uint8
        assert np.array_equal(res[blend == 0], img[blend == 0])
    assert not np.array_equal(results[0][mask == 1], img[mask == 1])  # something was painted


@pytest.mark.parametrize(
    "key", [k for k in FAMILIES if Capability.TEXT in get_family(k).info.capabilities]
)
def test_prompt_models_are_sent_to_the_prompt_workspace(key):
    from helpers import TINY_MODELS

    config = get_family(key).Config.from_dict({**TINY_MODELS[key], "resolution": 16})
    model = get_family(key)(config)
    req = InpaintRequest(picture(16, 16), box_mask(16, 16, 2, 6, 2, 6))
    outcome = run_sync(inpaint_job(model, req))
    assert outcome.status is Status.FAILED and "Prompt workspace" in outcome.error


def test_a_model_without_latent_or_unet_is_refused():
    class Plain(GenerativeModel):
        info = FamilyInfo("x.plain", "other", "Plain", "-", Capability.TRAIN | Capability.SAMPLE)

    req = InpaintRequest(picture(16, 16), box_mask(16, 16, 2, 6, 2, 6))
    out = run_sync(inpaint_job(Plain(ModelConfig(resolution=16)), req))
    assert out.status is Status.FAILED and "cannot inpaint" in out.error


def test_conditions_are_checked():
    img, mask = picture(16, 16), box_mask(16, 16, 2, 6, 2, 6)
    out = run_sync(
        inpaint_job(tiny_model("vae.conv"), InpaintRequest(img, mask, conditions={"label": 1}))
    )
    assert out.status is Status.FAILED and "label" in out.error
    out = run_sync(
        inpaint_job(tiny_model("gan.cgan"), InpaintRequest(img, mask, conditions={"label": 5}))
    )
    assert out.status is Status.FAILED and "out of range" in out.error
    res = run(tiny_model("vae.cvae"), InpaintRequest(img, mask, steps=2, conditions={"label": 1}))
    assert res[0].shape == img.shape


# -- RePaint -------------------------------------------------------------------------------------


def test_repaint_with_an_empty_mask_returns_the_original_exactly():
    model = tiny_model("diffusion.ddpm", num_classes=0)
    img = picture(16, 16, seed=3)
    x0 = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    plan = diff.DiffusionPlan(diff.REPAINT, steps=6, jump=2, resample=1)
    job = diff.repaint(model, x0, torch.zeros(1, 1, 16, 16), 2, cpu_generator(0), plan)
    out = run_sync(job)
    assert out.ok and torch.equal(out.result, x0.expand(2, -1, -1, -1))
    # The whole job too (it skips the model when there is nothing to regenerate).
    res = run(model, InpaintRequest(img, np.zeros((16, 16), np.float32), variations=2))
    assert all(np.array_equal(r, img) for r in res)


@pytest.mark.parametrize(
    "steps,jump,resample", [(50, 5, 2), (100, 10, 4), (7, 3, 2), (4, 9, 1), (5, 1, 0)]
)
def test_repaint_path_matches_the_formula(steps, jump, resample):
    path = diff.repaint_path(steps, jump, resample)
    assert path[0] == steps and path[-1] == 0 and max(path) == steps
    moves = np.diff(path)
    j = min(jump, steps)
    assert set(moves.tolist()) <= {-1, j}
    downs = int((moves == -1).sum())
    assert downs == diff.repaint_evaluations(steps, jump, resample)
    assert downs == steps + resample * j * (steps // j)


def test_preset_unet_counts_are_what_they_say():
    model = tiny_model("diffusion.ddpm")  # class-conditional: guidance batches, not extra calls
    img, mask = picture(16, 16), box_mask(16, 16, 4, 10, 4, 10)
    stated = {
        ("repaint", "fast"): 150,
        ("repaint", "quality"): 500,
        ("masked", "fast"): 25,
        ("masked", "quality"): 100,
    }
    for (method, name), count in stated.items():
        preset = diff.PRESETS[method][name]
        assert f"{count} UNet evaluations" in preset.description
        assert preset.plan.evaluations == count
    for method in ("repaint", "masked"):  # run the fast ones and count real UNet calls
        calls, handle = unet_counter(model)
        steps = []
        run(
            model,
            InpaintRequest(img, mask, method=method, conditions={"label": 1}),
            on_progress=lambda p, seen=steps: seen.append(p.step) if p.total else None,
        )
        handle.remove()
        assert calls[0] == stated[(method, "fast")] == steps[-1]


class GaussianOracle(torch.nn.Module):
    """The exact noise predictor for two-pixel "images" x0 ~ N(0, cov): E[eps | x_t] is
    sqrt(1 - a) (a cov + (1 - a) I)^-1 x_t, so any error left is the sampler's."""

    def __init__(self, cov: torch.Tensor, alphas: torch.Tensor) -> None:
        super().__init__()
        a = alphas.double()[:, None, None]
        mats = (1 - a).sqrt() * torch.linalg.inv(a * cov + (1 - a) * torch.eye(2))
        self.register_buffer("mats", mats.float())

    def forward(self, x, t, class_labels=None):
        out = x.reshape(-1, 2) @ self.mats[int(t[0])].T
        return SimpleNamespace(sample=out.reshape(x.shape))


def test_repaint_samples_the_right_conditional_with_an_exact_denoiser():
    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=True, timestep_spacing="trailing")
    std, rho = 0.3, 0.9
    cov = torch.tensor([[1, rho], [rho, 1]], dtype=torch.float64) * std**2
    cfg = SimpleNamespace(num_classes=0, num_train_timesteps=1000, prediction_type="epsilon")
    oracle = GaussianOracle(cov, sched.alphas_cumprod)
    model = SimpleNamespace(
        config=cfg, device=torch.device("cpu"), scheduler=sched, ema_unet=oracle
    )
    x0 = torch.tensor([0.3, 0.0]).reshape(1, 1, 1, 2)

    def draw(mask, steps, jump, resample):
        plan = diff.DiffusionPlan(diff.REPAINT, steps, jump, resample)
        job = diff.repaint(
            model, x0, torch.tensor(mask).reshape(1, 1, 1, 2), 2000, cpu_generator(0), plan
        )
        return run_sync(job).result.reshape(-1, 2)

    # Nothing known: the reverse steps alone reproduce the data distribution.
    free = draw([1.0, 1.0], 1000, 1, 0)
    assert torch.allclose(free.std(0), torch.tensor([std, std]), atol=0.015)
    assert abs(np.corrcoef(free.T.numpy())[0, 1] - rho) < 0.02
    # One pixel known: the other should follow N(rho * 0.3, std^2 (1 - rho^2)). Resampling
    # pulls it there; with enough of it, it gets there.
    want_mean, want_std = rho * 0.3, std * (1 - rho**2) ** 0.5
    plain, resampled = draw([0.0, 1.0], 50, 5, 0)[:, 1], draw([0.0, 1.0], 50, 5, 2)[:, 1]
    assert abs(resampled.mean() - want_mean) < abs(plain.mean() - want_mean)
    many = draw([0.0, 1.0], 250, 10, 9)[:, 1]
    assert abs(many.mean() - want_mean) < 0.03 and abs(many.std() - want_std) < 0.01
    assert bool((draw([0.0, 1.0], 20, 4, 1)[:, 0] == 0.3).all())  # the known pixel is exact


def test_masked_only_window_on_a_larger_image():
    model = tiny_model("diffusion.ddpm", num_classes=0)
    img, mask = picture(48, 64, seed=2), box_mask(48, 64, 20, 26, 40, 47)
    blend, regen = blend_masks(mask, 3)
    window = plan_window(blend > 0, "masked_only", 4, 16)
    assert window.size[0] == window.size[1] >= 16  # a square of at least the model size
    assert (blend[window.slices] > 0).sum() == (blend > 0).sum()  # holds the whole blend
    assert min(window.x0, window.y0) >= 0 and window.x1 <= 64 and window.y1 <= 48
    req = InpaintRequest(img, mask, seed=0, feather=3, padding=4, method="masked", steps=4)
    (res,) = run(model, req)
    assert res.shape == (48, 64, 3)
    assert np.array_equal(res[blend == 0], img[blend == 0])
    outside = np.ones((48, 64), bool)
    outside[window.slices] = False
    assert np.array_equal(res[outside], img[outside])  # nothing changed outside the window
    # Windows: a mask too wide for a square is covered by a rectangle; whole = the image.
    wide = box_mask(48, 64, 10, 12, 2, 60) > 0
    assert plan_window(wide, "masked_only", 8, 16) == Window(0, 48, 0, 64)
    assert plan_window(wide, "whole", 8, 16) == Window(0, 48, 0, 64)


# -- latent optimisation -----------------------------------------------------------------------


def test_latent_optimisation_lowers_the_known_pixel_error():
    model = tiny_model("vae.conv", num_classes=0)
    rng = np.random.default_rng(0)
    data = np.stack([tiny_pattern(i % 4, 16, rng) for i in range(32)])
    x = torch.from_numpy(data).permute(0, 3, 1, 2).float() / 127.5 - 1
    model.train()
    model.configure_optimizers()
    gen = torch.Generator().manual_seed(0)
    for step in range(100):
        model.train_step(
            Batch(x[torch.randint(0, 32, (16,), generator=gen)]), StepContext(step, gen)
        )
    model.eval()
    metrics = []
    req = InpaintRequest(data[0], box_mask(16, 16, 5, 11, 5, 11), variations=2, feather=1, steps=40)
    run(model, req, on_progress=lambda p: metrics.append(dict(p.metrics)) if p.metrics else None)
    mse = [m["known_mse"] for m in metrics]
    loss = [m["loss"] for m in metrics]
    assert len(mse) == 40
    assert mse[-1] < mse[0] and loss[-1] < loss[0]
    # Adam descends steadily: each quarter of the run ends lower than the one before.
    quarters = [loss[i] for i in (0, 9, 19, 29, 39)]
    assert quarters == sorted(quarters, reverse=True)


@pytest.mark.parametrize("key", ["vae.conv", "diffusion.ddpm"])
def test_same_seed_same_variations(key):
    model = tiny_model(key, num_classes=0)
    img, mask = picture(16, 16), box_mask(16, 16, 3, 12, 3, 12)

    def go(seed):
        return run(model, InpaintRequest(img, mask, seed=seed, variations=2, steps=4))

    a, b, c = go(7), go(7), go(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])  # the variations differ
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("key", ["vae.vqvae", "diffusion.ddpm"])
def test_cancel_mid_inpaint(key):
    model = tiny_model(key, num_classes=0)
    token = CancelToken()
    seen = []

    def on_progress(p):
        seen.append(p.step)
        if p.step >= 3:
            token.cancel()

    req = InpaintRequest(picture(16, 16), box_mask(16, 16, 3, 9, 3, 9), steps=20)
    out = run_sync(inpaint_job(model, req), token, on_progress)
    assert out.status is Status.CANCELLED and out.result is None
    assert max(seen) == 3


# -- the command line --------------------------------------------------------------------------


def train_run(tmp_path, key: str, data_dir):
    return train_tiny_run(tmp_path / key, key, data_dir, TINY[key])


def cli(argv: list[str]) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="auto")
    parser = argparse.ArgumentParser(prog="studio")
    add_parser(parser.add_subparsers(dest="command"), common)
    return cmd_inpaint(parser.parse_args(argv))


def test_cli_end_to_end(tmp_path, capsys):
    data = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=2)
    img = picture(40, 48, seed=5)
    Image.fromarray(img).save(tmp_path / "img.png")
    mask = np.zeros((20, 24), np.uint8)  # half the image's size: resized, with a note
    mask[6:12, 8:14] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    base = [
        "--image",
        str(tmp_path / "img.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--device",
        "cpu",
        "--seed",
        "2",
    ]

    gan = train_run(tmp_path, "gan.dcgan", data)
    out = tmp_path / "gan_out.png"
    assert (
        cli(
            [
                "inpaint",
                "--run",
                str(gan),
                "--out",
                str(out),
                "--variations",
                "2",
                "--steps",
                "5",
                *base,
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "resizing the mask" in captured.err
    files = output_paths(out, 2)
    assert [f.name for f in files] == ["gan_out_0.png", "gan_out_1.png"]
    full = np.asarray(Image.fromarray(mask).resize((48, 40), Image.BILINEAR), np.float32) / 255
    blend, _ = blend_masks(full, 4.0)
    for f in files:
        res = np.asarray(Image.open(f))
        assert res.shape == img.shape and np.array_equal(res[blend == 0], img[blend == 0])

    ddpm = train_run(tmp_path, "diffusion.ddpm", data)
    out = tmp_path / "ddpm.png"
    assert (
        cli(
            [
                "inpaint",
                "--run",
                str(ddpm),
                "--out",
                str(out),
                "--preset",
                "fast",
                "--class",
                "class_1",
                "--mode",
                "whole",
                *base,
            ]
        )
        == 0
    )
    assert "150 UNet evaluations" in capsys.readouterr().out
    assert np.asarray(Image.open(out)).shape == img.shape
