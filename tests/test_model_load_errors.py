"""A model that cannot work is refused when it is loaded, in one sentence, from the command line
and the library alike: weights holding NaN (Stable Diffusion folders and files, Studio runs), a
pickled weights file in a folder that needs code, a checkpoint without its text encoder, and
safetensors headers too large, too many or too deep to be real."""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import tempfile
import tracemalloc
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_dataset, train_tiny_run
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_fixtures import (
    build_tiny_sd,
    config_only_copy,
    original_layout_state_dict,
    write_pickle_bomb,
)
from safetensors.torch import load_file, save_file

from studio.cli.main import main
from studio.core.errors import StudioError
from studio.engine.prompt import files
from studio.engine.prompt.loading import load_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def _generate(model: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "generate",
            "--model",
            str(model),
            "--prompt",
            "a red circle",
            "--steps",
            "1",
            "--width",
            "16",
            "--height",
            "16",
            "--device",
            "cpu",
            "--out",
            str(out),
            *extra,
        ]
    )


def _one_sentence(err: str) -> str:
    assert "Traceback" not in err and "weights_only=False" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# -- NaN weights ------------------------------------------------------------------------------------


def _poison(path: Path, name: str) -> None:
    tensors = load_file(str(path))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(path))


def test_a_folder_with_nan_weights_is_refused_at_load_naming_them(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "nan-sd")
    _poison(folder / "unet" / "diffusion_pytorch_model.safetensors", "conv_in.weight")
    with pytest.raises(StudioError, match=r"not finite .*unet\.conv_in\.weight"):
        load_pipeline(folder, "txt2img")
    out = tmp_path / "out.png"
    assert _generate(folder, out) == 1
    line = _one_sentence(capsys.readouterr().err)
    assert "unet.conv_in.weight" in line and "fp16" not in line
    assert not out.exists()


def test_a_single_file_with_nan_weights_is_refused_at_load(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tensors = {k: v.contiguous() for k, v in original_layout_state_dict(tiny_sd).items()}
    name = "first_stage_model.decoder.conv_out.bias"
    tensors[name] = torch.full_like(tensors[name], float("inf"))
    file = tmp_path / "broken.safetensors"
    save_file(tensors, str(file))
    config_only_copy(tiny_sd, tmp_path / "broken")
    out = tmp_path / "out.png"
    assert _generate(file, out) == 1
    line = _one_sentence(capsys.readouterr().err)
    assert "not finite" in line and "vae.decoder.conv_out.bias" in line
    assert not out.exists()


def test_a_run_with_nan_weights_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_tiny_dataset(tmp_path / "data", n=8)
    run = train_tiny_run(tmp_path / "run", "gan.dcgan", data)
    weights = run / "model" / "model.safetensors"
    name = sorted(load_file(str(weights)))[0]
    _poison(weights, name)
    grid = tmp_path / "grid.png"
    assert main(["sample", "--run", str(run), "-n", "4", "--out", str(grid)]) == 1
    line = _one_sentence(capsys.readouterr().err)
    assert "not finite" in line and name in line
    assert not grid.exists()


# -- pickles and missing parts ------------------------------------------------------------------


def test_a_pickled_bin_that_needs_code_is_one_sentence(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "bin-sd")
    (folder / "text_encoder" / "model.safetensors").unlink()
    canary = tmp_path / "canary"
    write_pickle_bomb(folder / "text_encoder" / "pytorch_model.bin", canary)
    out = tmp_path / "out.png"
    assert _generate(folder, out, "--allow-pickle") == 1
    line = _one_sentence(capsys.readouterr().err)
    assert "text_encoder/pytorch_model.bin needs code to load" in line
    assert not canary.exists() and not out.exists()
    with pytest.raises(files.UnsafeModelError, match="pytorch_model.bin needs code to load"):
        load_pipeline(folder, "txt2img", allow_pickle=True)
    assert not canary.exists()


def test_a_checkpoint_without_its_text_encoder_is_one_sentence(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tensors = original_layout_state_dict(tiny_sd)
    kept = {k: v.contiguous() for k, v in tensors.items() if not k.startswith("cond_stage_model")}
    file = tmp_path / "no-text.safetensors"
    save_file(kept, str(file))
    config_only_copy(tiny_sd, tmp_path / "no-text")
    out = tmp_path / "out.png"
    assert _generate(file, out) == 1
    line = _one_sentence(capsys.readouterr().err)
    assert "does not hold the weights of its text encoder" in line
    assert not out.exists()


# -- safetensors headers ------------------------------------------------------------------------


def _header_file(path: Path, raw: bytes, data: int = 0) -> Path:
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data)
    return path


def test_a_header_over_the_safetensors_limit_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    n = 100_000_001  # one byte over the safetensors library's limit
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", n) + b"{")
        fh.truncate(8 + n)  # sparse: nothing real is written
    tracemalloc.start()
    try:
        with pytest.raises(
            files.CorruptModelFile, match="more than the 100,000,000 the safetensors"
        ):
            files.read_safetensors_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # refused from its length alone: the 100 MB header was never read


def test_a_header_with_too_many_tensors_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    n = files.MAX_TENSORS + 10  # (the exact bound is checked again after parsing)
    entries = ",".join(
        f'"t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}' for i in range(n)
    )
    path = _header_file(tmp_path / "many.safetensors", f"{{{entries}}}".encode(), data=n)

    def never(*_a: object, **_k: object) -> None:
        raise AssertionError("the header was parsed before its tensors were counted")

    with monkeypatch.context() as patch:  # counted on the raw bytes, before any parsing
        patch.setattr(files.json, "loads", never)
        with pytest.raises(files.CorruptModelFile, match="more than 50,000 tensors"):
            files.read_safetensors_header(path)
    assert _generate(path, tmp_path / "o.png") == 1
    assert "more than 50,000 tensors" in _one_sentence(capsys.readouterr().err)


@pytest.mark.parametrize("where", ["tensor", "metadata"])
def test_a_deeply_nested_header_is_refused_without_recursion_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    header = {"a": "DEEP"} if where == "tensor" else {"__metadata__": {"k": "DEEP"}}
    raw = json.dumps(header).replace('"DEEP"', deep).encode()
    path = _header_file(tmp_path / "deep.safetensors", raw)
    with pytest.raises(files.CorruptModelFile, match="nests too deeply"):
        files.read_safetensors_header(path)
    assert _generate(path, tmp_path / "o.png") == 1
    assert "nests too deeply" in _one_sentence(capsys.readouterr().err)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=8)
    | st.sampled_from(["F32", "U8", "BF16", "dtype", "shape", "data_offsets", "__metadata__"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    header=st.one_of(
        st.binary(max_size=120),
        _JSON.map(lambda v: json.dumps(v).encode()),
        st.integers(0, 20_000).map(lambda d: b'{"a":' + b"[" * d + b"]" * d + b"}"),
    ),
    data=st.integers(0, 64),
    claimed=st.sampled_from([None, 0, 7, 2**63 - 1]),
)
def test_any_header_is_read_or_refused_with_a_message(
    header: bytes, data: int, claimed: int | None
) -> None:
    # Found by fuzzing once: a nested header raised RecursionError. Now every header either
    # reads or fails with a ModelFileError, the exception the CLI and the window turn into a line.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.safetensors"
        length = len(header) if claimed is None else claimed
        path.write_bytes(struct.pack("<Q", length) + header + bytes(data))
        with contextlib.suppress(files.ModelFileError):
            files.read_safetensors_header(path)
