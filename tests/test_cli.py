"""The headless command line: train, resume, sample, data scan, help."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import make_tiny_dataset
from PIL import Image

from studio.cli.main import main
from studio.engine.runs import RunFolder

TINY = ["--set", "latent_dim=8", "--set", "width=8"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), n=24, size=16, classes=2)


def test_help_documents_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "sample", "data", "demo", "families", "runs", "inpaint", "compare"):
        assert command in text
    for command in ("train", "sample", "families", "inpaint"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--device" in capsys.readouterr().out


def test_train_resume_and_sample(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--family",
        "gan.dcgan",
        "--data",
        str(data_dir),
        "--resolution",
        "32",
        "--steps",
        "6",
        "--batch-size",
        "8",
        "--out",
        str(run),
        "--device",
        "cpu",
        *TINY,
    ]
    assert main(args) == 0
    assert "step 6/6" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--steps", "9"]) == 0
    assert "step 9/9" in capsys.readouterr().out
    steps = [r["step"] for r in RunFolder(run).read_metrics()[0] if "loss_d" in r]
    assert steps[-1] == 9 and steps == sorted(steps)

    grid = tmp_path / "grid.png"
    assert main(["sample", "--run", str(run), "-n", "4", "--seed", "5", "--out", str(grid)]) == 0
    img = np.asarray(Image.open(grid))
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 32

    out_dir = tmp_path / "each"
    assert (
        main(["sample", "--run", str(run), "-n", "3", "--seed", "5", "--out", f"{out_dir}/"]) == 0
    )
    files = sorted(out_dir.glob("*.png"))
    assert len(files) == 3 and Image.open(files[0]).size == (32, 32)
    # The same seed gives the same first image, in the grid and alone.
    assert np.array_equal(np.asarray(Image.open(files[0])), img[2:34, 2:34])


def test_scan_lists_skipped_files_and_fails_when_nothing_is_usable(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.md").write_text("hello")
    assert main(["data", "scan", str(folder)]) == 1
    err = capsys.readouterr()
    assert "empty.png: zero bytes" in err.out
    assert "notes.md: not an image" in err.out
    assert "error:" in err.err and "Traceback" not in err.err

    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "empty"),
                "--steps",
                "2",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    assert "empty" in capsys.readouterr().err.lower()


def test_bad_settings_and_unknown_family_are_refused_clearly(data_dir, tmp_path, capsys):
    assert (
        main(["train", "--data", str(data_dir), "--set", "nope=1", "--out", str(tmp_path / "r")])
        == 1
    )
    assert "NAME one of" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--data",
                str(data_dir),
                "--set",
                "latent_dim=1",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    assert "between 2 and 512" in capsys.readouterr().err
    assert main(["train", "--family", "gan.nope", "--data", str(data_dir)]) == 1
    assert "unknown family" in capsys.readouterr().err
    assert (
        main(["sample", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 1
    )
    assert "no run folder" in capsys.readouterr().err.lower()


def test_entry_point_runs_as_a_module(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "studio", "families"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "gan.dcgan" in out.stdout


def test_conditional_sampling_by_class_name(data_dir, tmp_path, capsys):
    run = tmp_path / "cgan"
    assert (
        main(
            [
                "train",
                "--family",
                "gan.cgan",
                "--data",
                str(data_dir),
                "--resolution",
                "32",
                "--steps",
                "2",
                "--batch-size",
                "8",
                "--out",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    out = tmp_path / "c1.png"
    assert (
        main(["sample", "--run", str(run), "-n", "2", "--class", "class_1", "--out", str(out)]) == 0
    )
    assert out.is_file()
    assert main(["sample", "--run", str(run), "-n", "2", "--class", "dog", "--out", str(out)]) == 1
    assert "classes: class_0, class_1" in capsys.readouterr().err


def test_a_conditional_model_on_unlabelled_images_says_what_to_do(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(flat / f"{i}.png")
    assert (
        main(
            [
                "train",
                "--family",
                "gan.cgan",
                "--data",
                str(flat),
                "--steps",
                "2",
                "--out",
                str(tmp_path / "r"),
                *TINY,
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "subfolder" in err and "Traceback" not in err


def test_demo_command_and_data_demo_reuse_the_same_dataset(tmp_path, capsys):
    assert main(["demo", "--count", "30"]) == 0
    assert "demo dataset ready" in capsys.readouterr().out
    assert main(["data", "scan", "demo"]) == 0
    assert "30 usable images" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--data",
                "demo",
                "--steps",
                "1",
                "--batch-size",
                "4",
                "--out",
                str(tmp_path / "r"),
                *TINY,
            ]
        )
        == 0
    )
    cfg = RunFolder(tmp_path / "r").read_config()
    assert cfg["dataset"]["images"] == 30


def test_train_refuses_a_non_empty_folder_that_is_not_a_run(data_dir, tmp_path, capsys):
    """Issue 15.3: --out into a folder of the user's files never overwrites or appends."""
    out = tmp_path / "mine"
    (out / "model").mkdir(parents=True)
    (out / "samples").mkdir()
    mine = {
        out / "model" / "model.safetensors": b"my weights",
        out / "samples" / "step_00000002.png": b"my picture",
        out / "metrics.jsonl": b"my notes\n",
    }
    for path, data in mine.items():
        path.write_bytes(data)
    args = [
        "train",
        "--data",
        str(data_dir),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--sample-every",
        "1",
        "--checkpoint-every",
        "1",
        "--out",
        str(out),
        *TINY,
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "not empty and is not a Studio run" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in mine} == mine
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "metrics.jsonl", "model", "model/model.safetensors", "samples",
        "samples/step_00000002.png",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--checkpoint-every", "0"], "checkpoint_every"),
        (["--log-every", "0"], "log_every"),
        (["--sample-every", "0"], "sample_every"),
        (["--batch-size", "0"], "batch_size"),
        (["--batch-size", "-3"], "batch_size"),
        (["--steps", "-5"], "steps"),
        (["--option", "accumulate=0"], "accumulate"),
        (["--set", "width=200000"], "width"),
    ],
)
def test_bad_train_options_are_refused_before_anything_is_written(
    data_dir, tmp_path, capsys, flags, named
):
    """Issue 15.10: a zero or negative option is one clear message, and no run folder."""
    out = tmp_path / "run"
    args = ["train", "--data", str(data_dir), "--out", str(out), *TINY, *flags]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert named in err and "must be" in err and "Traceback" not in err
    assert not out.exists()


