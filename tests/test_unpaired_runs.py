"""Unpaired runs (Capability.UNPAIRED): two folders of any sizes and names, batches drawn from
each on its own, held-out grids input | translation | round trip for both folders, a resume
that continues bit-identically, and studio translate both ways at any size, with
``--direction`` refused where a run translates one way only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_unpaired, tiny_train_config
from PIL import Image

from studio.cli.main import main
from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Status, run_sync
from studio.engine.batches import UnpairedBatches
from studio.engine.device import step_generator
from studio.engine.prompt.pngmeta import read_png_metadata
from studio.engine.runs import RunFolder
from studio.engine.train import check_family_data, train_job

KEY = "i2i.cyclegan"
TINY = ["--set", "width=8", "--set", "blocks=1"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_tiny_unpaired(tmp_path_factory.mktemp("unpaired"), n_a=10, n_b=7, size=16)


def _marked(n: int, offset: int) -> np.ndarray:
    """``n`` 4x4 images, image ``i`` filled with ``offset + i``."""
    values = (offset + np.arange(n, dtype=np.uint8))[:, None, None, None]
    return np.broadcast_to(values, (n, 4, 4, 3)).copy()


def _ids(x: torch.Tensor) -> list[int]:
    return torch.round((x[:, 0, 0, 0] + 1) * 127.5).int().tolist()


def test_unpaired_batches_draw_from_both_folders_independently():
    a, b = _marked(6, 100), _marked(4, 200)  # folders of different sizes
    batches = UnpairedBatches(a, b, torch.device("cpu"), 0, 8, flip=False)
    assert batches.batch_size == 4  # at most the smaller folder
    seen_a, seen_b = set(), set()
    aligned = 0
    for step in range(6):
        batch = batches.batch(step, step_generator(torch.device("cpu"), 0, step))
        ids_a, ids_b = _ids(batch.sources), _ids(batch.images)
        assert all(100 <= i < 106 for i in ids_a) and all(200 <= i < 204 for i in ids_b)
        assert len(set(ids_a)) == len(ids_a) and len(set(ids_b)) == len(ids_b)
        seen_a.update(ids_a)
        seen_b.update(ids_b)
        aligned += [i - 100 for i in ids_a] == [i - 200 for i in ids_b]
    assert seen_a == set(range(100, 106)) and seen_b == set(range(200, 204))
    assert aligned < 6  # each folder in its own order
    again = UnpairedBatches(a, b, torch.device("cpu"), 0, 8, flip=False)
    first = again.batch(3, step_generator(torch.device("cpu"), 0, 3))
    before = batches.batch(3, step_generator(torch.device("cpu"), 0, 3))
    assert torch.equal(first.sources, before.sources) and torch.equal(first.images, before.images)


def test_an_unpaired_family_needs_folder_b(folders, tmp_path):
    a, _b = folders
    with pytest.raises(StudioError, match="two folders of images, A and B"):
        check_family_data(tiny_train_config(KEY, a))
    (tmp_path / "empty").mkdir()
    for b, words in ((tmp_path / "missing", "does not exist"), (tmp_path / "empty", "is empty")):
        run = tmp_path / f"run_{b.name}"
        out = run_sync(train_job(run, CancelToken(), tiny_train_config(KEY, a, data_b=str(b))))
        assert out.status is Status.FAILED and words in str(out.error) and str(b) in str(out.error)
        assert not run.exists()  # nothing written


def test_an_unpaired_run_shows_both_directions_and_records_both_folders(folders, tmp_path):
    a, b = folders
    config = tiny_train_config(KEY, a, data_b=str(b), steps=2, sample_every=2, samples=4)
    run = tmp_path / "run"
    out = run_sync(train_job(run, CancelToken(), config))
    assert out.status is Status.FINISHED, out.error or out.details
    data = RunFolder(run).read_config()["dataset"]
    assert data["unpaired"] and data["path_b"] == str(b) and "side_by_side" not in data
    assert data["images"] == 7 and data["images_a"] == 10
    assert data["held_out_images"] + data["train_images"] == 7
    assert data["held_out_images_a"] + data["train_images_a"] == 10
    grid = np.asarray(Image.open(RunFolder(run).sample_grids()[-1]))
    # Held-out A images (2 of 10) then B images (1 of 7): a row each of input | A->B | A->B->A
    # (then input | B->A | B->A->B), 16 px images 2 px apart.
    assert grid.shape == (3 * 18 + 2, 3 * 18 + 2, 3)
    records, _ = RunFolder(run).read_metrics()
    last = [r for r in records if "heldout_cycle_a" in r][-1]
    assert last["heldout_cycle_a"] > 0 and last["heldout_cycle_b"] > 0
    losses = [r for r in records if "loss_cycle_a" in r][-1]
    assert {"loss_gan_ab", "loss_gan_ba", "loss_idt_a", "loss_d_b", "lr_g", "lr_d"} <= set(losses)


def test_a_resumed_unpaired_run_continues_bit_identically(folders, tmp_path):
    """Both folders' orders, flips and the history pools are functions of the seed and the
    step or saved with the checkpoint: 2 + 2 steps give the weights 4 steps give."""
    from safetensors.torch import load_file

    a, b = folders
    config = tiny_train_config(KEY, a, data_b=str(b), steps=4, checkpoint_every=100)
    assert run_sync(train_job(tmp_path / "straight", CancelToken(), config)).ok
    first = run_sync(train_job(tmp_path / "resumed", CancelToken(), config, steps=2))
    assert first.ok and first.result.step == 2
    resumed = run_sync(train_job(tmp_path / "resumed", CancelToken(), None, steps=4))
    assert resumed.ok and resumed.result.step == 4
    wa = load_file(str(RunFolder(tmp_path / "straight").model_dir / "model.safetensors"))
    wb = load_file(str(RunFolder(tmp_path / "resumed").model_dir / "model.safetensors"))
    assert "pool_a.images" in wa and int(wa["pool_b.count"]) > 0
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_and_translate_both_ways_through_the_cli(folders, tmp_path, capsys):
    a, b = folders
    run = tmp_path / "run"
    base = ["train", "--family", KEY, "--data", str(a), "--resolution", "32", "--steps", "2",
            "--batch-size", "4", "--out", str(run), "--device", "cpu", *TINY]  # fmt: skip
    assert main(base) == 1
    assert "give folder B too" in capsys.readouterr().err and not run.exists()
    assert main([*base, "--data-b", str(b)]) == 0
    assert "step 2/2" in capsys.readouterr().out

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (21, 30, 3), np.uint8)).save(image)
    cmd = ["translate", "--run", str(run), "--image", str(image)]
    outs = {}
    for direction in (None, "a2b", "b2a"):
        out = tmp_path / f"{direction}.png"
        extra = ["--direction", direction] if direction else []
        assert main([*cmd, "--out", str(out), *extra]) == 0
        outs[direction] = np.asarray(Image.open(out))
        assert outs[direction].shape == (21, 30, 3)  # the image's own size, not 16 x 16
    assert np.array_equal(outs[None], outs["a2b"]) and not np.array_equal(outs["a2b"], outs["b2a"])
    meta = read_png_metadata(tmp_path / "b2a.png")  # the settings ride in the PNG
    assert meta["mode"] == "translate" and meta["family"] == KEY and meta["direction"] == "b2a"
    assert meta["source"] == str(image) and meta["seed"] == 0 and meta["width"] == 30
    assert "model" not in meta  # generate --settings-from never takes the run for a prompt model
    assert read_png_metadata(tmp_path / "None.png")["direction"] == "a2b"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*cmd, "--out", str(tmp_path / "x.png"), "--direction", "up"])
    assert "invalid choice" in capsys.readouterr().err
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((5, 30, 3), np.uint8)).save(tiny)
    assert (
        main(
            ["translate", "--run", str(run), "--image", str(tiny), "--out", str(tmp_path / "t.png")]
        )
        == 1
    )
    assert "cannot translate this image" in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists()


def test_direction_is_refused_for_a_run_that_translates_one_way(tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    for family, words in (
        ("i2i.pix2pix", "translates one way only (A to B): leave out --direction"),
        ("gan.dcgan", "does not translate images"),
    ):
        run = tmp_path / family
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"family": family}))
        out = tmp_path / f"{family}.png"
        args = ["translate", "--run", str(run), "--image", str(image), "--out", str(out)]
        assert main([*args, "--direction", "b2a"]) == 1
        assert words in capsys.readouterr().err
        assert not out.exists()


def test_peek_translates_held_out_images_while_training_and_leaves_it_unchanged(folders, tmp_path):
    from safetensors.torch import load_file

    from studio.engine import peek

    a, b = folders
    config = tiny_train_config(KEY, a, data_b=str(b), steps=2, checkpoint_every=100)
    assert run_sync(train_job(tmp_path / "plain", CancelToken(), config)).ok
    results = []

    def on_progress(progress):
        if progress.stage == "train" and progress.step == 1 and not results:
            got = run_sync(peek.sample_peek(tmp_path / "peeked", 3, seed=4))
            assert got.ok, got.error or got.details
            results.append(got.result)

    out = run_sync(train_job(tmp_path / "peeked", CancelToken(), config), None, on_progress)
    assert out.ok and results
    result = results[0]
    # Two held-out A images (fewer than asked), each followed by its translation.
    assert result.live and result.step == 1 and result.images.shape == (4, 16, 16, 3)
    assert result.grid.shape == (2 * 18 + 2, 2 * 18 + 2, 3)  # rows of input | output
    images_a = [np.asarray(Image.open(f)) for f in sorted(a.iterdir())]
    assert any(np.array_equal(result.images[0], x) for x in images_a)  # a real A image
    assert not any(np.array_equal(result.images[1], x) for x in images_a)  # its translation
    wa = load_file(str(RunFolder(tmp_path / "plain").model_dir / "model.safetensors"))
    wb = load_file(str(RunFolder(tmp_path / "peeked").model_dir / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the peek changed nothing
    # Training over: a saved run is translated with studio translate instead.
    after = run_sync(peek.sample_peek(tmp_path / "peeked", 2))
    assert not after.ok and "studio translate" in str(after.error)
