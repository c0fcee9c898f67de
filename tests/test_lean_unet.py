"""The lean UNet block forwards (speed option ``lean_unet``): the same function as diffusers'
blocks, forward and backward, with the same parameters, and really in use when swapped in."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from helpers import TINY_MODELS, make_tiny_dataset, tiny_model, tiny_train_config
from test_train_speed import EAGER, assert_losses_close, train_steps

from studio.engine.speed import apply_speed
from studio.models import lean_unet
from studio.models.lean_unet import (
    LeanAttnProcessor,
    LeanResnetBlock2D,
    LeanUpsample2D,
    pointwise_conv,
    subpixel_upsample_conv,
    use_lean_unet,
)


@pytest.fixture(autouse=True)
def every_size(monkeypatch):
    """Tests use tiny images: take the sub-pixel path at every size."""
    monkeypatch.setattr(lean_unet, "SUBPIXEL_MIN_PIXELS", 0)


@pytest.fixture(autouse=True)
def no_grad_mode_leak():
    yield
    assert torch.is_grad_enabled()


def small_unet(**kw) -> UNet2DModel:
    torch.manual_seed(0)
    args = dict(
        sample_size=16,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        dropout=0.0,
    )
    return UNet2DModel(**{**args, **kw})


def grads(model, *inputs) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(*inputs).sample
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()
    ]


def assert_same_function(plain, lean, *inputs, atol=1e-5):
    plain.eval(), lean.eval()
    with torch.no_grad():
        a, b = plain(*inputs).sample, lean(*inputs).sample
    torch.testing.assert_close(b, a, atol=atol, rtol=1e-4)
    plain.train(), lean.train()
    ga, gb = grads(plain, *inputs), grads(lean, *inputs)
    scale = max(g.abs().max().item() for g in ga)  # some biases' gradients are zero + rounding
    for p, q in zip(ga, gb):
        torch.testing.assert_close(q, p, atol=1e-5 * scale + 1e-7, rtol=1e-4)


def test_subpixel_form_equals_upsample_then_conv():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 6, 9, requires_grad=True)  # odd, non-square
    for bias in (True, False):
        conv = torch.nn.Conv2d(5, 7, 3, padding=1, bias=bias)
        want = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        got = subpixel_upsample_conv(x, conv)
        assert got.shape == (3, 7, 12, 18) and got.is_contiguous()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(want)
        gw = torch.autograd.grad(want, (x, conv.weight), g)
        gg = torch.autograd.grad(got, (x, conv.weight), g)
        for a, b in zip(gg, gw):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_pointwise_product_equals_a_1x1_conv():
    torch.manual_seed(2)
    x = torch.randn(2, 6, 5, 7)
    for bias in (True, False):
        conv = torch.nn.Conv2d(6, 4, 1, bias=bias)
        torch.testing.assert_close(pointwise_conv(x, conv), conv(x), atol=1e-6, rtol=1e-5)


def test_a_lean_unet2d_is_the_same_function_and_uses_the_lean_paths(monkeypatch):
    plain = small_unet(dropout=0.0)
    lean = copy.deepcopy(plain)
    # resnets: 1 + 1 down, 2 mid, 2 + 2 up; one upsampler; attention: 1 down, 1 mid, 2 up
    assert use_lean_unet(lean) == 8 + 1 + 4
    kinds = [type(m) for m in lean.modules()]
    assert ResnetBlock2D not in kinds and Upsample2D not in kinds
    assert kinds.count(LeanResnetBlock2D) == 8 and kinds.count(LeanUpsample2D) == 1
    attns = [m for m in lean.modules() if isinstance(m, Attention)]
    assert attns and all(type(a.processor) is LeanAttnProcessor for a in attns)
    calls = []
    real = lean_unet.subpixel_upsample_conv
    monkeypatch.setattr(lean_unet, "subpixel_upsample_conv", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(3)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    assert_same_function(plain, lean, x, t)
    assert calls  # the sub-pixel path really ran
    assert list(lean.state_dict()) == list(plain.state_dict())
    assert use_lean_unet(lean) == 0  # already lean


def test_a_lean_unet_saves_and_loads_like_a_plain_one(tmp_path):
    lean = small_unet()
    use_lean_unet(lean)
    lean.save_pretrained(tmp_path / "unet")
    back = UNet2DModel.from_pretrained(tmp_path / "unet")
    assert type(back.up_blocks[0].upsamplers[0]) is Upsample2D
    for (n, a), (m, b) in zip(lean.state_dict().items(), back.state_dict().items()):
        assert n == m and torch.equal(a, b)


def test_fallbacks_give_diffusers_results():
    """An explicit output size, a non-default time-embedding norm and cross-attention take
    diffusers' own forwards."""
    plain = small_unet(resnet_time_scale_shift="scale_shift")
    lean = copy.deepcopy(plain)
    use_lean_unet(lean)
    assert_same_function(plain, lean, torch.randn(2, 3, 16, 16), torch.tensor([1, 9]))
    up = next(m for m in lean.modules() if type(m) is LeanUpsample2D)
    x = torch.randn(1, up.channels, 4, 4)
    torch.testing.assert_close(
        up(x, output_size=(7, 9)), Upsample2D.forward(up, x, output_size=(7, 9))
    )


