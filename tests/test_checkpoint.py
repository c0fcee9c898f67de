"""Checkpoints: exact round trips, atomicity under failure, verification and rotation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from studio.core.errors import CheckpointError
from studio.engine import checkpoint as ckpt
from studio.models.base import Batch, StepContext
from studio.models.gan.dcgan import DCGAN, DCGANConfig


def tiny_gan(seed: int = 0) -> DCGAN:
    torch.manual_seed(seed)
    model = DCGAN(DCGANConfig(resolution=8, latent_dim=4, width=4))
    model.configure_optimizers()
    return model


def train_a_step(model: DCGAN, step: int) -> None:
    gen = torch.Generator().manual_seed(step)
    images = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    model.train_step(Batch(images), StepContext(step=step, generator=gen))


def test_round_trip_restores_weights_and_optimizer_state_exactly(tmp_path):
    model = tiny_gan()
    for s in range(3):
        train_a_step(model, s)
    folder = ckpt.save_checkpoint(tmp_path, model, 3, {"note": "x"})
    assert folder.name == "step_00000003"
    assert ckpt.is_complete(folder, verify_hashes=True)

    other = tiny_gan(seed=1)
    meta = ckpt.load_checkpoint(folder, other)
    assert meta["step"] == 3 and meta["trainer"] == {"note": "x"}
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k
    # The next step is identical too: optimizer moments and step counts came back.
    train_a_step(model, 3)
    train_a_step(other, 3)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_only_safetensors_and_json_are_written(tmp_path):
    folder = ckpt.save_checkpoint(tmp_path, tiny_gan(), 1, {})
    suffixes = {p.suffix for p in folder.iterdir()}
    assert suffixes <= {".safetensors", ".json"}


def test_an_exception_during_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = tiny_gan()
    first = ckpt.save_checkpoint(tmp_path, model, 1, {})
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    train_a_step(model, 1)

    calls = {"n": 0}
    real_save = ckpt.save_file

    def failing_save(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", failing_save)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, model, 2, {})
    assert ckpt.latest_checkpoint(tmp_path) == first
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001"]  # no partial folder left


def test_resume_picks_the_latest_complete_checkpoint(tmp_path):
    model = tiny_gan()
    ckpt.save_checkpoint(tmp_path, model, 1, {}, keep=5)
    second = ckpt.save_checkpoint(tmp_path, model, 2, {}, keep=5)
    third = ckpt.save_checkpoint(tmp_path, model, 3, {}, keep=5)
    (third / ckpt.MANIFEST).unlink()  # as if the process died before the manifest
    assert ckpt.latest_checkpoint(tmp_path) == second
    # A corrupt weights file fails verification with a clear error.
    data = bytearray((second / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (second / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        ckpt.load_checkpoint(second, tiny_gan())


def test_rotation_keeps_the_newest_and_never_zero(tmp_path):
    model = tiny_gan()
    for s in range(1, 6):
        ckpt.save_checkpoint(tmp_path, model, s, {}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004", "step_00000005"]
    ckpt.rotate(tmp_path, keep=0)
    assert len(ckpt.list_checkpoints(tmp_path)) == 1


def test_a_checkpoint_of_another_model_is_refused_clearly(tmp_path):
    folder = ckpt.save_checkpoint(tmp_path, tiny_gan(), 1, {})
    bigger = DCGAN(DCGANConfig(resolution=8, latent_dim=8, width=4))
    bigger.configure_optimizers()
    with pytest.raises(CheckpointError, match="does not fit"):
        ckpt.load_checkpoint(folder, bigger)


def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    """A real SIGKILL in the middle of writing: the old checkpoint still loads."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_checkpoint import tiny_gan, train_a_step
        from studio.engine import checkpoint as ckpt
        model = tiny_gan()
        ckpt.save_checkpoint(__import__('pathlib').Path({str(tmp_path)!r}), model, 1, {{}})
        print('saved', flush=True)
        real = ckpt.save_file
        def killer(tensors, path, *a, **k):
            real(tensors, path, *a, **k)
            if 'optim' in str(path):
                os.kill(os.getpid(), signal.SIGKILL)
        ckpt.save_file = killer
        train_a_step(model, 1)
        ckpt.save_checkpoint(__import__('pathlib').Path({str(tmp_path)!r}), model, 2, {{}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "saved" in proc.stdout
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step_00000001"
    ckpt.load_checkpoint(latest, tiny_gan())
    # The next save cleans the leftover partial folder and succeeds.
    ckpt.save_checkpoint(tmp_path, tiny_gan(), 2, {})
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000002"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_trainer_json_is_plain_json(tmp_path):
    folder = ckpt.save_checkpoint(tmp_path, tiny_gan(), 7, {"throughput": 1.5})
    meta = json.loads((folder / "trainer.json").read_text())
    assert meta["family"] == "gan.dcgan" and meta["step"] == 7
    assert os.path.getsize(folder / "rng.safetensors") > 0


def modes_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_saved_files_and_folders_get_ordinary_permissions(tmp_path, mask):
    """Checkpoints, saved models (diffusers' save_pretrained output included) and PNGs: files
    0666 & ~umask and folders 0777 & ~umask, as an ordinary write gives, never 0600."""
    import numpy as np
    from helpers import tiny_model

    from studio.engine.prompt.pngmeta import write_png
    from studio.engine.train import save_png

    old = os.umask(mask)
    try:
        model = tiny_gan()
        ckpt.save_checkpoint(tmp_path / "state", model, 1, {})
        model.save(tmp_path / "model")
        tiny_model("diffusion.ddpm", resolution=8).save(tmp_path / "ddpm")
        save_png(tmp_path / "samples" / "grid.png", np.zeros((8, 8, 3), np.uint8))
        write_png(tmp_path / "outputs" / "image.png", np.zeros((8, 8, 3), np.uint8), {"seed": 1})
    finally:
        os.umask(old)
    modes = modes_under(tmp_path)
    assert (
        "ddpm/unet/diffusion_pytorch_model.safetensors" in modes
        and "ddpm/model_index.json" in modes
    )
    wrong = {
        name: oct(mode) for name, mode in modes.items()
        if mode != (0o777 if (tmp_path / name).is_dir() else 0o666) & ~mask
    }  # fmt: skip
    assert not wrong


def test_load_latest_falls_back_past_corrupt_incomplete_and_non_finite_checkpoints(tmp_path):
    model = tiny_gan()
    for s in range(1, 5):
        ckpt.save_checkpoint(tmp_path, model, s, {}, keep=5)
    # step 4: one flipped byte; step 3: no manifest; step 2: NaN weights with a valid manifest
    # (as a version that did not check them could write).
    data = bytearray((tmp_path / "step_00000004" / "optim_d.safetensors").read_bytes())
    data[-3] ^= 0x10
    (tmp_path / "step_00000004" / "optim_d.safetensors").write_bytes(bytes(data))
    (tmp_path / "step_00000003" / ckpt.MANIFEST).unlink()
    two = tmp_path / "step_00000002"
    weights = ckpt.load_file(str(two / "model.safetensors"))
    name = next(k for k in weights if k.endswith("running_var"))
    weights[name][0] = float("nan")
    ckpt.save_file(weights, str(two / "model.safetensors"))
    manifest = json.loads((two / ckpt.MANIFEST).read_text())
    manifest["files"]["model.safetensors"] = {
        "size": (two / "model.safetensors").stat().st_size,
        "sha256": ckpt._sha256(two / "model.safetensors"),
    }
    (two / ckpt.MANIFEST).write_text(json.dumps(manifest))

    other = tiny_gan(seed=1)
    meta, skipped = ckpt.load_latest(tmp_path, other)
    assert meta["step"] == 1
    assert skipped == [
        "Skipped checkpoint step_00000004 is corrupt (optim_d.safetensors does not match its "
        "checksum); resuming from step_00000001.",
        "Skipped checkpoint step_00000003 is incomplete (no manifest: the save did not finish); "
        "resuming from step_00000001.",
        f"Skipped checkpoint step_00000002 is not finite (NaN or infinite values in {name}); "
        "resuming from step_00000001.",
    ]
    assert ckpt.load_latest(tmp_path / "none", other) == (None, [])
