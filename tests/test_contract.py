"""One contract test, parametrized over every registered model family.

Each family: build its tiny config, train two steps on the CPU through the real training job,
sample, save, load, sample again with the same seed and get identical images, cancel
mid-training and mid-sampling, and declare only the capabilities it has. A family that trains
on pairs (``Capability.PAIRED``) gets a folder of side-by-side pairs and samples by
translating input images (its ``image`` condition); one that learns from two unpaired folders
(``Capability.UNPAIRED``) gets two folders of different sizes and names.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import (
    TINY_MODELS,
    make_tiny_dataset,
    make_tiny_pairs,
    make_tiny_unpaired,
    tiny_train_config,
)

from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.device import cpu_generator
from studio.engine.runs import TrainConfig
from studio.engine.sample import load_run_model, sample_job
from studio.engine.train import train_job
from studio.models.base import Capability, GenerativeModel
from studio.models.capabilities import (
    AutoencoderFamily,
    CodeFamily,
    InpaintFamily,
    LatentFamily,
    LikelihoodFamily,
)
from studio.models.registry import FAMILIES, get_family, load_model
from studio.models.scoring import anomaly_scores

TINY = TINY_MODELS

FAST_SAMPLING = {"steps": 3}  # for families that take a step count


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("contract_data"), n=16, size=16, classes=2)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    folder, _ = make_tiny_pairs(tmp_path_factory.mktemp("contract_pairs"), side_by_side=True)
    return folder


@pytest.fixture(scope="module")
def unpaired_dirs(tmp_path_factory):
    return make_tiny_unpaired(tmp_path_factory.mktemp("contract_unpaired"))


def sample_kwargs(model: GenerativeModel) -> dict:
    kwargs = {k: v for k, v in FAST_SAMPLING.items() if k in model.conditions}
    if Capability.PAIRED in model.info.capabilities:  # inputs to translate
        side = 16 // model.output_scale  # a super-resolution input is smaller
        kwargs["image"] = torch.linspace(-1, 1, 2 * 3 * side * side).reshape(2, 3, side, side)
    return kwargs


def tiny_config(key: str, data_dir, pairs_dir=None, unpaired_dirs=None) -> TrainConfig:
    caps = get_family(key).info.capabilities
    if Capability.UNPAIRED in caps and unpaired_dirs:
        folder_a, folder_b = unpaired_dirs
        return tiny_train_config(key, folder_a, data_b=str(folder_b))
    paired = Capability.PAIRED in caps
    return tiny_train_config(key, pairs_dir if paired and pairs_dir else data_dir)


@pytest.mark.parametrize("key", list(FAMILIES))
def test_family_contract(key, data_dir, pairs_dir, unpaired_dirs, tmp_path):
    family = get_family(key)
    info = family.info
    assert info.key == key and info.kind == key.split(".")[0]
    assert info.summary and info.display_name
    assert Capability.TRAIN in info.capabilities and Capability.SAMPLE in info.capabilities

    # The config round-trips through JSON-able dicts.
    cfg = family.Config.from_dict(dict(TINY[key], resolution=16, num_classes=2))
    assert family.Config.from_dict(cfg.to_dict()) == cfg
    for f in dataclasses.fields(cfg):
        assert "label" in f.metadata, f"{key}: setting {f.name} has no label"

    # Train two steps through the real job; every named loss is logged and finite.
    run = tmp_path / "run"
    cfg = tiny_config(key, data_dir, pairs_dir, unpaired_dirs)
    out = run_sync(train_job(run, CancelToken(), cfg))
    assert out.status is Status.FINISHED, out.error or out.details
    assert out.result.step == 2
    assert out.result.metrics and all(np.isfinite(v) for v in out.result.metrics.values())

    # Sample, load from the run folder, sample again: identical for the same seed.
    model = load_run_model(run, "cpu")
    kwargs = sample_kwargs(model)
    a = run_sync(sample_job(run, 3, seed=7, model=model, **kwargs))
    assert a.ok, a.error or a.details
    assert a.result.shape == (3, 16, 16, 3) and a.result.dtype == np.uint8
    reloaded = load_model(run / "model", "cpu")
    b = run_sync(sample_job(run, 3, seed=7, model=reloaded, **kwargs))
    assert np.array_equal(a.result, b.result)
    c = run_sync(sample_job(run, 3, seed=8, model=reloaded, **kwargs))
    assert np.array_equal(a.result, c.result) != model.seeded  # another seed, another image

    # Capabilities are honest.
    caps = info.capabilities
    if Capability.UNPAIRED in caps:  # two unpaired folders: a translator both ways
        assert Capability.PAIRED in caps and {"image", "direction"} <= set(family.conditions)
    # Each declared capability comes with its protocol (studio.models.capabilities).
    assert (Capability.LATENT in caps) == isinstance(model, LatentFamily)
    assert (Capability.INPAINT in caps) == isinstance(model, InpaintFamily)
    assert (Capability.LIKELIHOOD in caps) == isinstance(model, LikelihoodFamily)
    assert (Capability.CODES in caps) == isinstance(model, CodeFamily)
    assert (Capability.AUTOENCODER in caps) == isinstance(model, AutoencoderFamily)
    if Capability.AUTOENCODER in caps:  # a latent grid another run can model, and back
        ae = model.autoencoder_spec()
        x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with torch.no_grad():
            grid = model.encode_to_grid(x)
            assert grid.shape == (2, ae.channels, 16 // ae.downsample, 16 // ae.downsample)
            assert torch.equal(grid, model.encode_to_grid(x))  # no generator: deterministic
            back = model.decode_from_grid(grid)
        assert back.shape == x.shape and back.min() >= -1 and back.max() <= 1
    if Capability.CODES in caps:
        spec = model.code_spec()
        x = torch.rand(2, spec.channels, spec.tile, spec.tile) * 2 - 1
        codes = model.encode_codes(x)
        assert codes.shape == (2, *spec.grid) and codes.dtype == torch.long
        assert int(codes.min()) >= 0 and int(codes.max()) < spec.codebook_size
        back = model.decode_codes(codes)
        assert back.shape == x.shape and torch.isfinite(back).all()
        assert torch.equal(back, model.decode_codes(codes))  # deterministic
    if Capability.LATENT in caps:
        spec = model.latent_spec()
        z = model.prior_latents(2, torch.Generator().manual_seed(0), 1.0)
        assert z.shape == (2, math.prod(spec.shape))
        with torch.no_grad():
            images = model.decode_latents(z, labels_for(model, 2))
        assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    if Capability.INPAINT in caps:
        presets = type(model).inpaint_presets()
        assert set(presets) == {"fast", "quality"} and all(presets.values())
    if Capability.LIKELIHOOD in caps:
        x = torch.rand(2, 3, 16, 16) * 2 - 1
        bpd = model.bits_per_dim(x)
        assert bpd.shape == (2,) and torch.isfinite(bpd).all() and (bpd > 0).all()
        labelled = model.bits_per_dim(x, labels_for(model, 2))  # the one signature for all
        assert labelled.shape == (2,)
    # Anomaly scores: each family offers at least one and computes every one it offers, per
    # image, finite, the same for the same seed (studio.models.scoring).
    offered = [o.name for o in model.score_options()]
    if Capability.PAIRED in caps:  # it translates inputs: nothing to score an image against
        assert not offered
        with pytest.raises(ValueError):
            model.check_conditions({"no_such_condition": 1})
        return
    assert offered, f"{key} offers no anomaly score"
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    first = anomaly_scores(model, x, None, cpu_generator(3))
    again = anomaly_scores(model, x, None, cpu_generator(3))
    assert list(first.scores) == offered
    for name, values in first.scores.items():
        assert values.shape == (2,) and torch.isfinite(values).all(), name
        assert torch.equal(values, again.scores[name]), f"{name} is not deterministic"
    if first.error_map is not None:
        assert first.error_map.shape == (2, 16, 16) and (first.error_map >= 0).all()
    if first.reconstruction is not None:
        assert first.reconstruction.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError):
        model.check_conditions({"no_such_condition": 1})


@pytest.mark.parametrize("key", list(FAMILIES))
def test_family_cancels_mid_training_and_mid_sampling(
    key, data_dir, pairs_dir, unpaired_dirs, tmp_path
):
    token = CancelToken()

    def cancel_after_first_step(p: Progress) -> None:
        if p.stage == "train" and p.step >= 1:
            token.cancel()

    cfg = dataclasses.replace(tiny_config(key, data_dir, pairs_dir, unpaired_dirs), steps=50)
    out = run_sync(train_job(tmp_path / "run", token, cfg), token, cancel_after_first_step)
    assert out.status is Status.CANCELLED and out.result is None

    family = get_family(key)
    model = family(family.Config.from_dict(dict(TINY[key], resolution=16, num_classes=2)))
    model.eval()
    token = CancelToken()
    seen = []

    def cancel_at_first(p: Progress) -> None:
        seen.append(p)
        if p.stage == "sample":
            token.cancel()

    out = run_sync(
        sample_job(tmp_path, 2, model=model, **sample_kwargs(model)), token, cancel_at_first
    )
    assert out.status is Status.CANCELLED and out.result is None
    assert any(p.stage == "sample" for p in seen)
    # The model still samples normally afterwards.
    with torch.no_grad():
        images = model.sample(2, cpu_generator(0), **sample_kwargs(model))
    assert images.shape == (2, 3, 16, 16)
    assert images.min() >= -1 and images.max() <= 1


def labels_for(model, n):
    """Class labels for a conditional model, None otherwise."""
    if Capability.CONDITIONAL in model.info.capabilities and model.config.num_classes:
        return torch.arange(n) % model.config.num_classes
    return None
