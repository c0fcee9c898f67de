"""Paired runs (Capability.PAIRED): the engine loads pairs from folders A and B or from
side-by-side files, keeps every pair aligned through its crop and flip, shows held-out pairs as
input | output | target, records both folders, resumes, and translates through the CLI; a
family that does not train on pairs refuses folder B."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_pairs, tiny_train_config
from PIL import Image

from studio.cli.main import main
from studio.core.jobs import CancelToken, Status, run_sync
from studio.engine.batches import DeviceImages
from studio.engine.device import step_generator
from studio.engine.pairs import PairedImages
from studio.engine.runs import RunFolder
from studio.engine.train import train_job

TINY = ["--set", "width=8"]


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory):
    return make_tiny_pairs(tmp_path_factory.mktemp("pairs"), n=10, size=32)


def _images(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("jitter", [0, 3])
def test_paired_batches_stay_aligned_through_the_crop_and_flip(jitter):
    images = _images(12, 16)
    device = torch.device("cpu")
    same = DeviceImages(images, None, device, 3, 4, True, sources=images, jitter=jitter)
    negative = DeviceImages(images, None, device, 3, 4, True, sources=255 - images, jitter=jitter)
    plain = DeviceImages(images, None, device, 3, 4, False)
    changed = 0
    for step in range(12):
        batch = same.batch(step, step_generator(device, 3, step))
        assert batch.sources is not None and batch.sources.shape == batch.images.shape == (
            4,
            3,
            16,
            16,
        )
        assert torch.equal(batch.sources, batch.images)
        other = negative.batch(step, step_generator(device, 3, step))
        assert torch.equal(other.images, batch.images)  # the same crop and flip draws
        torch.testing.assert_close(other.sources, -other.images, atol=1e-5, rtol=0)
        untouched = plain.batch(step, step_generator(device, 3, step)).images
        changed += int(not torch.equal(batch.images, untouched))
    assert changed > 0  # the augmentation did move the pixels
    if jitter:  # a crop of the enlarged pair, not only flips
        unflipped = plain.batch(0, step_generator(device, 3, 0)).images
        first = same.batch(0, step_generator(device, 3, 0)).images
        assert not torch.equal(first, unflipped) and not torch.equal(first, unflipped.flip(3))


def test_unpaired_batches_carry_no_sources():
    batch = DeviceImages(_images(4, 8), None, torch.device("cpu"), 0, 2, True).batch(
        0, torch.Generator()
    )
    assert batch.sources is None


def test_a_paired_run_trains_on_pairs_and_shows_input_output_target(pair_dirs, tmp_path):
    a, b = pair_dirs
    config = tiny_train_config(
        "i2i.pix2pix", a, data_b=str(b), resolution=16, steps=3, sample_every=3, samples=4
    )
    run = tmp_path / "run"
    out = run_sync(train_job(run, CancelToken(), config))
    assert out.status is Status.FINISHED, out.error or out.details
    saved = RunFolder(run).read_config()
    data = saved["dataset"]
    assert saved["train"]["data_b"] == str(b)
    assert data["paired"] and data["path_b"] == str(b) and not data["side_by_side"]
    assert data["pairs"] == 10 and data["held_out_images"] == 2 and data["train_images"] == 8
    grid = np.asarray(Image.open(RunFolder(run).sample_grids()[-1]))
    # One row per held-out pair (2), three columns: input | output | target, 2 px apart.
    assert grid.shape == (2 * 18 + 2, 3 * 18 + 2, 3)
    records, _ = RunFolder(run).read_metrics()
    assert any("heldout_l1" in r for r in records)
    # The target column is a held-out B image and the input column its A (the negative).
    inputs = grid[2:18, 2:18].astype(int)
    targets = grid[2:18, 38:54].astype(int)
    assert np.abs(inputs + targets - 255).max() <= 1


def test_a_resumed_paired_run_continues_bit_identically(pair_dirs, tmp_path):
    """The pairs, their held-out split and every step's crop, flip and dropout are functions of
    the seed and the step: 2 + 2 steps give the weights 4 steps give."""
    from safetensors.torch import load_file

    a, b = pair_dirs
    config = tiny_train_config("i2i.pix2pix", a, data_b=str(b), steps=4, checkpoint_every=100)
    assert run_sync(train_job(tmp_path / "straight", CancelToken(), config)).ok
    first = run_sync(train_job(tmp_path / "resumed", CancelToken(), config, steps=2))
    assert first.ok and first.result.step == 2
    resumed = run_sync(train_job(tmp_path / "resumed", CancelToken(), None, steps=4))
    assert resumed.ok and resumed.result.step == 4
    wa = load_file(str(RunFolder(tmp_path / "straight").model_dir / "model.safetensors"))
    wb = load_file(str(RunFolder(tmp_path / "resumed").model_dir / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_an_engine_run_of_decoded_pairs_with_a_equal_to_b(tmp_path):
    images = _images(6, 16)
    pairs = PairedImages(
        a=images,
        b=images.copy(),
        paths=tuple((f"{i}.png", f"{i}.png") for i in range(6)),
        labels=None,
        class_names=(),
        resolution=16,
        fingerprint="f" * 16,
        lost=(),
    )
    config = tiny_train_config("i2i.pix2pix", tmp_path / "nowhere", data_b="", steps=2)
    out = run_sync(train_job(tmp_path / "run", CancelToken(), config, dataset=pairs))
    assert out.status is Status.FINISHED, out.error or out.details
    assert RunFolder(tmp_path / "run").read_config()["dataset"]["fingerprint"] == "f" * 16


def test_a_family_that_does_not_train_on_pairs_refuses_folder_b(pair_dirs, tmp_path, capsys):
    a, b = pair_dirs
    run = tmp_path / "run"
    code = main(["train", "--family", "gan.dcgan", "--data", str(a), "--data-b", str(b),
                 "--out", str(run), "--device", "cpu"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: DCGAN trains on one folder of images; folder B (--data-b)")
    assert err.count("\n") == 0 and err.count(". ") == 0  # one sentence
    assert not run.exists()
    config = tiny_train_config("gan.dcgan", a, data_b=str(b))  # the engine refuses it too
    out = run_sync(train_job(tmp_path / "run2", CancelToken(), config))
    assert out.status is Status.FAILED and "folder B" in out.error
    assert not (tmp_path / "run2").exists()


def test_a_paired_family_refuses_a_folder_without_pairs(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for i in range(3):  # odd widths: no file splits into A and B
        Image.fromarray(_images(1, 15)[0]).save(folder / f"{i}.png")
    config = tiny_train_config("i2i.pix2pix", folder)
    out = run_sync(train_job(tmp_path / "run", CancelToken(), config))
    assert out.status is Status.FAILED
    assert "has a partner: each file must hold A on its left half" in out.error


def test_train_resume_and_translate_through_the_cli(pair_dirs, tmp_path, capsys):
    a, b = pair_dirs
    run = tmp_path / "run"
    args = ["train", "--family", "i2i.pix2pix", "--data", str(a), "--data-b", str(b),
            "--resolution", "32", "--steps", "2", "--batch-size", "4", "--out", str(run),
            "--device", "cpu", *TINY]  # fmt: skip
    assert main(args) == 0
    assert "step 2/2" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 0
    assert "step 3/3" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["train"]["data_b"] == str(b)
    assert main(["train", "--resume", str(run), "--data-b", str(b)]) == 1
    assert "resumed run keeps its folders" in capsys.readouterr().err

    image = tmp_path / "sketch.png"
    Image.fromarray(_images(1, 50)[0][:37]).save(image)  # 50 x 37: any size is fitted
    out = tmp_path / "painting.png"
    cmd = ["translate", "--run", str(run), "--image", str(image), "--seed", "3"]
    assert main([*cmd, "--out", str(out)]) == 0
    first = np.asarray(Image.open(out))
    assert first.shape == (32, 32, 3)
    assert main([*cmd, "--out", str(tmp_path / "again.png")]) == 0
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "again.png")))
    assert main([*cmd, "--out", str(tmp_path / "many.png"), "-N", "2"]) == 0
    assert (tmp_path / "many_0.png").is_file() and (tmp_path / "many_1.png").is_file()
    capsys.readouterr()

    assert main([*cmd[:3], "--image", str(tmp_path / "missing.png"), "--out", str(out)]) == 1
    assert "There is no image at" in capsys.readouterr().err
    assert main(["sample", "--run", str(run), "-n", "2", "--out", str(tmp_path / "s.png")]) == 1
    assert "Pix2Pix translates images rather than drawing samples" in capsys.readouterr().err


def test_translate_refuses_a_run_that_does_not_translate(tmp_path, capsys):
    run = tmp_path / "gan"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"family": "gan.dcgan", "train": {}}))
    image = tmp_path / "x.png"
    Image.fromarray(_images(1, 8)[0]).save(image)
    args = ["translate", "--run", str(run), "--image", str(image), "--out", str(tmp_path / "o")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "is a DCGAN run, which does not translate images" in err
    assert main(["translate", "--run", str(tmp_path / "none"), "--image", str(image),
                 "--out", str(tmp_path / "o")]) == 1  # fmt: skip
    assert "There is no run at" in capsys.readouterr().err
