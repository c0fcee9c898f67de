"""Cases of the reliability list (docs/reliability.md) that no other test covered.

Each test drives the studio from outside (command line or public job API) on tiny data, on the
CPU, in seconds.
"""

from __future__ import annotations

import gc
import struct
import tracemalloc
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_dataset
from PIL import Image
from safetensors.torch import save_file

from studio.cli.main import main
from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine import checkpoint as ckpt
from studio.engine.runs import RunFolder, TrainConfig
from studio.engine.sample import sample_job
from studio.engine.train import train_job

TINY = ["--set", "latent_dim=8", "--set", "width=8"]


def _config(data_dir: Path, **kw) -> TrainConfig:
    base = dict(
        family="gan.dcgan", data=str(data_dir), resolution=16, batch_size=4, steps=4, seed=3,
        sample_every=1000, checkpoint_every=2, log_every=1, samples=4, device="cpu",
        model={"latent_dim": 8, "width": 8},
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=12, size=16, classes=2)


# -- images -----------------------------------------------------------------------------------


def test_training_on_a_mixed_folder_uses_the_good_images_and_lists_the_rest(tmp_path, capsys):
    """Good images beside corrupt, truncated, zero-byte and non-image files: `studio train`
    trains on the good ones and prints every other file with its reason."""
    data = make_tiny_dataset(tmp_path / "mixed", n=8, size=16, classes=2)
    (data / "class_0" / "corrupt.png").write_bytes(bytes(range(7, 256)) * 2)
    whole = (data / "class_0" / "0000.png").read_bytes()
    (data / "class_1" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (data / "class_1" / "empty.jpg").write_bytes(b"")
    (data / "class_0" / "notes.md").write_text("not a picture\n", encoding="utf-8")
    run = tmp_path / "run"
    code = main(["train", "--family", "gan.dcgan", "--data", str(data), "--resolution", "32",
                 "--steps", "2", "--batch-size", "4", "--out", str(run), "--device", "cpu",
                 *TINY])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Traceback" not in out.err
    for name, reason in (("corrupt.png", "unreadable"), ("truncated.png", "truncated"),
                         ("empty.jpg", "zero bytes"), ("notes.md", "not an image")):  # fmt: skip
        assert any(name in line and reason in line for line in out.err.splitlines()), (
            name,
            out.err,
        )
    assert RunFolder(run).read_config()["dataset"]["images"] == 8


def test_very_long_paths_scan_train_and_sample(tmp_path, capsys):
    """A dataset and a run folder more than 300 characters deep, with 200-character names
    (over Windows' old 260-character limit; Linux allows 255 bytes a name)."""
    deep = tmp_path.joinpath(*(["d" * 60 + f"{i}" for i in range(5)]))
    data = deep / ("images-" + "x" * 193)
    make_tiny_dataset(data, n=8, size=16, classes=2)
    long_name = data / "class_0" / ("é" * 80 + "y" * 86 + ".png")  # 250 bytes in UTF-8
    Image.new("RGB", (16, 16), (200, 10, 10)).save(long_name)
    assert len(str(long_name)) > 500
    assert main(["data", "scan", str(data)]) == 0
    assert "9" in capsys.readouterr().out
    run = deep / ("run-" + "r" * 196)
    code = main(["train", "--family", "gan.dcgan", "--data", str(data), "--resolution", "32",
                 "--steps", "2", "--batch-size", "4", "--out", str(run), "--device", "cpu",
                 *TINY])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert RunFolder(run).read_config()["dataset"]["images"] == 9
    grid = run / ("grid-" + "g" * 190 + ".png")
    assert main(["sample", "--run", str(run), "-n", "2", "--seed", "1", "--out", str(grid)]) == 0
    assert Image.open(grid).size[0] > 16


# -- threads and load -------------------------------------------------------------------------


def test_cancel_while_the_training_images_load_writes_no_checkpoint(data_dir, tmp_path):
    token = CancelToken()
    stages: list[str] = []

    def cancel_while_loading(p: Progress) -> None:
        stages.append(p.stage.value)
        if p.stage.value in ("load", "scan"):
            token.cancel()

    out = run_sync(
        train_job(tmp_path / "run", token, _config(data_dir)), token, cancel_while_loading
    )
    assert out.status is Status.CANCELLED and out.result is None
    assert "train" not in stages
    assert not ckpt.list_checkpoints(RunFolder(tmp_path / "run").state_dir)


def test_cancel_while_a_checkpoint_is_written_keeps_it_whole(data_dir, tmp_path, monkeypatch):
    """Cancel arrives (from another thread, as the window's button does) in the middle of a
    checkpoint save: the save finishes whole and verifies, then the job stops as cancelled."""
    token = CancelToken()
    real_save = ckpt.save_file
    calls = {"n": 0}

    def save_then_cancel(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the model is written; optimizer state and the manifest are not
            token.cancel()
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", save_then_cancel)
    run = RunFolder(tmp_path / "run")
    out = run_sync(train_job(run.path, token, _config(data_dir)), token)
    assert out.status is Status.CANCELLED
    saved = ckpt.list_checkpoints(run.state_dir)
    assert [p.name for p in saved] == ["step_00000002"]
    assert ckpt.problem(saved[0], verify_hashes=True) is None
    assert not [p for p in run.state_dir.iterdir() if p.name.startswith(".")]  # no partial folder


def test_repeated_sampling_keeps_memory_flat(data_dir, tmp_path):
    """A small soak: 20 sample jobs from one run in one process; the memory Python holds
    stays flat after the first few (no per-job leak of arrays, models or progress)."""
    run = tmp_path / "run"
    assert run_sync(train_job(run, CancelToken(), _config(data_dir, steps=2))).ok

    def sample_once(seed: int) -> None:
        out = run_sync(sample_job(run, 4, seed=seed, device="cpu"))
        assert out.ok and out.result.shape == (4, 16, 16, 3)

    for seed in range(5):
        sample_once(seed)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for seed in range(15):
            sample_once(seed)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 512 * 1024, f"{grown} bytes more after 15 sample jobs"


# -- numerics and resources -------------------------------------------------------------------


def test_out_of_memory_mid_training_fails_the_job_and_keeps_the_checkpoint(
    data_dir, tmp_path, monkeypatch
):
    """An out-of-memory error in a training step (injected: the CPU has no CUDA) ends the job
    with a message, the process goes on (a next job runs) and the last checkpoint still loads.
    There is no automatic retry with a lighter setting during training: see docs/reliability.md."""
    from studio.models.gan.dcgan import DCGAN

    real_step = DCGAN.train_step

    def oom_at_step_3(self, batch, ctx):
        if ctx.step == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, batch, ctx)

    monkeypatch.setattr(DCGAN, "train_step", oom_at_step_3)
    run = RunFolder(tmp_path / "run")
    out = run_sync(train_job(run.path, CancelToken(), _config(data_dir)))
    assert out.status is Status.FAILED and "out of memory" in out.error.lower()
    assert [p.name for p in ckpt.list_checkpoints(run.state_dir)] == ["step_00000002"]
    monkeypatch.undo()
    again = run_sync(train_job(run.path, CancelToken(), None))  # resume in the same process
    assert again.ok, again.error
    assert again.result.step == 4


# -- model files ------------------------------------------------------------------------------


def test_a_wrong_file_in_the_model_slot_is_named_in_one_sentence(tmp_path, capsys):
    """`studio generate --model` given a picture, a LoRA-like tensor file and a truncated
    header: each is one line naming the file, never a traceback, and no output is written."""
    picture = tmp_path / "photo.safetensors"
    Image.new("RGB", (8, 8)).save(picture, format="PNG")
    lora = tmp_path / "style-lora.safetensors"
    save_file({"lora_unet_down_blocks_0.lora_up.weight": torch.zeros(4, 2)}, str(lora))
    stub = tmp_path / "stub.safetensors"
    stub.write_bytes(struct.pack("<Q", 10_000) + b'{"a"')
    out = tmp_path / "o.png"
    for model in (picture, lora, stub):
        code = main(["generate", "--model", str(model), "--prompt", "x", "--steps", "2",
                     "--device", "cpu", "--out", str(out)])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 1, model
        assert model.name in err and "Traceback" not in err, err
        assert not out.exists()
