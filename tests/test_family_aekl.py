"""ae.kl: the KL autoencoder (latent diffusion's first stage) on diffusers' AutoencoderKL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import make_tiny_dataset, tiny_train_config
from safetensors.torch import load_file, save_file

from studio.core.jobs import CancelToken, run_sync
from studio.engine.runs import RunFolder
from studio.engine.train import train_job
from studio.models.base import Batch, StepContext
from studio.models.capabilities import AutoencoderFamily, AutoencoderSpec
from studio.models.registry import get_family

KEY = "ae.kl"


def tiny(downsample: int = 4, resolution: int = 16, **settings) -> torch.nn.Module:
    family = get_family(KEY)
    torch.manual_seed(0)
    settings = {"width": 8, "downsample": downsample, "resolution": resolution, **settings}
    return family(family.Config.from_dict(settings))


def images(n: int = 2, side: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("downsample", [4, 8])
def test_the_latent_grid_has_the_promised_shape(downsample):
    model = tiny(downsample, resolution=32)
    assert isinstance(model, AutoencoderFamily)
    assert model.autoencoder_spec() == AutoencoderSpec(4, downsample)
    x = images(2, 32)
    z = model.encode_to_grid(x)
    side = 32 // downsample
    assert z.shape == (2, 4, side, side)
    back = model.decode_from_grid(z)
    assert back.shape == x.shape and back.min() >= -1 and back.max() <= 1
    assert model.latent_spec().shape == (4, side, side)


def test_the_resolution_must_be_a_multiple_of_the_downsampling():
    with pytest.raises(ValueError, match="multiple"):
        get_family(KEY).Config.from_dict({"resolution": 36, "downsample": 8})


def test_encoding_is_the_mean_without_a_generator_and_a_sample_with_one():
    model = tiny()
    with torch.no_grad():  # a wider posterior, so a sample is visibly not the mean
        model.vae.quant_conv.bias[4:].fill_(0.0)
    x = images()
    mean = model.encode_to_grid(x)
    assert torch.equal(mean, model.encode_to_grid(x))
    a = model.encode_to_grid(x, torch.Generator().manual_seed(3))
    b = model.encode_to_grid(x, torch.Generator().manual_seed(3))
    c = model.encode_to_grid(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, mean)


DIFFUSERS_ONLY = """
import json, sys
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

assert not any(name.startswith("studio") for name in sys.modules)
folder = sys.argv[1]
vae = AutoencoderKL.from_pretrained(folder + "/model").eval()
x = load_file(folder + "/in.safetensors")["x"]
with torch.no_grad():
    z = vae.encode(x).latent_dist.mean
    y = vae.decode(z).sample.clamp(-1, 1)
