"""The diffusion transformer backbone (``backbone=dit``) of the diffusion families: the same
family with another network, so training, sampling, saving, loading, inversion, inpainting and
scores work as with the UNet; the saved weights load in plain diffusers; adaLN-zero makes a
fresh block the identity; settings that cannot build a network are refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import TINY_DIT, TINY_MODELS, make_tiny_dataset, tiny_train_config
from safetensors.torch import load_file, save_file

from studio.core.jobs import CancelToken, Status, run_sync
from studio.engine.device import cpu_generator
from studio.engine.inpaint import InpaintRequest, inpaint_job
from studio.engine.sample import load_run_model, sample_job
from studio.engine.train import train_job
from studio.models.diffusion.dit import dit_shape, zero_init
from studio.models.registry import FAMILIES, get_family, load_model
from studio.models.scoring import anomaly_scores

DIFFUSION = [key for key in FAMILIES if key.startswith("diffusion.")]


def dit_model(key: str, **changes):
    family = get_family(key)
    torch.manual_seed(0)
    settings = {**TINY_MODELS[key], **TINY_DIT, "resolution": 16, **changes}
    return family(family.Config.from_dict(settings)).eval()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("dit_data"), n=16, size=16, classes=2)


@pytest.mark.parametrize("key", DIFFUSION)
def test_dit_trains_samples_saves_and_loads(key, data_dir, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_train_config(key, data_dir, model={**TINY_MODELS[key], **TINY_DIT})
    out = run_sync(train_job(run, CancelToken(), cfg))
    assert out.status is Status.FINISHED, out.error or out.details
    assert all(np.isfinite(v) for v in out.result.metrics.values())
    model = load_run_model(run, "cpu")
    assert type(model.unet).__name__.endswith("DiT")
    assert (run / "model" / "transformer" / "config.json").exists()
    kwargs = {"steps": 3}
    a = run_sync(sample_job(run, 2, seed=7, model=model, **kwargs))
    assert a.ok, a.error or a.details
    assert a.result.shape == (2, 16, 16, 3)
    reloaded = load_model(run / "model", "cpu")
    b = run_sync(sample_job(run, 2, seed=7, model=reloaded, **kwargs))
    assert np.array_equal(a.result, b.result)
    # The trained weights come back too (not only the EMA copy the samples use).
    for (name, p), q in zip(model.unet.state_dict().items(), reloaded.unet.state_dict().values()):
        assert torch.equal(p, q), name
    # Scores (the denoising score runs the network) are finite and deterministic.
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    first = anomaly_scores(reloaded, x, None, cpu_generator(3))
    again = anomaly_scores(reloaded, x, None, cpu_generator(3))
    for name, values in first.scores.items():
        assert torch.isfinite(values).all() and torch.equal(values, again.scores[name]), name


@pytest.mark.parametrize("num_classes", [0, 2])
def test_dit_ddpm_inverts_and_inpaints(num_classes):
    model = dit_model("diffusion.ddpm", num_classes=num_classes)
    with torch.no_grad():  # a network that predicts something (a fresh DiT predicts zeros)
        for p in model.ema_unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    labels = torch.tensor([0, 1]) if num_classes else None
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = model.encode_latents(x, labels)
        back = model.decode_latents(z, labels)
    assert z.shape == (2, 3 * 16 * 16) and back.shape == x.shape and torch.isfinite(back).all()
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), np.float32)
    mask[4:12, 4:12] = 1
    out = run_sync(inpaint_job(model, InpaintRequest(img, mask, steps=3, feather=0.0)))
    assert out.status is Status.FINISHED, out.error or out.details
    kept = out.result[0][mask == 0].astype(int)
    assert np.abs(kept - img[mask == 0].astype(int)).max() == 0  # outside the mask: unchanged


def _perturbed(model) -> None:
    """Random weights everywhere, so the diffusers comparison compares something."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in (
            model.ema_unet.parameters() if hasattr(model, "ema_unet") else model.ema.parameters()
        ):
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


DIFFUSERS_ONLY = textwrap.dedent(
    """
    import sys
    import diffusers, torch
    from safetensors.torch import load_file, save_file
    for case in sys.argv[1:]:  # folders holding model/, in.safetensors and class.txt
        cls = open(f"{case}/class.txt").read()
        net = getattr(diffusers, cls).from_pretrained(f"{case}/model", subfolder="transformer")
        x = load_file(f"{case}/in.safetensors")
        kw = {k: x[k] for k in x if k not in ("x", "t")}
        if cls == "PixArtTransformer2DModel":
            kw["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
        with torch.no_grad():
            y = net.eval()(x["x"], timestep=x["t"], **kw).sample
        save_file({"y": y.contiguous()}, f"{case}/out.safetensors")
    assert not any(m.startswith("studio") for m in sys.modules), "studio was imported"
    """
)

CASES = {
    "uncond": ("diffusion.ddpm", 0),
    "classes": ("diffusion.ddpm", 2),
    "text": ("diffusion.text", 0),
}


