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
    code = main(["generate", "--model", str(model), "--prompt", "a blue square",
                 "--negative", "red", "--steps", "2", "--width", "16", "--height", "24",
                 "--seed", "9", "--batch", "2", "--scheduler", "euler", "--device", "cpu",
                 "--out", str(out)])
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
    code = main(["generate", "--model", str(model), "--prompt", "a red circle", "--steps", "2",
                 "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                 "--mask-blur", "1", "--device", "cpu", "--out", str(tmp_path / "filled")])
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
    code = main(["generate", "--model", str(model), "--prompt", "x", "--steps", "2",
                 "--device", "cpu", "--out", str(tmp_path / "o.png"), *extra])
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_unknown_model_is_an_error(tmp_path, capsys):
    code = main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x",
                 "--out", str(tmp_path / "o.png")])
    assert code == 1 and "model library" in capsys.readouterr().err


def test_output_paths():
    assert output_paths("a/out.png", 1) == [Path("a/out.png")]
    assert output_paths("out", 2) == [Path("out-1.png"), Path("out-2.png")]
