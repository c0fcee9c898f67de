"""`studio train` under torchrun: two CPU processes (gloo) stay in sync; one run folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from helpers import make_tiny_dataset
from safetensors.torch import load_file

from studio.engine import checkpoint as ckpt
from studio.engine.runs import RunFolder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(240)
def test_two_gloo_processes_train_in_sync_and_write_one_checkpoint(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=32, size=16, classes=2)
    run = tmp_path / "run"
    digests = tmp_path / "digests"
    digests.mkdir()
    # A tiny launcher script: run the CLI, then write this rank's parameter digest.
    script = tmp_path / "rank.py"
    script.write_text(
        "import hashlib, os, sys\n"
        "import torch\n"
        "from studio.cli.main import main\n"
        "import studio.engine.train as t\n"
        "real_build = t.build_model\n"
        "models = []\n"
        "def build(*a, **k):\n"
        "    m = real_build(*a, **k)\n"
        "    models.append(m)\n"
        "    return m\n"
        "t.build_model = build\n"
        "code = main(sys.argv[1:])\n"
        "h = hashlib.sha256()\n"
        "for k, v in sorted(models[0].state_dict().items()):\n"
        "    h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())\n"
        f"open(os.path.join({str(digests)!r}, os.environ['RANK']), 'w').write(h.hexdigest())\n"
        "sys.exit(code)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", STUDIO_HOME=str(tmp_path / "home"))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        "train",
        "--family",
        "gan.dcgan",
        "--data",
        str(data),
        "--resolution",
        "32",
        "--steps",
        "6",
        "--batch-size",
        "8",
        "--checkpoint-every",
        "3",
        "--log-every",
        "1",
        "--sample-every",
        "3",
        "--out",
        str(run),
        "--device",
        "cpu",
        "--set",
        "latent_dim=8",
        "--set",
        "width=8",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=220)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Both ranks hold identical weights (BatchNorm statistics included) at the end.
    d0, d1 = (digests / "0").read_text(), (digests / "1").read_text()
    assert d0 == d1
    folder = RunFolder(run)
    assert json.loads(folder.config_path.read_text())["world_size"] == 2
    # One run folder, written once: every metric step once, checkpoints complete.
    steps = [r["step"] for r in folder.read_metrics()[0] if "loss_d" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    names = [p.name for p in ckpt.list_checkpoints(folder.state_dir)]
    assert names == ["step_00000003", "step_00000006"]
    assert not [p for p in folder.state_dir.iterdir() if p.name.startswith(".")]
    weights = load_file(str(ckpt.latest_checkpoint(folder.state_dir) / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


@pytest.mark.timeout(240)
def test_without_out_every_rank_reports_rank_0s_run_folder(tmp_path):
    """Each rank names a new run from its own clock; rank 0's name is the one used."""
    data = make_tiny_dataset(tmp_path / "data", n=16, size=16, classes=2)
    home = tmp_path / "home"
    script = tmp_path / "rank.py"
    script.write_text(  # rank 1's clock reads another second than rank 0's
        "import os, sys\n"
        "import studio.engine.runs as runs\n"
        "from studio.cli.main import main\n"
        "real = runs.new_run_path\n"
        "if os.environ['RANK'] == '1':\n"
        "    runs.new_run_path = lambda base, family, name=None: real(base, family, 'rank-1-clock')\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", STUDIO_HOME=str(home))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script),
        "train", "--family", "gan.dcgan", "--data", str(data), "--resolution", "32",
        "--steps", "2", "--batch-size", "4", "--checkpoint-every", "2", "--log-every", "1",
        "--sample-every", "2", "--device", "cpu", "--set", "latent_dim=8", "--set", "width=8",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=220)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reported = {
        line.rsplit("run folder ", 1)[1]
        for line in proc.stdout.splitlines()
        if "run folder " in line
    }
    runs = [p for p in (home / "runs").iterdir()] if (home / "runs").is_dir() else []
    assert len(runs) == 1 and "rank-1-clock" not in runs[0].name, runs
    assert reported == {str(runs[0])}, proc.stdout[-2000:]
    assert RunFolder(runs[0]).exists()
