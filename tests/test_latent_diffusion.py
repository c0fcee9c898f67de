"""Diffusion in the latent explorer: DDIM decode and inversion, the space, its directions.

Round trips need a model whose DDIM ODE is well posed, which a UNet with random weights is not
(its noise prediction ignores the image's scale: GroupNorm on a near-zero input amplifies it,
so inversion has nothing stable to converge to). :class:`ClusterDenoiser` is instead the exact,
closed-form noise prediction of a known data distribution, a mixture of a few Gaussian
clusters of "images": what a perfectly trained network on that data computes. It stands in for
the EMA UNet of a real DDPM (same call signature), so every line of the explorer's diffusion
path runs; tests of plumbing (shapes, batches, classes, jobs, cancel) use real tiny UNets.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import make_tiny_dataset, tiny_pattern
from PIL import Image

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.latent import (
    arithmetic,
    describe_run,
    interpolate,
    open_latent_space,
    open_space,
)
from studio.engine.latent_diffusion import (
    DiffusionLatentSpace,
    diffusion_directions_job,
    invert_job,
)
from studio.engine.runs import RunFolder, TrainConfig
from studio.models.diffusion.inversion import ddim_decode_iter, ddim_invert_iter, ddim_path
from studio.models.diffusion.samplers import make_sampler
from studio.models.registry import get_family

TINY = {"width": 8, "layers_per_block": 1, "attention_res": 4, "resolution": 16}
SPREAD = 0.15  # each cluster's standard deviation per pixel


def tiny_ddpm(classes: int = 0, seed: int = 0, **extra):
    torch.manual_seed(seed)
    family = get_family("diffusion.ddpm")
    return family(family.Config.from_dict(dict(TINY, num_classes=classes, **extra))).eval()


class ClusterDenoiser(torch.nn.Module):
    """The exact epsilon of data drawn from equal-weight Gaussian clusters N(mean_j, s^2 I)
    (flattened means), under the noise process with alpha-bar ``alphas_cumprod``."""

    def __init__(self, means: torch.Tensor, alphas_cumprod: torch.Tensor, shape) -> None:
        super().__init__()
        self.means, self.ac, self.shape = means.double(), alphas_cumprod.double(), shape

    def forward(self, x, t, class_labels=None):
        a = self.ac[t.long().cpu()].reshape(-1, 1)
        xf, m = x.double().flatten(1), self.means
        var = a * SPREAD**2 + 1 - a  # variance of x_t around sqrt(a) * mean
        diff = xf[:, None, :] - a.sqrt()[:, :, None] * m[None]
        w = torch.softmax(-diff.square().sum(-1) / (2 * var), dim=1)
        post = m[None] + (a.sqrt() * SPREAD**2 / var)[:, :, None] * diff  # E[x0 | x_t, j]
        x0 = (w[:, :, None] * post).sum(1)
        eps = (xf - a.sqrt() * x0) / (1 - a).sqrt()
        return SimpleNamespace(sample=eps.reshape(x.shape).to(x.dtype))


def cluster_model(seed: int = 0):
    """A tiny DDPM whose EMA network is replaced by the exact denoiser of 4 clusters, and
    images drawn from those clusters (the "training images", in [-1, 1])."""
    model = tiny_ddpm()
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(4, 3 * 16 * 16, generator=g) * 1.6 - 0.8
    model.ema_unet = ClusterDenoiser(means, model.scheduler.alphas_cumprod, (3, 16, 16))
    images = (means[:2] + SPREAD * torch.randn(2, 768, generator=g)).clamp(-1, 1)
    return model, images.reshape(2, 3, 16, 16).float()


def drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def path_for(model, steps):
    sched = make_sampler("ddim", model.scheduler.config)
    sched.set_timesteps(steps)
    return ddim_path(model.scheduler.alphas_cumprod, sched.timesteps)


def as_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# -- the DDIM maths --------------------------------------------------------------------------------


def test_ddim_decode_matches_diffusers_ddim_without_clipping():
    model = tiny_ddpm()
    unet = model.ema_unet

    def fn(x, t):
        return unet(x, t.reshape(-1).expand(len(x))).sample

    x_t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ours = drain(ddim_decode_iter(fn, x_t, path_for(model, 10)))
        sched = make_sampler("ddim", model.scheduler.config)
        sched.register_to_config(clip_sample=False)
        sched.set_timesteps(10)
        x = x_t.clone()
        for t in sched.timesteps:
            x = sched.step(fn(x, t), t, x).prev_sample
    assert torch.allclose(ours, x, atol=1e-4), float((ours - x).abs().max())


def test_inversion_then_decode_reproduces_the_image():
    model, x0 = cluster_model()
    fn = lambda x, t: model.ema_unet(x, t).sample  # noqa: E731
    path = path_for(model, 20)
    variance = float(x0.var())
    errors = {}
    for refine in (0, 3):
        z = drain(ddim_invert_iter(fn, x0, path, refine=refine))
        back = drain(ddim_decode_iter(fn, z, path))
        errors[refine] = float((back - x0).square().mean())
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    random_error = float((drain(ddim_decode_iter(fn, noise, path)) - x0).square().mean())
    assert errors[3] < 1e-3 * variance  # refined: the exact inverse of the 20-step decoder
    assert errors[3] < errors[0] / 10  # ... far closer than plain DDIM inversion
    assert errors[0] < 0.1 * variance  # which is close too
    assert random_error > 0.5 * variance  # an arbitrary x_T gives another image altogether
    # Refining never runs away: a fixed point that does not contract stops at its best guess.
    wild = lambda x, t: 40 * torch.sin(3 * x)  # noqa: E731
    z = drain(ddim_invert_iter(wild, x0, path_for(model, 4), refine=5))
    assert torch.isfinite(z).all()


def test_ddim_path_refuses_timesteps_out_of_order():
    model = tiny_ddpm()
    with pytest.raises(ValueError, match="descending"):
        ddim_path(model.scheduler.alphas_cumprod, torch.tensor([10, 20]))


# -- the latent space -------------------------------------------------------------------------------


def test_a_ddpm_is_a_latent_space_of_its_start_noise():
    space = open_space(tiny_ddpm())
    assert isinstance(space, DiffusionLatentSpace) and space.ode and not space.discrete
    assert space.dim == 3 * 16 * 16 and space.can_encode and "DDIM inversion" in space.encoder
    space.steps = 3
    z = space.prior_sample(3, seed=1)
    assert np.array_equal(z, space.prior_sample(3, seed=1))
    images = space.decode(z)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    assert np.array_equal(space.decode(z[1]), images[1])  # batch of one == row of a batch
    assert not np.array_equal(images[0], images[1])
    with pytest.raises(StudioError, match="DDIM steps"):
        space.steps = 0


def test_encode_then_decode_reproduces_a_training_image():
    model, x0 = cluster_model()
    space = open_space(model)
    space.steps, space.refine = 20, 3
    picture = as_uint8(x0)[0]
    z = space.encode(picture)
    back = space.decode(z)
    error = float(np.mean((back / 255.0 - picture / 255.0) ** 2))
    noise = space.prior_sample(1, seed=9)[0]
    random_error = float(np.mean((space.decode(noise) / 255.0 - picture / 255.0) ** 2))
    assert error < 1e-4 < random_error / 50, (error, random_error)
    assert 0.5 < float(z.std()) < 2.0  # noise-like, not the image itself


def test_inversion_job_reports_progress_reconstructs_and_cancels():
    model, x0 = cluster_model()
    space = open_space(model)
    space.steps, space.refine = 20, 3
    picture = as_uint8(x0)[1]
    reports: list[Progress] = []
    out = run_sync(invert_job(space, picture), CancelToken(), reports.append)
    assert out.ok, out.error
    inv = out.result
    assert inv.z.shape == (space.dim,) and inv.reconstruction.shape == (16, 16, 3)
    assert inv.error < 1e-3 and inv.psnr > 30 and "DDIM inversion" in inv.method
    assert reports[-1].image is not None and reports[-1].metrics["mse"] == inv.error
    assert len(reports) > 20 and reports[1].total == 20 * 4 + 20
    assert np.array_equal(space.decode(inv.z), inv.reconstruction)

    token = CancelToken()
    seen = []

    def cancel_early(p: Progress) -> None:
        seen.append(p)
        if len(seen) == 3:
            token.cancel()

    out = run_sync(invert_job(space, picture), token, cancel_early)
    assert out.status is Status.CANCELLED and out.result is None and len(seen) == 3


def test_a_conditional_ddpm_takes_a_class_and_inverts_with_it():
    space = open_space(tiny_ddpm(classes=2), label=1)
    space.steps, space.refine = 3, 1
    assert space.num_classes == 2 and space.label == 1 and space.guidance == 3.0
    z = space.prior_sample(1, 0)[0]
    a = space.decode(z)
    space.label = 0
    assert not np.array_equal(a, space.decode(z))
    assert space.encode(tiny_pattern(0, 16, np.random.default_rng(0))).shape == (space.dim,)


def test_slerp_between_noises_keeps_its_ends_and_the_typical_norm():
    space = open_space(tiny_ddpm())
    a, b = space.prior_sample(2, seed=4)
    frames = interpolate(a, b, 7, "spherical")
    assert np.array_equal(frames[0], a) and np.array_equal(frames[-1], b)
    norms = np.linalg.norm(frames, axis=1)
    assert norms.min() > 0.95 * min(np.linalg.norm(a), np.linalg.norm(b))
    middle = np.linalg.norm(interpolate(a, b, 3, "linear")[1])
    assert middle < 0.8 * norms[3]  # the straight line's middle is a too-short noise
    space.steps = 2
    assert space.decode(frames).shape == (7, 16, 16, 3)
    assert space.decode(arithmetic(a, b, a)).shape == (16, 16, 3)


# -- runs and directions -----------------------------------------------------------------------------


def save_ddpm_run(tmp_path, data=None, model=None):
    run = tmp_path / "ddpm"
    (model or tiny_ddpm()).save(run / "model")
    train = TrainConfig(family="diffusion.ddpm", data=str(data or ""), resolution=16)
    RunFolder(run).write_config({"family": "diffusion.ddpm", "train": train.to_dict()})
    return run


def test_directions_come_from_the_inverted_training_images(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=24, size=16, classes=2)
    space = open_latent_space(save_ddpm_run(tmp_path, data))
    assert describe_run(space.run_dir).explorable
    space.steps = 3
    reports = []
    dirs = run_sync(diffusion_directions_job(space, 20, k=4), CancelToken(), reports.append).result
    assert dirs.vectors.shape == (4, space.dim)
    assert np.allclose(dirs.vectors @ dirs.vectors.T, np.eye(4), atol=1e-4)
    assert "inverted noise of 20 of the run's training images" in dirs.method
    assert "alike in every direction" in dirs.method and (dirs.std > 0).all()
    assert reports[-1].total == 3  # one batch of 20, three DDIM passes
    z = space.prior_sample(1, 0)[0]
    assert not np.array_equal(space.decode(z), space.decode(z + dirs.offset([3, 0, 0, 0])))


def test_directions_fall_back_to_samples_when_the_data_is_gone(tmp_path):
    from studio.engine.latent_directions import pca_directions

    space = open_latent_space(save_ddpm_run(tmp_path, tmp_path / "moved-away"))
    space.steps = 2
    dirs = pca_directions(space, 24, k=3)  # the generic entry point delegates
    assert np.allclose(dirs.vectors @ dirs.vectors.T, np.eye(3), atol=1e-4)
    assert "decoded samples" in dirs.method and "gone" in dirs.method


def test_other_diffusion_families_are_refused_with_a_reason(tmp_path):
    from studio.engine.latent import unsupported_reason

    assert unsupported_reason("diffusion.ddpm") is None
    reason = unsupported_reason("diffusion.text")
    assert reason and "cannot be explored" in reason and "Sample" in reason


def test_an_encoded_file_round_trips_through_the_space(tmp_path):
    model, x0 = cluster_model()
    space = open_space(model)
    space.steps, space.refine = 12, 3
    path = tmp_path / "cluster.png"
    Image.fromarray(as_uint8(x0)[0]).save(path)
    picture = np.asarray(Image.open(path).convert("RGB"))
    inv = run_sync(invert_job(space, picture)).result
    assert inv.error < 1e-3 and np.array_equal(inv.target, picture)