def test_settings_read_back_from_a_run_folder_are_range_checked(data_dir, tmp_path, capsys):
    """Issue 15.10: an edited config.json or studio.json is refused with the setting named."""
    import json

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data_dir),
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--out",
                str(run),
                "--device",
                "cpu",
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    config_path = run / "config.json"
    original = config_path.read_text(encoding="utf-8")
    before = sorted(p.name for p in (run / "state").iterdir())

    assert main(["train", "--resume", str(run), "--steps", "-5"]) == 1
    assert "steps must be between 1 and" in capsys.readouterr().err

    for key, value, message in (
        ("checkpoint_every", 0, "checkpoint_every must be between 1 and"),
        ("batch_size", -3, "batch_size must be between 1 and 4096, not -3"),
        ("log_every", "ten", "log_every must be a whole number"),
    ):
        cfg = json.loads(original)
        cfg["train"][key] = value
        config_path.write_text(json.dumps(cfg), encoding="utf-8")
        assert main(["train", "--resume", str(run), "--steps", "4"]) == 1
        err = capsys.readouterr().err
        assert message in err and "config.json" in err and "Traceback" not in err

    cfg = json.loads(original)
    cfg["train"]["model"]["width"] = 200000
    config_path.write_text(json.dumps(cfg), encoding="utf-8")
    assert main(["train", "--resume", str(run), "--steps", "4"]) == 1
    err = capsys.readouterr().err
    assert "width must be between 8 and" in err and "200000" in err and "Traceback" not in err
    assert sorted(p.name for p in (run / "state").iterdir()) == before  # nothing trained

    studio_json = run / "model" / "studio.json"
    meta = json.loads(studio_json.read_text(encoding="utf-8"))
    meta["config"]["width"] = 200000
    studio_json.write_text(json.dumps(meta), encoding="utf-8")
    from studio.core.errors import StudioError
    from studio.models.registry import load_model

    with pytest.raises(StudioError, match="width must be between 8 and 256, not 200000"):
        load_model(run / "model")
    # Sampling falls back to the newest checkpoint, whose settings are intact.
    assert main(["sample", "--run", str(run), "-n", "1", "--out", str(tmp_path / "g.png")]) == 0