assert not any(name.startswith("studio") for name in sys.modules)
save_file({"z": z.contiguous(), "y": y.contiguous()}, folder + "/out.safetensors")
print(json.dumps({"scaling_factor": vae.config.scaling_factor}))
"""


def test_the_saved_folder_loads_in_plain_diffusers_and_decodes_the_same(tmp_path):
    model = tiny()
    with torch.no_grad():
        for p in model.vae.parameters():  # not the fresh initialisation: every weight counts
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.02)
        model.latent_stats.copy_(torch.tensor([0.1, 2.0]))
    model.save(tmp_path / "model")
    assert {"config.json", "diffusion_pytorch_model.safetensors", "studio.json"} <= {
        p.name for p in (tmp_path / "model").iterdir()
    }
    x = images()
    save_file({"x": x.contiguous()}, str(tmp_path / "in.safetensors"))
    script = tmp_path / "check.py"
    script.write_text(DIFFUSERS_ONLY, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = load_file(str(tmp_path / "out.safetensors"))
    z = model.encode_to_grid(x)
    assert torch.allclose(z, theirs["z"], atol=1e-5)
    assert torch.allclose(model.decode_from_grid(z), theirs["y"], atol=1e-5)
    # diffusers' scaling factor is 1 / the running latent std.
    assert json.loads(proc.stdout.strip().splitlines()[-1])["scaling_factor"] == 0.5
    # And the studio loads it back whole.
    again = type(model).load(tmp_path / "model")
    assert torch.equal(again.latent_stats, model.latent_stats)
    assert torch.equal(again.encode_to_grid(x), z)


def test_it_learns_to_reconstruct_a_tiny_set():
    torch.manual_seed(0)
    model = tiny(kl_weight=1e-6, lr=2e-3)
    model.configure_optimizers()
    model.remember_base_lrs()
    x = torch.cat([images(4, 16, seed=s) for s in range(2)]).clamp(-1, 1)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # smooth, learnable pictures
    first = last = None
    for step in range(15):
        gen = torch.Generator().manual_seed(step)
        out = model.train_step(Batch(x), StepContext(step=step, generator=gen))
        if first is None:
            first = float(out["l1"])
        last = float(out["l1"])
        assert set(out) == set(model.info.loss_names)
    assert last < 0.7 * first, (first, last)
    assert float(out["recon_psnr"]) > 0 and float(out["latent_std"]) > 0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("aekl_data"), n=12, size=16, classes=2)


def test_a_resumed_run_with_its_discriminator_continues_exactly(data_dir, tmp_path):
    model = {"width": 8, "disc_weight": 0.1, "disc_start": 1}

    def run(folder, steps, resume=False):
        cfg = None if resume else tiny_train_config(KEY, data_dir, model, steps=steps)
        out = run_sync(
            train_job(folder, CancelToken(), cfg, **({"steps": steps} if resume else {}))
        )
        assert out.ok, out.error or out.details

    run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    run(tmp_path / "b", 4, resume=True)
    wa = load_file(str(RunFolder(tmp_path / "a").model_dir / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(RunFolder(tmp_path / "b").model_dir / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    da = load_file(str(RunFolder(tmp_path / "a").model_dir / "discriminator.safetensors"))
    db = load_file(str(RunFolder(tmp_path / "b").model_dir / "discriminator.safetensors"))
    assert all(torch.equal(da[k], db[k]) for k in da)


def test_the_perceptual_loss_goes_through_the_studios_feature_extractor(
    data_dir, tmp_path, monkeypatch
):
    import studio.engine.perceptual as perceptual

    monkeypatch.setattr(perceptual, "EXTRACTOR_STEPS", 10)  # a tiny extractor is enough here
    model = {"width": 8, "perceptual_weight": 1.0}
    seen = []
    cfg = tiny_train_config(KEY, data_dir, model, steps=2)
    out = run_sync(train_job(tmp_path / "run", CancelToken(), cfg), None, seen.append)
    assert out.ok, out.error or out.details
    assert any("Perceptual loss through" in p.message for p in seen)
    assert out.result.metrics["perceptual"] > 0
    # Without the setting, no extractor is trained and the term is 0.
    plain = run_sync(train_job(tmp_path / "plain", CancelToken(), tiny_train_config(KEY, data_dir)))
    assert plain.ok and plain.result.metrics["perceptual"] == 0


def test_the_feature_function_is_differentiable_and_zero_for_the_same_image():
    from studio.engine.feature_extractor import FeatureExtractor, _FeatureNet

    net = _FeatureNet(16, 2, 8, 16)
    meta = {"resolution": 16, "num_classes": 2, "width": 8, "embed_dim": 16}
    features = FeatureExtractor(net, meta).perceptual()
    x = images(2, 32).requires_grad_(True)  # resized to the extractor's 16 px
    f = features(x)
    assert f.shape[0] == 2 and torch.equal(features(x.detach()), f.detach())
    d = (f - features(images(2, 32, seed=9))).square().sum(1)
    assert (d > 0).all() and (d <= 16).all()
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())  # the extractor is left alone


def test_psnr_and_the_latent_statistics_get_plots_of_their_own():
    pytest.importorskip("PySide6")
    from studio.qt.plot_parts import LOSSES, group_of

    assert group_of("recon_psnr") not in (LOSSES, group_of("latent_std"))
    assert group_of("latent_mean") == group_of("latent_std") != LOSSES
    assert all(group_of(name) == LOSSES for name in ("l1", "mse", "kl", "gan_g", "perceptual"))


def test_the_optional_hooks_latent_diffusion_uses_are_plain_diffusers():
    """``diffusers_vae()`` is the AutoencoderKL itself, ``encode_posterior`` its posterior's
    mean and std, and ``decode_from_grid`` exactly plain diffusers' ``vae.decode(z).sample
    .clamp(-1, 1)`` (a loaded model is in eval mode; train mode differs in the last bits)."""
    model = tiny()
    vae = model.diffusers_vae()
    assert vae is model.vae
    x = images()
    mean, std = model.encode_posterior(x)
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 3.0
    ours = model.decode_from_grid(z)
    vae.eval()
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        plain = vae.decode(z).sample.clamp(-1, 1)
    assert torch.equal(mean, posterior.mean) and torch.equal(std, posterior.std)
    assert torch.equal(ours, plain)
