"""The CPU fast dropout (speed option ``fast_dropout``): same distribution as nn.Dropout,
exact gradients, seeded by torch's global generator, and swapped into the families' networks."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_dataset, tiny_model, tiny_train_config
from torch import nn

from studio.engine.speed import apply_speed
from studio.models.dropout import LEVELS, FastDropout, keep_levels, use_fast_dropout, wide_mask


def test_keep_probability_is_one_minus_p_to_16_bits():
    for p in (0.05, 0.1, 0.25, 0.5, 0.9):
        assert abs(keep_levels(p) / LEVELS - (1 - p)) <= 1 / LEVELS


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_every_lane_of_a_draw_keeps_one_minus_p(p):
    """Each 64-bit draw feeds four elements: each of the four lanes must be uniform (a draw
    whose top bit is always 0, as ``random_()`` gives, would keep every fourth element)."""
    torch.manual_seed(0)
    mask = wide_mask(torch.Size([4 * 50_000]), p).view(-1, 4).float()
    for lane in range(4):
        assert mask[:, lane].mean().item() == pytest.approx(1 - p, abs=0.006)


def test_output_is_zero_or_scaled_and_unbiased():
    torch.manual_seed(1)
    x = torch.rand(64, 8, 17, 13) + 0.5  # no zeros in the input; numel not a multiple of 4
    y = FastDropout(0.1).train()(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    kept = y != 0
    scale = LEVELS / keep_levels(0.1)
    torch.testing.assert_close(y[kept], x[kept] * scale)
    assert kept.float().mean().item() == pytest.approx(0.9, abs=0.005)
    assert (y.mean() / x.mean()).item() == pytest.approx(1.0, abs=0.01)


def test_gradient_uses_the_forward_mask():
    torch.manual_seed(2)
    x = (torch.rand(4, 6, 9, 9) + 0.5).requires_grad_()
    y = FastDropout(0.3).train()(x)
    y.backward(torch.full_like(y, 2.0))
    scale = LEVELS / keep_levels(0.3)
    torch.testing.assert_close(x.grad, (y != 0).float() * 2.0 * scale)


def test_seeded_by_the_global_generator():
    drop = FastDropout(0.2).train()
    x = torch.ones(1000)
    torch.manual_seed(5)
    a = drop(x)
    torch.manual_seed(5)
    b = drop(x)
    torch.manual_seed(6)
    c = drop(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_plain_dropout_where_the_fast_one_does_not_apply():
    x = torch.rand(10, 10) + 0.5
    assert torch.equal(FastDropout(0.3).eval()(x), x)  # eval: identity
    assert torch.equal(FastDropout(0.0).train()(x), x)  # p = 0
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))  # p = 1
    torch.manual_seed(3)
    inplace = FastDropout(0.5, inplace=True).train()(x.clone())
    torch.manual_seed(3)
    assert torch.equal(inplace, nn.Dropout(0.5).train()(x.clone()))  # torch's own path


def test_bf16_autocast_keeps_the_dtype():
    x = torch.rand(8, 16, dtype=torch.bfloat16) + 0.5
    y = FastDropout(0.1).train()(x)
    assert y.dtype == torch.bfloat16 and ((y == 0) | (y > 0)).all()


def dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]


def test_use_fast_dropout_swaps_every_dropout_and_keeps_the_weights():
    model = tiny_model("diffusion.ddpm")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = len(dropouts(model))
    assert n > 0
    assert use_fast_dropout(model) == n
    assert all(type(m) is FastDropout for m in dropouts(model))
    assert use_fast_dropout(model) == 0  # already swapped
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=8, size=16)


@pytest.mark.parametrize("option, swapped", [("auto", True), ("on", True), ("off", False)])
def test_apply_speed_option_on_the_cpu(data_dir, option, swapped):
    model = tiny_model("diffusion.ddpm")
    cfg = tiny_train_config("diffusion.ddpm", data_dir, fast_dropout=option, fused_adamw="off")
    speed = apply_speed(model, cfg, torch.device("cpu"))
    assert any(type(m) is FastDropout for m in dropouts(model)) is swapped
    assert ("fast dropout" in " ".join(speed.messages)) is swapped


def test_a_ddpm_trains_alike_with_either_dropout(data_dir):
    """Other masks, same distribution: the losses of a few steps stay close to torch's
    dropout, and differ from it (the option is really in use)."""
    from test_train_speed import EAGER, train_steps

    runs = {}
    for option in ("off", "on"):
        model = tiny_model("diffusion.ddpm")
        cfg = tiny_train_config("diffusion.ddpm", data_dir, **{**EAGER, "fast_dropout": option})
        speed = apply_speed(model, cfg, torch.device("cpu"))
        runs[option] = [r["loss"] for r in train_steps(model, cfg, steps=4, speed=speed)]
    assert runs["on"] != runs["off"]
    for a, b in zip(runs["on"], runs["off"]):
        assert a == pytest.approx(b, rel=0.03)
