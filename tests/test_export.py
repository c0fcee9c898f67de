"""``studio export``: the command's refusals (missing run, not a run, a target folder that is
not ours, a family without the format), the model card, both formats, and plain diffusers
reproducing the studio's samples bit for bit from the exported folders, in an interpreter that
never imports the studio."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_DIT, TINY_MODELS, make_tiny_dataset, train_tiny_run
from PIL import Image
from safetensors.torch import load_file

from studio.cli.main import main
from studio.core.errors import StudioError
from studio.core.jobs import run_sync
from studio.engine.device import cpu_generator
from studio.engine.export import MARKER, export_job
from studio.models.registry import get_family

DDPM, TEXT = "diffusion.ddpm", "diffusion.text"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("export_data"), n=8, size=16, classes=2)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    """A class-conditional DDPM trained two steps through the real job (a real config.json)."""
    return train_tiny_run(tmp_path_factory.mktemp("export_runs") / "ddpm", DDPM, data_dir)


def hand_made_run(folder: Path, key: str, grid: bool = True, **settings) -> tuple[Path, object]:
    """A run folder holding a model with random (perturbed) EMA weights, so samples are not
    the fresh networks' trivial ones; its config.json as training writes it, in short."""
    family = get_family(key)
    torch.manual_seed(0)
    model = family(family.Config.from_dict({**TINY_MODELS[key], "resolution": 16, **settings}))
    g = torch.Generator().manual_seed(1)
    ema = model.ema_unet if hasattr(model, "ema_unet") else model.ema
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval().save(folder / "model")
    nc = getattr(model.config, "num_classes", 0)
    config = {
        "family": key,
        "train": {"family": key, "steps": 0, "seed": 0},
        "model": model.config.to_dict(),
        "dataset": {"path": "/pictures", "fingerprint": "f" * 64, "images": 8,
                    "class_names": [f"kind{i}" for i in range(nc)]},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if grid:
        (folder / "samples").mkdir()
        Image.new("RGB", (8, 8)).save(folder / "samples" / "step_00000000.png")
    return folder, model


def export(run, fmt, out):
    outcome = run_sync(export_job(run, fmt, out, "cpu"))
    if not outcome.ok:
        raise StudioError(outcome.error)
    return outcome.result


# -- refusals ------------------------------------------------------------------------------------


def test_cli_refuses_a_missing_run_a_folder_that_is_not_a_run_and_a_target_not_ours(
    tmp_path, data_dir, trained_run, capsys
):
    def refused(*argv) -> str:
        assert main(["export", *map(str, argv), "--device", "cpu"]) == 1
        return capsys.readouterr().err

    assert "There is no run folder at" in refused(tmp_path / "nope", "--format", "diffusers", "o")
    assert "no config.json" in refused(data_dir, "--format", "diffusers", tmp_path / "o")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    err = refused(trained_run, "--format", "diffusers", foreign)
    assert "is not empty and is not a Studio export" in err
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert "is not a folder" in refused(trained_run, "--format", "safetensors", tmp_path / "file")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_a_family_without_the_format_says_so_before_loading(tmp_path, monkeypatch, capsys):
    run = tmp_path / "gan"
    run.mkdir()  # no weights at all: the format is checked first
    (run / "config.json").write_text(json.dumps({"family": "gan.dcgan"}), encoding="utf-8")
    assert main(["export", str(run), "--format", "diffusers", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "cannot be exported as diffusers: they export as safetensors" in err
    monkeypatch.setattr(get_family("gan.dcgan"), "export_formats", ())
    assert main(["export", str(run), "--format", "safetensors", str(tmp_path / "o")]) == 1
    assert "DCGAN runs (gan.dcgan) cannot be exported." in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- the card and the formats -------------------------------------------------------------------


def test_the_model_card_lists_settings_dataset_step_and_grid(tmp_path, trained_run):
    out = tmp_path / "exported"
    result = export(trained_run, "diffusers", out)
    card = (out / "README.md").read_text(encoding="utf-8")
    config = json.loads((trained_run / "config.json").read_text(encoding="utf-8"))
    for name, value in config["model"].items():
        assert f"| {name} | `{json.dumps(value) if not isinstance(value, str) else value}` |" in (
            card
        ), name
    for name in ("batch_size", "seed", "steps", "resolution"):
        assert f"| {name} |" in card
    assert config["dataset"]["fingerprint"] in card
    assert "at step 2." in card and result.step == 2
    assert "![Samples](samples.png)" in card and (out / "samples.png").is_file()
    assert "class_0, class_1" in card
    assert json.loads((out / "training.json").read_text(encoding="utf-8")) == config
    classes = json.loads((out / "class_names.json").read_text(encoding="utf-8"))
    assert classes["class_names"] == ["class_0", "class_1"] and classes["null_class"] == 2
    index = json.loads((out / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == "DDPMPipeline" and index["unet"][1] == "UNet2DModel"
    assert not (out / "unet_raw").exists() and not (out / "studio.json").exists()
    # The weights are the EMA copy's.
    from studio.engine.sample import load_run_model

    model = load_run_model(trained_run, "cpu")
    saved = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    for name, tensor in model.ema_unet.state_dict().items():
        assert torch.equal(saved[name], tensor), name


def test_re_export_replaces_only_an_unchanged_export_of_ours(tmp_path, trained_run):
    out = tmp_path / "exported"
    export(trained_run, "safetensors", out)
    marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    assert set(marker["files"]) == {p.relative_to(out).as_posix() for p in out.rglob("*")
                                    if p.is_file() and p.name != MARKER}  # fmt: skip
    assert export(trained_run, "diffusers", out).replaced
    assert (out / "unet").is_dir() and not (out / "model.safetensors").exists()
    (out / "mine.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(StudioError, match="mine.txt in it was not written by the export"):
        export(trained_run, "diffusers", out)
    (out / "mine.txt").unlink()
    with open(out / "README.md", "a", encoding="utf-8") as fh:
        fh.write("my notes\n")
    with pytest.raises(StudioError, match="README.md was changed since"):
        export(trained_run, "diffusers", out)
    assert (out / "README.md").read_text(encoding="utf-8").endswith("my notes\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no temp folders left


def test_safetensors_format_one_file_and_its_config(tmp_path, trained_run):
    out = tmp_path / "single"
    export(trained_run, "safetensors", out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, "README.md", "config.json", "model.safetensors", "samples.png", "training.json"]
    )
    from studio.engine.sample import load_run_model

    model = load_run_model(trained_run, "cpu")
    weights = load_file(str(out / "model.safetensors"))
    ema = model.ema_unet.state_dict()
    assert set(weights) == {f"unet.{k}" for k in ema}
    assert all(torch.equal(weights[f"unet.{k}"], v) for k, v in ema.items())
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["network"]["class"] == "UNet2DModel"
    assert config["classes"]["null_class"] == 2 and config["scheduler"]["num_train_timesteps"]
    import diffusers

    net = diffusers.UNet2DModel.from_config(config["network"]["config"])
    net.load_state_dict({k[5:]: v for k, v in weights.items()})


def test_any_family_exports_its_state_dict_as_safetensors(tmp_path):
    family = get_family("gan.dcgan")
    torch.manual_seed(0)
    model = family(family.Config.from_dict({**TINY_MODELS["gan.dcgan"], "resolution": 16}))
    run = tmp_path / "gan"
    model.save(run / "model")
    config = {"family": "gan.dcgan", "model": model.config.to_dict(), "train": {}}
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    out = tmp_path / "single"
    result = export(run, "safetensors", out)
    assert result.step is None and "drawn for this card" in result.grid  # a fresh grid
    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == set(model.state_dict())
    described = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert described["family"] == "gan.dcgan" and described["config"] == model.config.to_dict()
    assert "What does not carry over" in (out / "README.md").read_text(encoding="utf-8")


# -- plain diffusers, no studio: the same images ---------------------------------------------------

PLAIN = textwrap.dedent(
    """
    import json, os, re, sys
    import numpy as np
    import torch
    from safetensors.torch import save_file
    torch.set_num_threads(1)
    for folder in sys.argv[1:]:
        card = open(f"{folder}/README.md", encoding="utf-8").read()
        code = re.search(r"```python\\n(.*?)```", card, re.S).group(1)
        code = code.replace("path/to/this/folder", folder)
        code = code.split("# or diffusers' own pipeline")[0]
        assert "n, steps, seed = 4, 50, 0" in code
        code = code.replace("n, steps, seed = 4, 50, 0", "n, steps, seed = 2, 8, 0")  # quicker
        space = {}
        exec(code, space)  # the card's own loop, as a user would run it
        out = {"images": space["images"].contiguous(), "x": space["x"].clamp(-1, 1)}
        index = f"{folder}/model_index.json"
        if os.path.exists(index) and json.load(open(index))["_class_name"] == "DDPMPipeline":
            from diffusers import DDPMPipeline
            pipe = DDPMPipeline.from_pretrained(folder)
            pipe.set_progress_bar_config(disable=True)
            if pipe.unet.config.num_class_embeds is None:  # it samples unconditional models
                g = torch.Generator().manual_seed(3)
                got = pipe(batch_size=2, generator=g, num_inference_steps=5, output_type="np")
                out["pipeline"] = torch.from_numpy(got.images).contiguous()
        if os.path.exists(index) and json.load(open(index))["_class_name"] == "DiTPipeline":
            from diffusers import DiffusionPipeline
            pipe = DiffusionPipeline.from_pretrained(folder, vae=None)  # as the card says
            assert type(pipe.transformer).__name__ == "DiTTransformer2DModel"
        save_file(out, f"{folder}/plain.safetensors")
    assert not any(m == "studio" or m.startswith("studio.") for m in sys.modules), "studio!"
    """
)

CASES = {
    "unet": (DDPM, {}),
    "unet_classes": (DDPM, {"num_classes": 2}),
    "dit": (DDPM, TINY_DIT),
    "dit_classes": (DDPM, {**TINY_DIT, "num_classes": 2}),
    "text": (TEXT, {"vocab": "a caption red fox"}),
    "text_dit": (TEXT, {**TINY_DIT, "vocab": "a caption red fox"}),
}


def _studio_sample(model, key: str) -> torch.Tensor:
    """The studio's DDIM sampler, as `studio sample --sampler ddim --steps 8 -n 2 --seed 0`
    (labels cycling through the classes; the caption model with the card's prompt)."""
    extra = {"prompt": "a caption"} if key == TEXT else {}
    with torch.no_grad():
        return model.sample(2, cpu_generator(0), sampler="ddim", steps=8, **extra)


def test_plain_diffusers_samples_the_export_bit_for_bit(tmp_path):
    ours, folders = {}, []
    for name, (key, settings) in CASES.items():
        run, model = hand_made_run(tmp_path / f"run_{name}", key, **settings)
        export(run, "diffusers", tmp_path / name)
        folders.append(str(tmp_path / name))
        ours[name] = _studio_sample(model, key)
        if name == "unet":  # diffusers' DDPMPipeline against the studio's DDPM sampler
            with torch.no_grad():
                chain = model.sample(2, cpu_generator(3), sampler="ddpm", steps=5)
            ours["pipeline"] = (chain / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    script = tmp_path / "plain.py"
    script.write_text(PLAIN, encoding="utf-8")
    proc = subprocess.run(  # one interpreter for every case: importing diffusers is slow
        [sys.executable, str(script), *folders],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, x in ours.items():
        if name == "pipeline":
            continue
        plain = load_file(str(tmp_path / name / "plain.safetensors"))
        assert x.std() > 0.05, name  # real samples, not a constant
        assert torch.equal(plain["x"], x), (name, (plain["x"] - x).abs().max())
        studio_images = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        assert np.array_equal(plain["images"].numpy(), studio_images.numpy()), name
    piped = load_file(str(tmp_path / "unet" / "plain.safetensors"))["pipeline"]
    assert torch.equal(piped, ours["pipeline"].float())


def test_a_family_saved_as_a_diffusers_folder_can_export_that_layout(tmp_path):
    """The helper a family whose model folder is a full diffusers layout (latent diffusion)
    exports with: the saved folder without studio.json and the names it skips."""
    from studio.models.export import export_saved_layout

    _, model = hand_made_run(tmp_path / "run", DDPM, grid=False)
    (tmp_path / "out").mkdir()
    copied = export_saved_layout(model, tmp_path / "out", skip=("unet_raw",))
    assert copied == ["model_index.json", "scheduler", "unet"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == copied
    saved = load_file(str(tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in model.ema_unet.state_dict().items())


def test_a_failure_mid_export_leaves_nothing_behind(tmp_path, trained_run, monkeypatch):
    out = tmp_path / "exported"
    export(trained_run, "safetensors", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(self, folder, fmt, context):
        (folder / "half.bin").write_bytes(b"x")
        raise OSError("No space left on device")

    monkeypatch.setattr(get_family(DDPM), "export_files", broken)
    with pytest.raises(StudioError, match="No space left"):
        export(trained_run, "diffusers", out)  # over an earlier export: it stays as it was
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(StudioError, match="No space left"):
        export(trained_run, "diffusers", tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


def test_a_class_conditional_run_keeps_its_class_names_beside_the_weights(trained_run):
    """The run's own model/ folder, not only an export, names the classes and the null class
    (docs: "Leaving the studio")."""
    record = json.loads((trained_run / "model" / "class_names.json").read_text(encoding="utf-8"))
    assert record["class_names"] == ["class_0", "class_1"] and record["null_class"] == 2
