"""Finding the odd ones out: a run scores a folder, ranks foreign images first, exports CSV."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from helpers import make_tiny_dataset, train_tiny_run
from PIL import Image

from studio.cli.main import main
from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.sample import load_run_model
from studio.engine.score import score_detail_job, score_job, write_csv

FOREIGN = ("odd_constant.png", "odd_noise.png")


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("score_train"), n=32, size=16, classes=2)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, train_dir):
    """A tiny VAE trained long enough to know its stripes (a few seconds)."""
    run = tmp_path_factory.mktemp("score_runs") / "vae"
    model = {"latent_dim": 8, "width": 8, "lr": 3e-3}
    return train_tiny_run(run, "vae.conv", train_dir, model, steps=120, batch_size=16)


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory, train_dir):
    """The training images plus a constant image and a noise image at the root."""
    folder = tmp_path_factory.mktemp("score_mixed")
    shutil.copytree(train_dir, folder, dirs_exist_ok=True)
    Image.new("RGB", (16, 16), (128, 128, 128)).save(folder / FOREIGN[0])
    noise = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / FOREIGN[1])
    (folder / "broken.png").write_bytes(b"not a png at all")
    return folder


def score(run, folder, **kw):
    out = run_sync(score_job(run, folder, device="cpu", **kw))
    assert out.ok, out.error or out.details
    return out.result


@pytest.mark.parametrize("name", ["recon", "neg_elbo"])
def test_a_trained_vae_ranks_foreign_images_first(vae_run, mixed_dir, name):
    report = score(vae_run, mixed_dir, score=name, batch_size=8)
    assert report.ranked_by == name and [o.name for o in report.options] == ["recon", "neg_elbo"]
    assert len(report.images) == 34
    assert {img.path for img in report.images[:2]} == set(FOREIGN)
    assert [img.rank for img in report.images] == list(range(1, 35))
    values = report.values()
    assert np.all(np.diff(values) <= 0)  # most unusual first
    assert [s.path for s in report.skipped] == ["broken.png"]  # listed, not scored
    assert report.above(values[1]) == list(report.images[:2])


def test_scores_are_deterministic_for_a_seed(tmp_path, train_dir):
    # A GAN's projection draws its starts from the generator: the seed decides them.
    run = train_tiny_run(tmp_path / "gan", "gan.dcgan", train_dir, steps=2)
    small = make_tiny_dataset(tmp_path / "few", n=4, size=16, classes=1)
    a = score(run, small, seed=3)
    b = score(run, small, seed=3)
    c = score(run, small, seed=4)
    assert a.ranked_by == "projection"
    assert [(i.path, i.scores) for i in a.images] == [(i.path, i.scores) for i in b.images]
    assert [i.scores for i in a.images] != [i.scores for i in c.images]


def test_scoring_cancels_between_batches(vae_run, mixed_dir):
    token = CancelToken()
    seen: list[Progress] = []

    def cancel_at_first_batch(p: Progress) -> None:
        seen.append(p)
        if p.stage == "score":
            token.cancel()

    out = run_sync(
        score_job(vae_run, mixed_dir, batch_size=4, device="cpu"), token, cancel_at_first_batch
    )
    assert out.status is Status.CANCELLED and out.result is None
    assert [p.step for p in seen if p.stage == "score"] == [4]


def test_an_unknown_score_names_the_offered_ones(vae_run, mixed_dir):
    out = run_sync(score_job(vae_run, mixed_dir, score="bits_per_dim", device="cpu"))
    assert out.status is Status.FAILED
    assert "recon, neg_elbo" in out.error and "bits_per_dim" in out.error


def test_csv_export_is_ranked_and_whole(vae_run, mixed_dir, tmp_path):
    report = score(vae_run, mixed_dir)
    path = tmp_path / "out" / "scores.csv"
    write_csv(report, path, top=5)
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert rows[0] == ["rank", "path", "recon", "neg_elbo"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert {r[1] for r in rows[1:3]} == set(FOREIGN)
    assert float(rows[1][2]) >= float(rows[2][2]) >= float(rows[5][2])
    assert sorted(p.name for p in path.parent.iterdir()) == ["scores.csv"]  # no temp file left


def test_the_closer_look_has_a_reconstruction_and_an_error_map(vae_run, mixed_dir):
    model = load_run_model(vae_run, "cpu")
    odd = run_sync(score_detail_job(model, mixed_dir, FOREIGN[0])).result
    usual = run_sync(score_detail_job(model, mixed_dir, "class_0/0000.png")).result
    for detail in (odd, usual):
        assert detail.reconstruction.shape == (16, 16, 3)
        assert detail.reconstruction.dtype == np.uint8
        assert detail.error_map.shape == (16, 16)
        assert np.isclose(detail.error_map.mean(), detail.scores["recon"], rtol=1e-4)
    assert odd.scores["recon"] > 3 * usual.scores["recon"]


# -- the command --------------------------------------------------------------------------------


def test_cli_writes_the_ranked_csv(vae_run, mixed_dir, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    args = ["score", "--run", str(vae_run), "--data", str(mixed_dir), "--out", str(out)]
    assert main([*args, "--top", "3", "--score", "neg_elbo", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "scored 34 images" in text and "wrote 3 rows" in text
    assert "skipped broken.png" in text
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0][:3] == ["rank", "path", "neg_elbo"] and len(rows) == 4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--run": "no_such_run"}, "There is no run folder"),
        ({"--data": "no_such_folder"}, "does not exist"),
        ({"--score": "nonsense"}, "offer the scores recon, neg_elbo"),
        ({"--top": "0"}, "--top must be at least 1"),
        ({"--out": "."}, "is a folder"),
    ],
)
def test_cli_errors_are_one_sentence(vae_run, mixed_dir, tmp_path, capsys, change, message):
    given = {
        "--run": str(vae_run),
        "--data": str(mixed_dir),
        "--out": str(tmp_path / "s.csv"),
        **{
            k: v if k != "--run" and k != "--data" else str(tmp_path / v) for k, v in change.items()
        },
    }
    if change.get("--out") == ".":
        given["--out"] = str(tmp_path)
    argv = ["score", *[x for pair in given.items() for x in pair], "--device", "cpu"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # above it: the progress lines
    assert last.startswith("error: ") and message in last and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()