def _prediction_case(key: str, num_classes: int, case) -> torch.Tensor:
    """Save a perturbed DiT to ``case/model`` with inputs for diffusers; our prediction."""
    model = dit_model(key, num_classes=num_classes)
    _perturbed(model)
    model.save(case / "model")
    config = json.loads((case / "model" / "transformer" / "config.json").read_text("utf-8"))
    (case / "class.txt").write_text(config["_class_name"], encoding="utf-8")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([10, 700])
    with torch.no_grad():
        if key == "diffusion.text":
            hidden, mask = model.encode_prompts(["a caption", ""])
            ours = model.ema["unet"](x, t, **model.unet_inputs(hidden, mask)).sample
            inputs = {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        else:
            labels = torch.tensor([1, num_classes]) if num_classes else None
            ours = model.ema_unet(x, t, class_labels=labels).sample
            # The unconditional DiT's one class is label 0, its null class.
            inputs = {"class_labels": labels if num_classes else torch.zeros(2, dtype=torch.long)}
    inputs.update(x=x, t=t)
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(case / "in.safetensors"))
    return ours


def test_saved_dits_load_in_plain_diffusers_with_the_same_prediction(tmp_path):
    ours = {}
    for name, (key, num_classes) in CASES.items():
        (tmp_path / name).mkdir()
        ours[name] = _prediction_case(key, num_classes, tmp_path / name)
    script = tmp_path / "check.py"
    script.write_text(DIFFUSERS_ONLY, encoding="utf-8")
    proc = subprocess.run(  # one interpreter for all three: importing diffusers is slow
        [sys.executable, str(script), *(str(tmp_path / name) for name in CASES)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, pred in ours.items():
        theirs = load_file(str(tmp_path / name / "out.safetensors"))["y"]
        assert pred.abs().max() > 1e-3, name  # a real prediction, not the fresh zero output
        assert torch.allclose(pred, theirs, atol=1e-5), (name, (pred - theirs).abs().max())


def _block_io(net, block):
    """A block's input and output for random tokens and conditioning."""
    n, tokens, width = 2, 16, net.inner_dim
    h = torch.randn(n, tokens, width)
    t = torch.tensor([3, 900])
    if block.norm_type == "ada_norm_zero":
        labels = torch.tensor([0, 0])
        return h, block(h, timestep=t, class_labels=labels)
    cond, _ = net.adaln_single(t, None, batch_size=n, hidden_dtype=h.dtype)
    enc = torch.randn(n, 5, width)
    return h, block(h, encoder_hidden_states=enc, timestep=cond)


@pytest.mark.parametrize("key", DIFFUSION)
def test_a_fresh_dit_block_is_the_identity(key):
    model = dit_model(key, num_classes=0)
    net = model.unet.net
    with torch.no_grad():
        for block in net.transformer_blocks:
            h, out = _block_io(net, block)
            assert torch.equal(out, h)
        # diffusers' own initialisation is not adaLN-zero: without zero_init it is not.
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        h, out = _block_io(net, net.transformer_blocks[0])
        assert not torch.allclose(out, h)
        zero_init(net)
        h, out = _block_io(net, net.transformer_blocks[0])
        assert torch.equal(out, h)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"resolution": 18, "patch_size": 4}, "patch size 4 does not divide the resolution 18"),
        ({"patch_size": 3}, "patch_size must be one of"),
        ({"backbone": "vit"}, "backbone must be one of"),
        ({"dit_size": "XL"}, "dit_size must be one of"),
        ({"dit_width": 191}, "does not split"),
    ],
)
@pytest.mark.parametrize("key", DIFFUSION)
def test_dit_settings_that_cannot_build_are_refused_clearly(key, changes, message):
    family = get_family(key)
    with pytest.raises(ValueError, match=message):
        family.Config.from_dict({**TINY_MODELS[key], **TINY_DIT, "resolution": 16, **changes})


def test_the_unet_ignores_the_patch_size():
    family = get_family("diffusion.ddpm")
    cfg = family.Config.from_dict(
        {**TINY_MODELS["diffusion.ddpm"], "resolution": 12, "patch_size": 4}
    )
    assert cfg.backbone == "unet"
    cfg = family.Config.from_dict({**TINY_MODELS["diffusion.ddpm"], "resolution": 16})
    assert type(family(cfg).unet).__name__ == "UNet2DModel"


def test_dit_sizes_are_the_papers():
    config = get_family("diffusion.ddpm").Config
    for size, shape in {"S": (12, 6, 64), "B": (12, 12, 64)}.items():
        assert dit_shape(config.from_dict({"backbone": "dit", "dit_size": size})) == shape
    custom = config.from_dict({"backbone": "dit", "dit_layers": 2, "dit_width": 32})
    assert dit_shape(custom) == (2, 1, 32)


def test_training_never_drops_labels_on_its_own():
    """diffusers' label embedding drops 10% of labels in training from torch's global RNG;
    the family drops them itself (from the step's generator, so resumes replay): a training
    forward with dropout 0 is a pure function of its inputs."""
    model = dit_model("diffusion.ddpm", num_classes=3, dropout=0.0)
    _perturbed(model)
    net = model.ema_unet.train()
    x, t = torch.randn(64, 3, 16, 16), torch.full((64,), 500)
    labels = torch.arange(64) % 3
    with torch.no_grad():
        first = net(x, t, class_labels=labels).sample
        for seed in range(3):
            torch.manual_seed(seed)
            assert torch.equal(net(x, t, class_labels=labels).sample, first)
        null = net(x, t, class_labels=torch.full((64,), 3)).sample
    assert not torch.allclose(null, first)  # the labels matter
