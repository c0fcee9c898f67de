"""The VQ-VAE prior (ar.vq_prior) and base runs: causality of both networks, top-k / top-p
sampling, learning, the codes computed once, and a missing, changed or wrong base run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY_MODELS, make_tiny_dataset, tiny_train_config, tiny_vqvae_run
from safetensors.torch import load_file, save_file

from studio.cli.main import main
from studio.core.errors import BaseRunError
from studio.core.jobs import CancelToken, Status, run_sync
from studio.engine.sample import load_run_model, sample_job
from studio.engine.train import train_job
from studio.models.ar.code_nets import draw, filter_logits
from studio.models.ar.vq_prior import VQPrior
from studio.models.base import Batch, StepContext


def prior(arch: str = "pixelcnn", base: Path | None = None, **over) -> VQPrior:
    torch.manual_seed(0)
    settings = {**TINY_MODELS["ar.vq_prior"], "architecture": arch, "resolution": 16, **over}
    if base is not None:
        settings["base_run"] = str(base)
    model = VQPrior(VQPrior.Config.from_dict(settings))
    model.configure_optimizers()
    model.remember_base_lrs()
    return model


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("vq_prior_data"), n=16, size=16, classes=2)


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory, data_dir):
    """A copy of the tiny VQ-VAE run (this module alters it) and a two-step prior on it."""
    root = tmp_path_factory.mktemp("vq_prior_runs")
    base = root / "vqvae"
    shutil.copytree(tiny_vqvae_run(), base)
    cfg = tiny_train_config("ar.vq_prior", data_dir, {**TINY_MODELS["ar.vq_prior"]})
    cfg.model["base_run"] = str(base)
    out = run_sync(train_job(root / "prior", CancelToken(), cfg))
    assert out.ok, out.error or out.details
    return base, root / "prior"


# -- causality ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["pixelcnn", "gpt"])
def test_the_output_at_each_position_sees_only_the_codes_before_it(arch):
    model = prior(arch, class_conditional=False).eval()
    length, width = model.length, model.config.width
    e = torch.randn(2, length, width, requires_grad=True)
    out = model.net.forward_embedded(e, None)
    assert out.shape == (2, length, model.codes)
    for i in range(length):
        (grad,) = torch.autograd.grad(out[:, i].sum(), e, retain_graph=True)
        seen = grad.abs().sum(dim=(0, 2))
        assert torch.all(seen[i:] == 0), f"{arch}: position {i} sees {seen[i:].nonzero()}"
        if i > 0:
            assert seen[:i].sum() > 0  # and it does see what came before


@pytest.mark.parametrize("arch", ["pixelcnn", "gpt"])
def test_drawing_one_position_at_a_time_gives_the_full_pass_logits(arch):
    model = prior(arch, num_classes=2, layers=1 if arch == "pixelcnn" else 2).eval()
    codes = torch.randint(
        0, model.codes, (3, model.length), generator=torch.Generator().manual_seed(0)
    )
    labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        full = model.logits(codes, labels)
        state = model.net.begin()
        for i in range(model.length):
            step = model.net.next_logits(state, codes, i, labels)
            assert torch.allclose(step, full[:, i], atol=1e-5), i


# -- sampling knobs --------------------------------------------------------------------------------


def test_top_k_of_one_and_a_tiny_nucleus_are_argmax():
    logits = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    u = torch.rand(64, generator=torch.Generator().manual_seed(1))
    greedy = logits.argmax(-1)
    assert torch.equal(draw(filter_logits(logits, 1.0, 1, 1.0), u), greedy)
    assert torch.equal(draw(filter_logits(logits, 1.0, 0, 1e-6), u), greedy)
    kept = torch.isfinite(filter_logits(logits, 1.0, 3, 1.0)).sum(-1)
    assert torch.all(kept == 3)
    # The nucleus keeps the fewest codes whose mass reaches p, the most likely first.
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.isfinite(filter_logits(probs, 1.0, 0, 0.75)).tolist() == [
        [True, True, False, False]
    ]
    assert torch.isfinite(filter_logits(probs, 1.0, 0, 0.8)).sum() == 2
    assert torch.isfinite(filter_logits(probs, 1.0, 0, 0.81)).sum() == 3


def greedy_codes(model: VQPrior, n: int) -> torch.Tensor:
    codes = torch.zeros(n, model.length, dtype=torch.long)
    labels = model._labels(n, None)
    with torch.no_grad():
        for i in range(model.length):
            codes[:, i] = model.logits(codes, labels)[:, i].argmax(-1)
    return codes


@pytest.mark.parametrize("arch", ["pixelcnn", "gpt"])
def test_greedy_sampling_through_top_k_and_top_p(arch):
    model = prior(arch, num_classes=2).eval()
    want = model.decode_codes(greedy_codes(model, 3))
    by_k = model.sample(3, torch.Generator().manual_seed(1), top_k=1)
    by_p = model.sample(3, torch.Generator().manual_seed(2), top_p=0.001)
    assert torch.equal(by_k, want) and torch.equal(by_p, want)
    free = model.sample(3, torch.Generator().manual_seed(1))
    assert not torch.equal(free, want)  # without a limit it draws
    with pytest.raises(ValueError, match="top_p"):
        model.sample(1, torch.Generator(), top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        model.sample(1, torch.Generator(), top_k=-1)


def test_sampling_previews_fill_in_row_by_row():
    model = prior("gpt").eval()
    steps = list(model.sample_iter(2, torch.Generator().manual_seed(0)))
    assert [s.step for s in steps] == list(range(1, model.side + 1))
    cell = 16 // model.side
    first = steps[0].preview
    assert torch.all(first[..., cell:, :] == 0)  # rows not drawn yet are grey
    assert steps[-1].preview.shape == (2, 3, 16, 16)


# -- learning ----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["pixelcnn", "gpt"])
def test_it_learns_a_tiny_set_of_code_grids(arch):
    model = prior(arch, lr=1e-2)
    model.train()
    r, c = torch.meshgrid(torch.arange(model.side), torch.arange(model.side), indexing="ij")
    stripes = [(r + c) % 4, (2 * r + c) % 4 + 4]  # one pattern of codes per class
    codes = torch.stack([stripes[i % 2].flatten() for i in range(4)])
    images = torch.zeros(4, 3, 16, 16)
    losses = []
    for step in range(40):
        ctx = StepContext(step, torch.Generator().manual_seed(step))
        batch = Batch(images, labels=torch.tensor([0, 1, 0, 1]), features=codes)
        losses.append(float(model.train_step(batch, ctx)["bits_per_code"]))
    assert losses[-1] < 0.6 * losses[0], losses


def test_the_training_codes_are_encoded_once_not_at_every_step(data_dir, tmp_path, monkeypatch):
    calls = []
    encode = VQPrior.encode_codes

    def counted(self, images):
        calls.append(len(images))
        return encode(self, images)

    monkeypatch.setattr(VQPrior, "encode_codes", counted)
    cfg = tiny_train_config("ar.vq_prior", data_dir, dict(TINY_MODELS["ar.vq_prior"]), steps=6)
    out = run_sync(train_job(tmp_path / "run", CancelToken(), cfg))
    assert out.ok, out.error or out.details
    train_images = json.loads((tmp_path / "run" / "config.json").read_text())["dataset"]
    assert calls == [train_images["train_images"]] * 2  # the images and their mirror images


def test_batches_carry_the_features_of_their_images_flipped_alike():
    import numpy as np

    from studio.engine.batches import DeviceImages

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    batches = DeviceImages(images, None, torch.device("cpu"), 3, 4, flip=True)

    def left_column(x):  # tells an image from its mirror image
        return x[:, :, :, 0].flatten(1)

    assert batches.compute_features(left_column)
    for step in range(6):
        batch = batches.batch(step, torch.Generator().manual_seed(step))
        assert torch.equal(batch.features, left_column(batch.images))


# -- base runs ---------------------------------------------------------------------------------


def test_the_run_records_its_base_run_and_samples_from_it(prior_run):
    base, run = prior_run
    config = json.loads((run / "config.json").read_text())
    record = config["base_runs"]["base_run"]
    assert record["path"] == str(base.resolve()) and record["family"] == "vae.vqvae"
    assert len(record["sha256"]) == 64
    saved = json.loads((run / "model" / "studio.json").read_text())
    assert saved["base_runs"] == config["base_runs"]
    assert "base_run" not in " ".join(load_file(str(run / "model" / "model.safetensors")))
    model = load_run_model(run)
    out = run_sync(sample_job(run, 2, seed=3, model=model, top_p=0.9))
    assert out.ok and out.result.shape == (2, 16, 16, 3)


def test_an_altered_base_run_is_refused_by_name(prior_run, data_dir, tmp_path):
    base, run = prior_run
    weights = base / "model" / "model.safetensors"
    original = weights.read_bytes()
    tensors = load_file(str(weights))
    tensors["codebook"] = tensors["codebook"] + 0.01
    save_file(tensors, str(weights), metadata={"family": "vae.vqvae"})
    try:
        with pytest.raises(BaseRunError, match=str(base.resolve())) as err:
            load_run_model(run)
        assert "changed" in str(err.value)
        out = run_sync(sample_job(run, 1))  # the sample command
        assert out.status is Status.FAILED and str(base.resolve()) in out.error
        out = run_sync(train_job(run, CancelToken(), steps=4))  # resuming
        assert out.status is Status.FAILED and "changed" in out.error
    finally:
        weights.write_bytes(original)
    assert load_run_model(run) is not None  # put back as it was: accepted again


def test_a_missing_base_run_is_refused_by_name(prior_run, data_dir, tmp_path):
    base, run = prior_run
    moved = base.with_name("vqvae_moved")
    base.rename(moved)
    try:
        with pytest.raises(BaseRunError, match="is missing") as err:
            load_run_model(run)
        assert str(base.resolve()) in str(err.value)
        out = run_sync(train_job(run, CancelToken(), steps=4))
        assert out.status is Status.FAILED and str(base) in out.error
    finally:
        moved.rename(base)
    # A new run on a folder that is not there, or not chosen, says so before writing.
    for value, words in [(str(tmp_path / "nowhere"), "is missing"), ("", "choose one")]:
        cfg = tiny_train_config("ar.vq_prior", data_dir, {**TINY_MODELS["ar.vq_prior"]})
        cfg.model["base_run"] = value
        out = run_sync(train_job(tmp_path / "new", CancelToken(), cfg))
        assert out.status is Status.FAILED and words in out.error, out.error
        assert not (tmp_path / "new").exists()


def test_a_base_run_of_another_family_or_a_folder_that_is_no_run_is_refused(prior_run, tmp_path):
    _base, run = prior_run
    with pytest.raises(BaseRunError, match="needs a VQ-VAE run"):
        prior(base=run)  # the prior's own run is not a VQ-VAE
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(BaseRunError, match="not a run folder"):
        prior(base=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"  # nothing written there


def test_the_command_line_trains_on_a_base_run(data_dir, tmp_path, capsys):
    common = ["--data", str(data_dir), "--resolution", "32", "--steps", "2", "--batch-size",
              "4", "--device", "cpu"]  # fmt: skip
    base = tmp_path / "vq"
    vq = ["--set", "codebook_size=16", "--set", "embedding_dim=4", "--set", "downsample=4",
          "--set", "width=8"]  # fmt: skip
    assert main(["train", "--family", "vae.vqvae", *common, "--out", str(base), *vq]) == 0
    out = tmp_path / "prior"
    prior_settings = ["--set", f"base_run={base}", "--set", "architecture=gpt", "--set",
                      "width=8", "--set", "heads=2", "--set", "layers=1"]  # fmt: skip
    assert (
        main(["train", "--family", "ar.vq_prior", *common, "--out", str(out), *prior_settings]) == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["base_run"] == str(base.resolve())
    assert config["base_runs"]["base_run"]["path"] == str(base.resolve())
    assert main(["sample", "--run", str(out), "-n", "2", "--out", str(tmp_path / "s.png"),
                 "--with", "top_k=4", "--seed", "1"]) == 0  # fmt: skip
    assert (tmp_path / "s.png").is_file()


def test_inpainting_redraws_the_masked_codes_and_says_how_later_codes_count():
    from studio.models.capabilities import InpaintSettings

    model = prior("gpt", num_classes=2).eval()
    x0 = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    hole = torch.zeros(1, 1, 16, 16)
    hole[..., 5:9, 4:7] = 1  # touches code cells rows 2-4, columns 2-3 (2 px cells)
    known = model.encode_codes(x0)
    for preset, passes in [("fast", 1), ("quality", 3)]:
        settings = InpaintSettings(preset=preset)
        steps = list(
            model.inpaint_iter(x0, hole, 2, torch.Generator().manual_seed(1), settings, None, None)
        )
        assert steps[-1].step == steps[-1].total == 6 * passes
        described = model.inpaint_describe(settings)
        assert "after the mask" in described and ("re-sampling" in described)
    decoded = []  # the code grids inpainting decodes
    decode = model.decode_codes
    model.decode_codes = lambda codes: decode(decoded.append(codes.clone()) or codes)
    gen = model.inpaint_iter(x0, hole, 2, torch.Generator().manual_seed(1), settings, None, None)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            images = done.value
            break
    assert images.shape == (2, 3, 16, 16)
    final = decoded[-1].view(2, model.side, model.side)
    outside = torch.ones(model.side, model.side, dtype=torch.bool)
    outside[2:5, 2:4] = False
    assert torch.equal(final[:, outside], known.view(model.side, model.side)[outside].expand(2, -1))
    assert not torch.equal(
        final[:, ~outside], known.view(model.side, model.side)[~outside].expand(2, -1)
    )


def test_a_damaged_or_linked_base_run(tmp_path):
    base = tmp_path / "vq"
    shutil.copytree(tiny_vqvae_run(), base)
    link = tmp_path / "link"
    link.symlink_to(base, target_is_directory=True)
    linked = prior(base=link)
    assert linked.base_records["base_run"]["path"] == str(base.resolve())  # where it really is
    assert linked.config.base_run == str(base.resolve())
    weights = base / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: the checkpoint still holds it
    from_checkpoint = prior(base=base)
    assert from_checkpoint.base_records == linked.base_records  # the same weights, same hash
    shutil.rmtree(base / "state")
    with pytest.raises(BaseRunError, match="cannot be opened") as err:
        prior(base=base)
    assert str(base) in str(err.value)


def test_a_resumed_gpt_prior_with_dropout_continues_bit_identically(data_dir, tmp_path):
    model = {**TINY_MODELS["ar.vq_prior"], "architecture": "gpt", "dropout": 0.1}
    cfg = tiny_train_config("ar.vq_prior", data_dir, model, steps=6, checkpoint_every=3)
    assert run_sync(train_job(tmp_path / "whole", CancelToken(), cfg)).ok
    token = CancelToken()

    def stop_at_3(p):
        if p.stage == "train" and p.step >= 3:
            token.stop()

    assert run_sync(train_job(tmp_path / "split", token, cfg), token, stop_at_3).ok
    assert run_sync(train_job(tmp_path / "split", CancelToken(), steps=6)).ok

    def losses(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["bits_per_code"] for line in lines if "bits_per_code" in line]

    assert losses(tmp_path / "whole") == losses(tmp_path / "split")
    assert len(losses(tmp_path / "whole")) == 6
