"""Continual learning: a run continues on another folder with generative replay and EWC."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_tiny_dataset, tiny_model, tiny_train_config

from studio.core.continual import replay_count
from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress, run_sync
from studio.engine import checkpoint as ckpt
from studio.engine.continual import Continual, EWCPenalty, fisher_diagonal
from studio.engine.runs import RunFolder
from studio.engine.switch import continue_job, switch_job
from studio.engine.train import train_job
from studio.models.base import Batch


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("continual")
    old = make_tiny_dataset(base / "old", n=24, size=16, classes=1, seed=1)
    new = make_tiny_dataset(base / "new", n=24, size=16, classes=2, seed=2)
    return old, new


def _config(key, data, **kw):
    settings = dict(steps=6, batch_size=4, sample_every=3, checkpoint_every=100, samples=8)
    settings.update(kw)
    return tiny_train_config(key, data, **settings)


def _train(run_dir, cfg=None, token=None, on_progress=None, **kw):
    token = token or CancelToken()
    out = run_sync(train_job(run_dir, token, cfg, **kw), token, on_progress)
    assert out.ok, out.error
    return out.result


def _continue(run_dir, new, token=None, on_progress=None, **kw):
    token = token or CancelToken()
    return run_sync(continue_job(run_dir, token, new, **kw), token, on_progress)


# -- replay ---------------------------------------------------------------------------------


class _Painter:
    """A stand-in replay model whose images are all 0.5: they are counted in a batch."""

    def sample(self, n, generator):
        return torch.full((n, 3, 4, 4), 0.5)

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def modules(self):
        return [self]

    training = False


@pytest.mark.parametrize("share", [0.0, 0.25, 0.3, 0.5, 0.9])
def test_a_replay_batch_holds_exactly_the_asked_share_of_generated_images(share):
    real = torch.full((10, 3, 4, 4), -0.5)
    mix = Continual(share, _Painter(), None, seed=0, folders={}, current=2)
    batch = mix.mix(Batch(images=real, captions=("a",) * 10), step=3)
    generated = int((batch.images[:, 0, 0, 0] == 0.5).sum())
    assert generated == replay_count(10, share) == round(share * 10) and len(batch.images) == 10
    assert batch.captions == ("a",) * (10 - generated) + ("",) * generated
    assert replay_count(4, 0.9) == 3  # a batch keeps at least one new image


# -- EWC ------------------------------------------------------------------------------------


def test_ewc_penalty_is_zero_at_the_old_weights_and_its_gradient_points_back():
    model = tiny_model("vae.conv")
    images = (torch.rand(6, 3, 16, 16) * 255).to(torch.uint8)
    fisher = fisher_diagonal(model, images, seed=0)
    assert fisher is not None and all(torch.isfinite(f).all() for f in fisher.values())
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc = EWCPenalty(model, fisher, anchor, lam=100.0)
    assert float(ewc("vae").detach()) == 0.0
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    penalty = ewc("vae")
    assert float(penalty.detach()) > 0
    params = list(model.parameters())
    grads = torch.autograd.grad(penalty, params, allow_unused=True)
    names = [n for n, _ in model.named_parameters()]
    step_dot = sum(  # the update direction (minus the gradient) against the displacement
        float((-g * (p.detach() - anchor[n])).sum())
        for n, p, g in zip(names, params, grads)
        if g is not None
    )
    assert step_dot < 0  # a step against the gradient moves the weights back to the old ones


def test_the_gan_has_a_per_example_loss_for_both_networks():
    model = tiny_model("gan.dcgan")
    fisher = fisher_diagonal(model, (torch.rand(3, 3, 16, 16) * 255).to(torch.uint8), seed=0)
    assert fisher is not None
    for net in ("generator.", "discriminator."):
        assert sum(float(f.sum()) for n, f in fisher.items() if n.startswith(net)) > 0


def test_ewc_penalty_joins_the_loss_of_its_optimizer_only(folders):
    model = tiny_model("gan.dcgan")
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    ewc = EWCPenalty(model, fisher, anchor, lam=1.0)
    g_names = {n for n, _ in model.generator.named_parameters()}
    assert len(ewc.terms["g"]) == len(g_names)
    assert len(ewc.terms["d"]) == len(list(model.discriminator.parameters()))


# -- the switch, its record, and resume -------------------------------------------------------


def test_continue_records_the_dataset_sequence_and_plots_both_folders(folders, tmp_path):
    old, new = folders
    run = tmp_path / "run"
    _train(run, _config("vae.conv", old))
    seen: list[Progress] = []
    out = _continue(run, new, replay=0.5, ewc=10.0, steps=12, on_progress=seen.append)
    assert out.ok, out.error
    assert out.result.step == 12
    cfg = RunFolder(run).read_config()
    sequence = [(d["path"], d["step"]) for d in cfg["datasets"]]
    assert sequence == [(str(old), 0), (str(new.resolve()), 6)]
    assert cfg["datasets"][0]["fingerprint"] != cfg["datasets"][1]["fingerprint"]
    assert cfg["train"]["data"] == str(new.resolve()) and cfg["dataset"]["images"] == 24
    switch = run / cfg["continual"]["switch"]
    names = sorted(p.name for p in switch.iterdir())
    assert names == ["ewc.safetensors", "heldout.safetensors", "replay"]
    records, _ = RunFolder(run).read_metrics()
    after = [r for r in records if r["step"] > 6]
    assert any("folder_bpd_1" in r and "folder_bpd_2" in r for r in after)
    assert any("folder_nearest_1" in r and "folder_nearest_2" in r for r in after)
    assert any(r.get("ewc_penalty", 0) > 0 for r in after)
    assert any("folder_bpd_1" in p.metrics for p in seen)  # the live plot gets them too
    # A plain resume of the run keeps training on the new folder with the same protection.
    more = run_sync(train_job(run, CancelToken(), None, steps=14), CancelToken())
    assert more.ok and more.result.step == 14


def test_resume_after_the_switch_is_exact(folders, tmp_path):
    old, new = folders
    runs = {}
    for name in ("straight", "stopped"):
        runs[name] = tmp_path / name
        _train(runs[name], _config("gan.dcgan", old))
    assert _continue(runs["straight"], new, replay=0.5, ewc=50.0, steps=12).ok

    token = CancelToken()

    def stop_at_9(p: Progress) -> None:
        if p.stage == "train" and p.step == 9 and p.metrics:
            token.stop()

    first = _continue(runs["stopped"], new, token, stop_at_9, replay=0.5, ewc=50.0, steps=12)
    assert first.ok and first.result.step == 9
    assert _train(runs["stopped"], None, steps=12).step == 12
    wa = ckpt.load_file(str(RunFolder(runs["straight"]).model_dir / "model.safetensors"))
    wb = ckpt.load_file(str(RunFolder(runs["stopped"]).model_dir / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(
        torch.equal(wa[k], v)
        for k, v in ckpt.load_file(
            str(runs["straight"] / "continual/switch_00000006/replay/model.safetensors")
        ).items()
    )  # it did train after the switch


def test_refusals_leave_the_run_untouched(folders, tmp_path):
    old, new = folders
    run = tmp_path / "run"
    _train(run, _config("vae.conv", old, steps=2))
    before = RunFolder(run).config_path.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (tmp_path / "missing", {}, "does not exist"),
        (tmp_path / "file.txt", {}, "not a folder"),
        (empty, {}, "is empty"),
        (old, {}, "trains on now"),
        (new, {"replay": 1.5}, "replay share"),
        (new, {"ewc": -1.0}, "EWC lambda"),
        (new, {"steps": 2}, "must be above"),
    ]
    (tmp_path / "link").symlink_to(old, target_is_directory=True)
    cases.append((tmp_path / "link", {}, "trains on now"))  # the same folder by another name
    for folder, kw, words in cases:
        with pytest.raises(StudioError, match=words):
            run_sync_raise(switch_job(run, folder, **kw))
    assert RunFolder(run).config_path.read_bytes() == before
    assert not (run / "continual").exists()
    # A copy of the old folder elsewhere holds the same images: refused too.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(old, copy)
    with pytest.raises(StudioError, match="same images"):
        run_sync_raise(switch_job(run, copy))


def test_a_damaged_replay_model_stops_the_resume_with_a_clear_message(folders, tmp_path):
    old, new = folders
    run = tmp_path / "run"
    _train(run, _config("vae.conv", old, steps=2))
    assert _continue(run, new, replay=0.5, steps=3).ok
    cfg = json.loads((run / "config.json").read_text())
    weights = run / cfg["continual"]["switch"] / "replay" / "model.safetensors"
    weights.write_bytes(b"not safetensors")
    out = run_sync(train_job(run, CancelToken(), None, steps=4), CancelToken())
    assert not out.ok and "replay model" in out.error
    # config.json edited to point the switch outside the run: refused, nothing read there.
    cfg["continual"]["switch"] = "../elsewhere"
    (run / "config.json").write_text(json.dumps(cfg))
    out = run_sync(train_job(run, CancelToken(), None, steps=4), CancelToken())
    assert not out.ok and "is not inside" in out.error


def run_sync_raise(job):
    """Run a job to its end and raise what it raised (run_sync turns errors into outcomes)."""
    try:
        while True:
            next(job)
    except StopIteration as done:
        return done.value


# -- the command line -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(folders, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    _train(run, _config("vae.conv", folders[0], steps=2))
    return run


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--continue-on", "{missing}"], "does not exist"),
        (["--continue-on", "{empty}"], "is empty"),
        (["--continue-on", "{old}"], "trains on now"),
        (["--continue-on", "{new}", "--replay", "2"], "replay share"),
        (["--continue-on", "{new}", "--data", "{new}"], "leave out --data"),
    ],
)
def test_cli_refuses_a_bad_new_folder_in_one_sentence(
    folders, trained_run, tmp_path, capsys, extra, words
):
    from studio.cli.main import main

    (tmp_path / "empty").mkdir()
    names = dict(
        missing=tmp_path / "nope", empty=tmp_path / "empty", old=folders[0], new=folders[1]
    )
    before = (trained_run / "config.json").read_bytes()
    argv = ["train", "--resume", str(trained_run), *[a.format(**names) for a in extra]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert (trained_run / "config.json").read_bytes() == before


def test_cli_replay_needs_continue_on_and_continue_on_needs_a_run(folders, capsys):
    from studio.cli.main import main

    assert main(["train", "--data", str(folders[0]), "--replay", "0.3"]) == 1
    assert "--continue-on" in capsys.readouterr().err
    assert main(["train", "--continue-on", str(folders[1])]) == 1
    assert "--resume RUN" in capsys.readouterr().err


def test_cli_continues_a_run_on_another_folder(folders, tmp_path, capsys):
    from studio.cli.main import main

    run = tmp_path / "run"
    _train(run, _config("vae.conv", folders[0], steps=2))
    argv = ["train", "--run", str(run), "--continue-on", str(folders[1]), "--replay", "0.25"]
    assert main([*argv, "--ewc", "5", "--device", "cpu"]) == 0
    assert "step 4/4" in capsys.readouterr().out  # default: the run's 2 steps again
    cfg = RunFolder(run).read_config()
    assert [d["step"] for d in cfg["datasets"]] == [0, 2]
    assert cfg["continual"]["replay"] == 0.25 and cfg["continual"]["ewc"] == 5.0


@pytest.mark.parametrize(("key", "has_loss"), [("flow.realnvp", True), ("gan.wgan_gp", False)])
def test_per_example_losses_through_the_contract(key, has_loss):
    model = tiny_model(key).eval()
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    out = model.example_losses(Batch(images=images), torch.Generator().manual_seed(0))
    if has_loss:
        assert out.shape == (3,) and out.requires_grad
    else:
        assert out is None


def test_ewc_is_refused_for_a_family_without_a_per_example_loss(folders, tmp_path):
    old, new = folders
    run = tmp_path / "run"
    _train(run, _config("gan.wgan_gp", old, steps=2))
    with pytest.raises(StudioError, match="no per-example loss"):
        run_sync_raise(switch_job(run, new, ewc=10.0))
    assert "datasets" not in RunFolder(run).read_config()
    assert _continue(run, new, replay=0.5, steps=3).ok  # replay alone works for it