def test_a_text_conditioned_unet_keeps_cross_attention_and_is_the_same_function():
    torch.manual_seed(0)
    plain = UNet2DConditionModel(
        sample_size=16,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=12,
        attention_head_dim=4,
    )
    lean = copy.deepcopy(plain)
    assert use_lean_unet(lean) > 0
    assert all(
        type(m.processor) is AttnProcessor2_0 for m in lean.modules() if isinstance(m, Attention)
    )
    torch.manual_seed(4)
    inputs = (torch.randn(2, 4, 16, 16), torch.tensor([5, 500]), torch.randn(2, 6, 12))
    assert_same_function(plain, lean, *inputs)


def test_bf16_autocast_stays_close():
    plain = small_unet()
    lean = copy.deepcopy(plain)
    use_lean_unet(lean)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([2, 20])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = plain(x, t).sample.float(), lean(x, t).sample.float()
    assert (a - b).abs().max() < 0.05 * a.abs().max()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=8, size=16)


@pytest.mark.parametrize("option, lean", [("auto", True), ("on", True), ("off", False)])
def test_apply_speed_option_on_the_cpu(data_dir, option, lean):
    model = tiny_model("diffusion.ddpm")
    cfg = tiny_train_config("diffusion.ddpm", data_dir, **{**EAGER, "lean_unet": option})
    speed = apply_speed(model, cfg, torch.device("cpu"))
    assert any(type(m) is LeanResnetBlock2D for m in model.modules()) is lean
    assert ("lean UNet" in " ".join(speed.messages)) is lean


def test_a_model_without_a_unet_is_left_alone(data_dir):
    model = tiny_model("gan.dcgan")
    cfg = tiny_train_config("gan.dcgan", data_dir, **{**EAGER, "lean_unet": "on"})
    assert "lean UNet" not in " ".join(apply_speed(model, cfg, torch.device("cpu")).messages)


def model_without_dropout(key: str):
    from studio.models.registry import get_family

    family = get_family(key)
    torch.manual_seed(0)
    cfg = {**TINY_MODELS[key], "resolution": 16, "dropout": 0.0}
    model = family(family.Config.from_dict(cfg))
    model.configure_optimizers()
    model.remember_base_lrs()
    return model


@pytest.mark.parametrize("key", ["diffusion.ddpm", "diffusion.text"])
def test_diffusion_families_train_like_the_plain_loop(key, data_dir):
    """Without dropout, the same losses up to rounding."""
    cfg = tiny_train_config(key, data_dir, **EAGER)
    plain = train_steps(model_without_dropout(key), cfg, steps=3)
    model = model_without_dropout(key)
    speed = apply_speed(model, tiny_train_config(key, data_dir, **{**EAGER, "lean_unet": "on"}),
                        torch.device("cpu"))  # fmt: skip
    assert any(type(m) is LeanResnetBlock2D for m in model.modules())
    assert_losses_close(train_steps(model, cfg, steps=3, speed=speed), plain, rtol=1e-4)


def test_with_dropout_a_ddpm_trains_alike(data_dir):
    """diffusers' attention hands the blocks after it channels-last tensors, whose dropout
    masks are laid out in memory order; the lean blocks keep NCHW, so the masks fall on other
    elements (same distribution): close losses, not equal ones."""
    cfg = tiny_train_config("diffusion.ddpm", data_dir, **EAGER)
    plain = [r["loss"] for r in train_steps(tiny_model("diffusion.ddpm"), cfg, steps=4)]
    model = tiny_model("diffusion.ddpm")
    on = tiny_train_config("diffusion.ddpm", data_dir, **{**EAGER, "lean_unet": "on"})
    speed = apply_speed(model, on, torch.device("cpu"))
    lean = [r["loss"] for r in train_steps(model, cfg, steps=4, speed=speed)]
    for a, b in zip(lean, plain):
        assert a == pytest.approx(b, rel=0.03)


def test_the_option_is_set_from_the_command_line():
    from studio.core.errors import StudioError
    from studio.engine.speed import parse_options

    assert parse_options(["lean-unet=off"]) == {"lean_unet": "off"}
    with pytest.raises(StudioError, match="lean_unet"):
        parse_options(["lean_unet=maybe"])
