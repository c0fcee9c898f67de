"""The restricted Boltzmann machine (ebm.rbm): its free energy and gradient against brute force,
Gibbs sampling, binarising, the filters it shows through the trainer, and learning."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from helpers import make_tiny_dataset, train_tiny_run
from PIL import Image

from studio.models.base import Batch, StepContext
from studio.models.capabilities import InpaintSettings
from studio.models.ebm.rbm import RBM


def rbm(resolution=4, hidden=4, **over):
    torch.manual_seed(0)
    cfg = RBM.Config.from_dict({"resolution": resolution, "hidden": hidden, **over})
    model = RBM(cfg).double()
    with torch.no_grad():  # weights big enough that the hidden units matter
        model.weight.normal_(0, 0.8)
        model.visible_bias.normal_(0, 0.5)
        model.hidden_bias.normal_(0, 0.5)
    return model


def all_binary(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def energy(model, v, h):
    """E(v, h) = -b.v - c.h - v.W.h for every pair of rows (len(v) x len(h))."""
    return -(
        (v @ model.visible_bias)[:, None]
        + (h @ model.hidden_bias)[None, :]
        + (v @ model.weight) @ h.t()
    )


def test_free_energy_and_its_gradient_match_brute_force_on_a_4x4_model():
    """F(v) = -log sum_h exp(-E(v, h)) by enumerating the 16 hidden states, and dF/dtheta =
    E_{p(h|v)}[dE/dtheta], on a 4x4 image (16 visible units) with 4 hidden units."""
    model = rbm()
    g = torch.Generator().manual_seed(1)
    v = (torch.rand(6, 16, generator=g) < 0.5).double()
    hs = all_binary(4)
    e = energy(model, v, hs)
    assert torch.allclose(model.free_energy(v), -torch.logsumexp(-e, dim=1), atol=1e-10)

    p_h = torch.softmax(-e.detach(), dim=1)  # p(h | v) by enumeration
    expected_w = -torch.einsum("bk,bi,kj->ij", p_h, v, hs)
    expected_b = -v.sum(0)
    expected_c = -(p_h @ hs).sum(0)
    grads = torch.autograd.grad(
        model.free_energy(v).sum(), [model.weight, model.visible_bias, model.hidden_bias]
    )
    for got, want in zip(grads, (expected_w, expected_b, expected_c)):
        assert torch.allclose(got, want, atol=1e-10)

    # The pseudo-likelihood term: log p(v_i | the other pixels), pixel i picked by u.
    u = torch.tensor([[0.0], [0.3], [0.5], [0.7], [0.9], [0.99]], dtype=torch.float64)
    i = (u[:, 0] * 16).long()
    flipped = v.clone()
    flipped[torch.arange(6), i] = 1 - flipped[torch.arange(6), i]
    f_v = -torch.logsumexp(-energy(model, v, hs), dim=1)
    f_flip = -torch.logsumexp(-energy(model, flipped, hs), dim=1)
    brute = -f_v - torch.logaddexp(-f_v, -f_flip)  # p(v) / (p(v) + p(v with i flipped))
    with torch.no_grad():
        assert torch.allclose(model.pseudo_likelihood(v, u), brute, atol=1e-10)


def test_the_training_gradient_with_an_exact_negative_phase_is_the_log_likelihood_gradient():
    """mean F(data) - E_model F, the loss CD approximates with a chain, has the gradient of the
    exact negative log-likelihood, which enumeration of all 2^16 x 2^4 states gives."""
    model = rbm()
    params = [model.weight, model.visible_bias, model.hidden_bias]
    g = torch.Generator().manual_seed(2)
    data = (torch.rand(5, 16, generator=g) < 0.5).double()
    vs, hs = all_binary(16), all_binary(4)
    log_z = torch.logsumexp(-energy(model, vs, hs).flatten(), 0)
    nll = (-torch.logsumexp(-energy(model, data, hs), dim=1) + log_z).mean()
    exact = torch.autograd.grad(nll, params)

    with torch.no_grad():
        p_v = torch.softmax(-model.free_energy(vs), 0)  # the model's p(v), exactly
    loss = model.free_energy(data).mean() - (p_v * model.free_energy(vs)).sum()
    ours = torch.autograd.grad(loss, params)
    for a, b in zip(ours, exact):
        assert torch.allclose(a, b, atol=1e-8)


def test_gibbs_with_zero_weights_gives_independent_pixels_at_the_biases_rates():
    model = rbm(hidden=8)
    rates = torch.linspace(0.1, 0.9, 16, dtype=torch.float64)
    with torch.no_grad():
        model.weight.zero_()
        model.visible_bias.copy_(torch.logit(rates))
    g = torch.Generator().manual_seed(0)
    start = torch.zeros(20000, 16, dtype=torch.float64)
    v, _ = model.gibbs(start, 2, lambda r, c: torch.rand(r, c, generator=g, dtype=torch.float64))
    assert torch.allclose(v.mean(0), rates, atol=0.015)
    corr = np.corrcoef(v.numpy().T)
    off = corr[~np.eye(16, dtype=bool)]
    assert np.abs(off).max() < 0.04


def test_colour_images_are_grey_binarised_and_larger_ones_shrunk():
    model = RBM(RBM.Config.from_dict({"resolution": 64, "hidden": 4, "max_side": 32}))
    assert model.side == 32 and model.weight.shape == (32 * 32, 4)
    img = -torch.ones(1, 3, 64, 64)
    img[:, 1, :, 32:] = 1  # pure green on the right: luminance 0.587 > 0.5
    v = model.binarise(img).view(32, 32)
    assert v[:, :16].sum() == 0 and v[:, 16:].sum() == 32 * 16
    out = model.to_images(v.flatten()[None])
    assert out.shape == (1, 3, 64, 64) and out[0, :, 0, 40].eq(1).all()


def _bars(n: int) -> torch.Tensor:
    a = -torch.ones(1, 1, 8, 8)
    a[..., 2:4, :] = 1
    b = -torch.ones(1, 1, 8, 8)
    b[..., :, 5:7] = 1
    return torch.cat([a, b]).repeat(n // 2, 3, 1, 1)


def test_rbm_learns_a_tiny_fixture_and_its_chain_finds_the_patterns():
    torch.manual_seed(0)
    model = RBM(RBM.Config.from_dict({"resolution": 8, "hidden": 16, "lr": 1e-2}))
    model.configure_optimizers()
    data = _bars(16)
    gen = torch.Generator().manual_seed(0)
    history = [
        model.train_step(Batch(data), StepContext(step=step, generator=gen)) for step in range(150)
    ]

    def mean(name, part):
        return sum(float(h[name]) for h in part) / len(part)

    assert mean("recon", history[-10:]) < 0.02 < mean("recon", history[:10])
    assert mean("pseudo_ll", history[-10:]) > mean("pseudo_ll", history[:10])
    samples = model.sample(6, torch.Generator().manual_seed(1), steps=100)
    patterns = model.binarise(data[:2])
    got = model.binarise(samples)
    distance = torch.cdist(got, patterns, p=1).min(dim=1).values  # Hamming to the nearest
    assert (distance <= 4).all(), distance

    # Inpainting clamps the known pixels: the left half of a bar completes the bar.
    hole = torch.zeros(1, 1, 8, 8)
    hole[..., 4:] = 1
    for pattern in data[:2]:
        steps = model.inpaint_iter(
            pattern[None], hole, 3, torch.Generator().manual_seed(2), InpaintSettings(), None, None
        )
        filled = _last(steps)
        assert torch.equal(filled[..., :4], pattern[None].expand(3, -1, -1, -1)[..., :4])
        wrong = (model.binarise(filled) != model.binarise(pattern[None])).sum(dim=1)
        assert (wrong <= 2).all(), wrong


def _last(gen):
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def _two_modes(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """8 x 8 images of two modes (left half on, top half on), 5% of the pixels flipped."""
    modes = torch.zeros(2, 8, 8)
    modes[0, :, :4] = 1
    modes[1, :4, :] = 1
    x = modes[torch.randint(0, 2, (n,), generator=gen)]
    x = torch.where(torch.rand(x.shape, generator=gen) < 0.05, 1 - x, x)
    return x[:, None] * 2 - 1, modes.flatten(1)


# With the old defaults (Adam at 1e-3, visible biases at 0) every chain of seed 0 ended in
# one mode (0 and 17 of 64 near each, the rest far from both); with the practical guide's
# (SGD 0.01 with momentum 0.5 -> 0.9, visible biases at the data's log-odds) 33 and 31.
def test_after_a_short_cd1_training_the_gibbs_samples_cover_both_modes():
    torch.manual_seed(0)
    model = RBM(RBM.Config.from_dict({"resolution": 8, "channels": 1, "hidden": 16}))
    assert (model.config.training, model.config.cd_steps) == ("cd", 1)  # the defaults
    model.configure_optimizers()
    gen = torch.Generator().manual_seed(1)
    first, modes = _two_modes(32, gen)
    for step in range(300):
        batch = first if step == 0 else _two_modes(32, gen)[0]
        model.train_step(Batch(batch), StepContext(step=step, generator=gen))
        if step == 0:  # the visible biases start at the first batch's log-odds
            share = (model.binarise(first).sum(0) + 1) / 34
            assert torch.allclose(torch.sigmoid(model.visible_bias.detach()), share, atol=0.05)
    samples = model.binarise(model.sample(64, torch.Generator().manual_seed(7)))
    distance = torch.cdist(samples, modes, p=1)  # Hamming distance to each mode
    near = distance.min(dim=1).values <= 8
    counts = [int((near & (distance.argmin(dim=1) == k)).sum()) for k in range(2)]
    assert min(counts) >= 16 and sum(counts) >= 56, counts


def test_persistent_cd_keeps_its_chains_between_updates():
    torch.manual_seed(0)
    model = RBM(RBM.Config.from_dict({"resolution": 8, "hidden": 8, "training": "pcd"}))
    model.configure_optimizers()
    gen = torch.Generator().manual_seed(0)
    model.train_step(Batch(_bars(4)), StepContext(step=0, generator=gen))
    chains = model._chains.clone()
    model.train_step(Batch(_bars(4)), StepContext(step=1, generator=gen))
    assert chains.shape == (4, 64) and not torch.equal(chains, model._chains)


def test_the_trainer_saves_the_learned_filters_beside_the_samples(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=8, size=16, classes=1)
    run = train_tiny_run(tmp_path / "run", "ebm.rbm", data, {"hidden": 9})
    filters = run / "samples" / "filters.png"
    assert filters.is_file()
    assert sorted(p.name for p in (run / "samples").glob("step_*.png"))  # grids still there
    grid = np.asarray(Image.open(filters))
    assert grid.ndim == 3 and grid.shape[0] >= 3 * 16 and grid.std() > 0


def test_extra_images_are_saved_under_plain_names_only(tmp_path):
    """The trainer's hook writes ``samples/<name>.png`` for lower-case names and skips names
    that are not plain words or that the sample grids own."""
    from types import SimpleNamespace

    from studio.engine.monitor import Monitor

    grey = torch.zeros(2, 1, 4, 4)
    model = SimpleNamespace(
        extra_images=lambda: {"filters": grey, "step_00000001": grey, "../up": grey, "Big": grey}
    )
    monitor = Monitor.__new__(Monitor)
    monitor.run = SimpleNamespace(samples_dir=tmp_path)
    monitor._save_extra_images(model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["filters.png"]


def test_anomaly_scores_rank_a_pattern_it_never_saw_above_the_one_it_learned():
    """Free energy and reconstruction both score the unseen pattern as more unusual."""
    from studio.models.registry import get_family

    torch.manual_seed(0)
    model = get_family("ebm.rbm")(get_family("ebm.rbm").Config(resolution=8, channels=1, hidden=8))
    model.configure_optimizers()
    stripes = torch.zeros(1, 1, 8, 8) - 1
    stripes[..., ::2] = 1  # vertical stripes: the training pattern
    checker = -stripes.clone()
    checker[..., ::2, :] *= -1  # a checkerboard: never seen
    from studio.models.base import Batch, StepContext

    for step in range(300):
        gen = torch.Generator().manual_seed(step)
        model.train_step(Batch(stripes.expand(8, -1, -1, -1)), StepContext(step, gen))
    scored = model.anomaly_scores(torch.cat([stripes, checker]))
    for name in ("free_energy", "recon"):
        assert scored.scores[name][1] > scored.scores[name][0], name
    assert scored.reconstruction.shape == (2, 1, 8, 8)
