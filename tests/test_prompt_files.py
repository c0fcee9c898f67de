"""Model files: format by content, pickles only with consent and weights-only, corrupt files named,
folders with code refused. Nothing here downloads anything."""

from __future__ import annotations

import json
import pickle
import struct
import time
from pathlib import Path

import pytest
import torch
from prompt_fixtures import build_tiny_sd, write_pickle_bomb, write_safetensors_header
from safetensors.torch import save_file

from studio.engine.prompt import files
from studio.engine.prompt.files import FileFormat


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def _copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# -- format by content --------------------------------------------------------------------------


def test_format_comes_from_content_not_extension(tmp_path: Path) -> None:
    real = tmp_path / "weights.ckpt"  # safetensors content, pickle-ish name
    save_file({"w": torch.ones(2, 3)}, str(real))
    zipped = tmp_path / "zipped.safetensors"
    torch.save({"w": torch.ones(2)}, zipped)
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=2))
    png = tmp_path / "picture.ckpt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)

    assert files.sniff_format(real) is FileFormat.SAFETENSORS
    assert files.sniff_format(zipped) is FileFormat.TORCH_ZIP
    assert files.sniff_format(bare) is FileFormat.PICKLE
    assert files.sniff_format(png) is FileFormat.UNKNOWN
    assert torch.equal(files.read_state_dict(real)["w"], torch.ones(2, 3))
    with pytest.raises(files.ModelFileError, match="neither safetensors nor a PyTorch checkpoint"):
        files.read_state_dict(png)


def test_pickle_renamed_safetensors_is_refused_without_consent(tmp_path: Path) -> None:
    fake = tmp_path / "model.safetensors"
    torch.save({"state_dict": {"w": torch.arange(4.0)}, "global_step": 7}, fake)
    with pytest.raises(files.PickleConsentRequired) as info:
        files.read_state_dict(fake)
    assert info.value.path == fake
    assert "pickled checkpoint" in str(info.value)
    # with consent it loads weights-only; the state_dict wrapper and the step counter are dropped
    tensors = files.read_state_dict(fake, allow_pickle=True)
    assert list(tensors) == ["w"] and torch.equal(tensors["w"], torch.arange(4.0))


# -- hostile pickles ----------------------------------------------------------------------------


@pytest.mark.parametrize("torch_zip", [True, False], ids=["torch-zip", "bare-pickle"])
@pytest.mark.parametrize("name", ["evil.ckpt", "evil.safetensors"])
def test_pickle_payload_never_runs(tmp_path: Path, torch_zip: bool, name: str) -> None:
    # The payload is live: loading the control copy the unsafe way creates its canary.
    control_canary = tmp_path / "control-canary"
    control = write_pickle_bomb(tmp_path / "control.pt", control_canary, torch_zip=torch_zip)
    if torch_zip:
        torch.load(control, weights_only=False)
    else:
        pickle.loads(control.read_bytes())
    assert control_canary.exists()

    canary = tmp_path / "canary"
    bomb = write_pickle_bomb(tmp_path / name, canary, torch_zip=torch_zip)
    with pytest.raises(files.PickleConsentRequired):
        files.read_state_dict(bomb)
    assert not canary.exists()
    with pytest.raises(files.UnsafeModelError, match="needs code to load") as info:
        files.read_state_dict(bomb, allow_pickle=True)
    assert not canary.exists()
    assert "weights_only=False" not in str(info.value)  # never suggests the unsafe way


# -- corrupt and hostile safetensors --------------------------------------------------------------


