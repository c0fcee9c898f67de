"""Making more of a rare class: per-class counts, the copy filter, the manifest, refusal, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_dataset, train_tiny_run
from PIL import Image

from studio.cli.main import main
from studio.core.atomic import current_umask
from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.augment import MANIFEST_NAME, augment_job
from studio.engine.sample import load_run_model


@pytest.fixture(scope="module")
def rare_dir(tmp_path_factory):
    """class_0 with 10 images, class_1 with 4: class_1 is the rare one."""
    folder = make_tiny_dataset(tmp_path_factory.mktemp("aug_data"), n=20, size=16, classes=2)
    for path in sorted((folder / "class_1").iterdir())[4:]:
        path.unlink()
    return folder


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory, rare_dir):
    run = tmp_path_factory.mktemp("aug_runs") / "cgan"
    return train_tiny_run(run, "gan.cgan", rare_dir)


def augment(run, out, **kw):
    kw.setdefault("device", "cpu")
    outcome = run_sync(augment_job(run, out, **kw))
    assert outcome.ok, outcome.error or outcome.details
    return outcome.result


def on_disk(folder):
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )


def test_each_class_gets_the_asked_count_with_a_manifest(cgan_run, tmp_path):
    out = tmp_path / "more"
    report = augment(cgan_run, out, per_class=3, seed=5, batch_size=2)
    assert report.conditioning == "label"
    assert report.made == report.asked == {"class_0": 3, "class_1": 3}
    expected = [f"class_{k}/gen_0000{i}.png" for k in (0, 1) for i in (1, 2, 3)]
    assert on_disk(out) == expected == sorted(report.files)
    for rel in expected:
        assert Image.open(out / rel).size == (16, 16)
        assert (out / rel).stat().st_mode & 0o777 == 0o666 & ~current_umask()
    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    (export,) = manifest["exports"]
    assert export["run"] == str(cgan_run.resolve()) and export["family"] == "gan.cgan"
    assert export["status"] == "complete" and export["made"] == {"class_0": 3, "class_1": 3}
    assert export["settings"]["seed"] == 5 and export["settings"]["per_class"] == 3
    assert export["settings"]["min_distance"] > 0  # the default, measured from held-out images
    assert "held-out" in export["settings"]["min_distance_source"]
    assert sorted(manifest["files"]) == expected
    entry = manifest["files"]["class_1/gen_00002.png"]
    assert (
        entry["class"] == "class_1"
        and entry["size"] == (out / "class_1/gen_00002.png").stat().st_size
    )
    # The recorded seed, batch and position reproduce the file.
    model = load_run_model(cgan_run, "cpu")
    gen = torch.Generator().manual_seed(entry["seed"])
    with torch.no_grad():
        again = model.sample(entry["batch"], gen, label=1)[entry["position"]]
    pixels = ((again.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(out / "class_1/gen_00002.png")), pixels)


def test_fill_brings_every_class_up_to_the_largest(cgan_run, tmp_path):
    out = tmp_path / "filled"
    report = augment(cgan_run, out, fill=True, min_distance=0)
    # The run's folder: class_0 has 10 images, class_1 4.
    assert report.asked == {"class_0": 0, "class_1": 6} and report.made == report.asked
    assert len(list((out / "class_1").glob("gen_*.png"))) == 6
    # Filling the same folder again counts what the first export made: nothing is missing.
    again = augment(cgan_run, out, fill=True, min_distance=0)
    assert again.made == {"class_0": 0, "class_1": 0} and len(on_disk(out)) == 6


def copying(model, copies):
    """``model`` whose draws start with the given images (N x C x R x R in [-1, 1]), then
    its own samples."""
    real = model.sample

    def sample(n, generator, **conditions):
        own = real(n, generator, **conditions)
        k = min(n, len(copies))
        return torch.cat([copies[:k], own[k:]])

    model.sample = sample
    return model


def training_image(folder, rel):
    arr = np.asarray(Image.open(folder / rel).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def test_the_filter_drops_copies_of_training_images(cgan_run, rare_dir, tmp_path):
    copy = training_image(rare_dir, "class_1/0001.png")
    copies = torch.stack([copy, copy.flip(2)])  # the image, and its mirror image
    model = copying(load_run_model(cgan_run, "cpu"), copies)
    report = augment(cgan_run, tmp_path / "f", per_class=3, class_name="class_1", model=model)
    assert report.dropped == {"too_close": 2, "wrong_class": 0}
    assert report.made == {"class_1": 3} and report.drawn == {"class_1": 12}
    written = [np.asarray(Image.open(tmp_path / "f" / rel)) for rel in report.files]
    original = np.asarray(Image.open(rare_dir / "class_1/0001.png").convert("RGB"))
    assert not any(
        np.array_equal(w, original) or np.array_equal(w, original[:, ::-1]) for w in written
    )
    manifest = json.loads((tmp_path / "f" / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["exports"][0]["dropped"]["too_close"] == 2
    # With the filter off the copy is written.
    kept = augment(
        cgan_run, tmp_path / "k", per_class=1, class_name="class_1", model=model, min_distance=0
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "k" / kept.files[0])), original)


def test_too_many_copies_stop_at_the_attempts_limit(cgan_run, rare_dir, tmp_path):
    copy = training_image(rare_dir, "class_0/0000.png")
    model = load_run_model(cgan_run, "cpu")
    model.sample = lambda n, generator, **c: copy.expand(n, -1, -1, -1).clone()
    report = augment(
        cgan_run, tmp_path / "o", per_class=2, class_name="class_0", model=model, max_attempts=3
    )
    assert report.made == {"class_0": 0} and report.drawn == {"class_0": 6}
    assert report.short == {"class_0": 2}
    manifest = json.loads((tmp_path / "o" / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["exports"][0]["status"] == "short" and manifest["files"] == {}


def test_a_foreign_folder_is_refused_and_an_earlier_export_extended(cgan_run, rare_dir, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "holiday.png").write_bytes(b"precious")
    outcome = run_sync(augment_job(cgan_run, foreign, per_class=1, device="cpu"))
    assert outcome.status is Status.FAILED and "not an earlier augmentation export" in outcome.error
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.png"]
    inside = run_sync(augment_job(cgan_run, rare_dir / "more", per_class=1, device="cpu"))
    assert inside.status is Status.FAILED and "inside the run's training folder" in inside.error
    assert not (rare_dir / "more").exists()

    out = tmp_path / "ours"
    first = augment(cgan_run, out, per_class=1, class_name="class_0", min_distance=0)
    before = (out / first.files[0]).read_bytes()
    second = augment(cgan_run, out, per_class=2, class_name="class_0", min_distance=0)
    assert first.files == ("class_0/gen_00001.png",)
    assert second.files == ("class_0/gen_00002.png", "class_0/gen_00003.png")
    assert (out / first.files[0]).read_bytes() == before
    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert len(manifest["exports"]) == 2 and len(manifest["files"]) == 3


def test_cancel_leaves_a_manifest_of_what_was_written(cgan_run, tmp_path):
    out = tmp_path / "c"
    token = CancelToken()
    seen: list[Progress] = []

    def cancel_after_first_batch(p: Progress) -> None:
        seen.append(p)
        if p.stage == "sample":
            token.cancel()

    job = augment_job(cgan_run, out, per_class=4, batch_size=2, min_distance=0, device="cpu")
    outcome = run_sync(job, token, cancel_after_first_batch)
    assert outcome.status is Status.CANCELLED and outcome.result is None
    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["exports"][0]["status"] == "cancelled"
    assert (
        sorted(manifest["files"])
        == on_disk(out)
        == ["class_0/gen_00001.png", "class_0/gen_00002.png"]
    )
    assert not [p for p in out.rglob(".*")]  # no temp file left


def test_an_unconditional_run_needs_a_class_trained_alone(tmp_path, rare_dir):
    run = train_tiny_run(tmp_path / "dcgan", "gan.dcgan", rare_dir, steps=1)
    for name, message in [(None, "not class-conditional"), ("class_1", "together without labels")]:
        outcome = run_sync(
            augment_job(run, tmp_path / "o", per_class=1, class_name=name, device="cpu")
        )
        assert outcome.status is Status.FAILED and message in outcome.error
    assert not (tmp_path / "o").exists()
    one = make_tiny_dataset(tmp_path / "rare", n=6, size=16, classes=1)
    alone = train_tiny_run(tmp_path / "alone", "gan.dcgan", one / "class_0", steps=1)
    report = augment(alone, tmp_path / "o", per_class=2, class_name="moth", min_distance=0)
    assert report.conditioning == "none" and on_disk(tmp_path / "o") == [
        "moth/gen_00001.png",
        "moth/gen_00002.png",
    ]


# -- the command --------------------------------------------------------------------------------


def test_cli_fills_and_reports(cgan_run, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["augment", "--run", str(cgan_run), "--fill", "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "class_1: made 6 of 6" in text and "wrote 6 images" in text
    assert "minimum distance" in text and "dropped: " in text
    assert main(["augment", "--run", str(cgan_run), "--per-class", "1", "--out", str(tmp_path / "x"),
                 "--min-distance", "2"]) == 1  # fmt: skip
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "error: --min-distance must be between 0 and 1"
    with pytest.raises(SystemExit):  # argparse: --per-class and --fill exclude each other
        main([*argv, "--per-class", "2"])


def test_a_cli_error_is_one_sentence(cgan_run, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.txt").write_text("x")
    argv = ["augment", "--run", str(cgan_run), "--per-class", "1", "--out", str(tmp_path / "full")]
    assert main([*argv, "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "choose a new or empty folder" in last
    assert "Traceback" not in err


def test_job_arguments_are_checked():
    with pytest.raises(StudioError, match="either"):
        next(augment_job("r", "o", per_class=2, fill=True))


def test_the_class_check_drops_samples_of_another_class(cgan_run, rare_dir, tmp_path):
    wrong = [training_image(rare_dir, f"class_0/{i:04d}.png") for i in (0, 2)]
    right = [training_image(rare_dir, f"class_1/{i:04d}.png") for i in (1, 3, 5, 7)]
    model = load_run_model(cgan_run, "cpu")
    model.sample = lambda n, generator, **c: torch.stack(wrong + right * 2)[:n]
    kw = dict(per_class=3, class_name="class_1", model=model, min_distance=0, batch_size=8)
    report = augment(
        cgan_run, tmp_path / "a", check_class=True, extractor_steps=80, cache_dir=tmp_path, **kw
    )
    assert report.dropped == {"too_close": 0, "wrong_class": 2}
    assert any(note.startswith("class check: studio-cnn") for note in report.notes)
    written = [np.asarray(Image.open(tmp_path / "a" / rel)) for rel in report.files]
    firsts = [((w + 1) * 127.5).round().permute(1, 2, 0).numpy() for w in right[:3]]
    assert all(np.array_equal(a, b) for a, b in zip(written, firsts))
    # Without the check the other class's images are written as class_1.
    unchecked = augment(cgan_run, tmp_path / "b", **kw)
    assert unchecked.dropped["wrong_class"] == 0 and len(unchecked.files) == 3
