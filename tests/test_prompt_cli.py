"""``studio generate`` end to end with a tiny random Stable Diffusion pipeline (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prompt_fixtures import build_tiny_sd

from studio.cli.generate import output_paths
from studio.cli.main import main
from studio.engine.prompt.pngmeta import read_png_metadata
from studio.engine.prompt.request import GenerateRequest

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd") / "sd")


def test_generate_writes_pngs_with_metadata(model, tmp_path, capsys):
    out = tmp_path / "out.png"
    code = main(
        [
            "generate",
            "--model",
            str(model),
            "--prompt",
            "a blue square",
            "--negative",
            "red",
            "--steps",
            "2",
            "--width",
            "16",
            "--height",
            "24",
            "--seed",
            "9",
            "--batch",
            "2",
            "--scheduler",
            "euler",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    paths = [tmp_path / "out-1.png", tmp_path / "out-2.png"]
    assert f"wrote {paths[0]}" in capsys.readouterr().out
    metas = [read_png_metadata(p) for p in paths]
    assert [m["seed"] for m in metas] == [9, 10]
    assert metas[0]["prompt"] == "a blue square" and metas[0]["negative_prompt"] == "red"
    assert metas[0]["scheduler"] == "euler" and metas[0]["mode"] == "txt2img"
    with Image.open(paths[0]) as img:
        assert img.size == (16, 24)
    # The metadata is a complete request: it restores the settings of that image.
    again = GenerateRequest.from_metadata(metas[1])
    assert (again.seed, again.width, again.height, again.steps) == (10, 16, 24, 2)


def test_generate_inpaint_from_files(model, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    mask = np.zeros((20, 20), np.uint8)
    mask[4:10, 4:10] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    code = main(
        [
            "generate",
            "--model",
            str(model),
            "--prompt",
            "a red circle",
            "--steps",
            "2",
            "--image",
            str(tmp_path / "in.png"),
            "--mask",
            str(tmp_path / "mask.png"),
            "--mask-blur",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "filled"),
        ]
    )
    assert code == 0
    meta = read_png_metadata(tmp_path / "filled.png")
    assert meta["mode"] == "inpaint" and (meta["width"], meta["height"]) == (24, 24)
    with Image.open(tmp_path / "filled.png") as img:
        result = np.asarray(img.convert("RGB"))
    assert result.shape == (20, 20, 3)
    assert np.array_equal(result[14:], image[14:])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--width", "30"], "multiple of 8"),
        (["--mask", "m.png"], "--mask needs --image"),
        (["--image", "missing.png"], "cannot read the image"),
    ],
)
def test_generate_errors_are_clear_and_nonzero(model, tmp_path, capsys, extra, message):
    code = main(
        [
            "generate",
            "--model",
            str(model),
            "--prompt",
            "x",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "o.png"),
            *extra,
        ]
    )
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_unknown_model_is_an_error(tmp_path, capsys):
    code = main(
        [
            "generate",
            "--model",
            str(tmp_path / "nope"),
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "o.png"),
        ]
    )
    assert code == 1 and "model library" in capsys.readouterr().err


def test_output_paths():
    assert output_paths("a/out.png", 1) == [Path("a/out.png")]
    assert output_paths("out", 2) == [Path("out-1.png"), Path("out-2.png")]


def test_generate_takes_a_seed_beyond_32_bits_and_writes_it_as_a1111_does(model, tmp_path):
    out = tmp_path / "big.png"
    code = main(
        [
            "generate",
            "--model",
            str(model),
            "--prompt",
            "a fox, at dawn",
            "--steps",
            "2",
            "--width",
            "16",
            "--height",
            "16",
            "--seed",
            "3000000000",
            "--scheduler",
            "euler_a",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert read_png_metadata(out)["seed"] == 3_000_000_000
    with Image.open(out) as img:
        text = img.text["parameters"]
    assert text.startswith("a fox, at dawn\n")
    assert "Sampler: Euler a, " in text and "Seed: 3000000000, " in text


def test_generate_settings_from_an_a1111_png_say_what_was_not_restored(model, tmp_path, capsys):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        (
            "a castle\nNegative prompt: blurry\n"
            "Steps: 2, Sampler: DPM++ SDE Karras, CFG scale: 3.5, Seed: 4000000000, Size: 16x24, "
            f'Model: {model.name}, ControlNet 0: "Module: canny, Model: cn, Weight: 1", '
            "Version: v1.9.4"
        ),
    )
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    out = tmp_path / "again.png"
    code = main(
        [
            "generate",
            "--settings-from",
            str(tmp_path / "a1111.png"),
            "--model",
            str(model),
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "not restored from a1111.png: Sampler: DPM++ SDE Karras (not available here)" in err
    assert "not restored from a1111.png: ControlNet 0: Module: canny" in err
    meta = read_png_metadata(out)
    assert (meta["prompt"], meta["negative_prompt"], meta["seed"]) == ("a castle", "blurry", 4e9)
    assert (meta["steps"], meta["guidance"], meta["width"], meta["height"]) == (2, 3.5, 16, 24)
    # Without --settings-from, --model and --prompt are needed.
    assert main(["generate", "--model", str(model), "--out", str(out)]) == 1
    assert "--prompt is needed" in capsys.readouterr().err