def test_truncated_safetensors_gets_the_redownload_message(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(64, 64), "b": torch.zeros(16)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(
        files.CorruptModelFile,
        match=r"model.safetensors is truncated or corrupt: .*re-download or re-export it",
    ):
        files.read_state_dict(path)
    path.write_bytes(data[:4])  # not even a header length
    with pytest.raises(files.CorruptModelFile, match="truncated or corrupt"):
        files.read_state_dict(path)


def test_truncated_weights_in_a_folder_are_named(tiny_sd: Path, tmp_path: Path) -> None:
    from studio.engine.prompt.library import inspect_model

    folder = _copy_tree(tiny_sd, tmp_path / "broken")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(
        files.CorruptModelFile, match="diffusion_pytorch_model.safetensors is truncated"
    ):
        inspect_model(folder)


def test_hostile_headers_fail_fast(tmp_path: Path) -> None:
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    start = time.perf_counter()
    with pytest.raises(files.CorruptModelFile, match="header claims"):
        files.read_state_dict(huge)
    assert time.perf_counter() - start < 1.0

    overlap = tmp_path / "overlap.safetensors"
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    raw = json.dumps(header).encode()
    overlap.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 24)
    with pytest.raises(files.CorruptModelFile, match="overlaps another tensor"):
        files.read_state_dict(overlap)

    wrong_size = tmp_path / "shape.safetensors"
    header = {"a": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]}}
    raw = json.dumps(header).encode()
    wrong_size.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    with pytest.raises(files.CorruptModelFile, match="does not match its shape"):
        files.read_state_dict(wrong_size)

    header_only = write_safetensors_header(
        tmp_path / "short.safetensors", {"x": ("F16", [8, 8])}, data=False
    )
    with pytest.raises(files.CorruptModelFile, match="need 128 bytes of data but the file holds 0"):
        files.read_safetensors_header(header_only)


# -- folders with code -----------------------------------------------------------------------------


def test_plain_tiny_folder_passes(tiny_sd: Path) -> None:
    files.check_folder_code(tiny_sd)


def test_folder_with_python_file_is_refused_and_never_imported(
    tiny_sd: Path, tmp_path: Path
) -> None:
    from studio.engine.prompt.loading import load_pipeline

    folder = _copy_tree(tiny_sd, tmp_path / "with-code")
    canary = tmp_path / "imported"
    (folder / "unet" / "unet_custom.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    with pytest.raises(files.UnsafeModelError, match=r"ships Python code \(unet/unet_custom.py\)"):
        files.check_folder_code(folder)
    with pytest.raises(files.UnsafeModelError):
        load_pipeline(folder, "txt2img")
    assert not canary.exists()


@pytest.mark.parametrize(
    ("where", "edit", "message"),
    [
        (
            "model_index.json",
            lambda d: d.update(unet=["my_unets", "FancyUNet"]),
            "comes from 'my_unets'",
        ),
        (
            "model_index.json",
            lambda d: d.update(custom_pipeline="lpw_stable_diffusion"),
            "'custom_pipeline'",
        ),
        (
            "text_encoder/config.json",
            lambda d: d.update(auto_map={"AutoModel": "m.M"}),
            "'auto_map'",
        ),
    ],
    ids=["foreign-library", "custom-pipeline", "auto-map"],
)
def test_folder_asking_for_code_is_refused(
    tiny_sd: Path, tmp_path: Path, where: str, edit, message: str
) -> None:
    folder = _copy_tree(tiny_sd, tmp_path / "asks-for-code")
    path = folder / where
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(files.UnsafeModelError, match=message):
        files.check_folder_code(folder)


def test_diffusers_own_pipeline_modules_are_allowed(tiny_sd: Path, tmp_path: Path) -> None:
    # Real SD 1.5 folders name ["stable_diffusion", "StableDiffusionSafetyChecker"].
    folder = _copy_tree(tiny_sd, tmp_path / "sd15-like")
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    (folder / "model_index.json").write_text(json.dumps(index))
    files.check_folder_code(folder)


def test_save_state_dict_safetensors_unshares_views(tmp_path: Path) -> None:
    base = torch.arange(12.0)
    tensors = {"a": base, "b": base, "c": base.view(3, 4)[1]}
    out = tmp_path / "out.safetensors"
    files.save_state_dict_safetensors(tensors, out)
    back = files.read_state_dict(out)
    assert torch.equal(back["a"], base) and torch.equal(back["c"], torch.tensor([4.0, 5, 6, 7]))
