"""A diffusers folder never runs code that comes with it, however the code is hidden.

Every attack here carries a live payload: importing its module would create a canary file, and
each test asserts the canary never appears, through the library, the loader and the command
line. CI runs this file a second time with the lowest diffusers ``pyproject.toml`` allows first
on ``PYTHONPATH`` and ``STUDIO_EXPECT_DIFFUSERS`` set to it (see ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prompt_fixtures import build_tiny_sd

from studio.cli.main import main
from studio.engine.prompt import files, folder_code
from studio.engine.prompt.library import ModelLibrary
from studio.engine.prompt.loading import load_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[1]


def _floor(package: str) -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(rf'"{package}>=([0-9.]+)', text)
    assert match, f"pyproject.toml names no floor for {package}"
    return match.group(1)


def test_the_diffusers_under_test_is_the_one_ci_asked_for() -> None:
    import diffusers

    expected = os.environ.get("STUDIO_EXPECT_DIFFUSERS")
    if not expected:
        pytest.skip("run by .ci/run with the lowest allowed diffusers")
    assert diffusers.__version__ == expected == _floor("diffusers")


def test_floors_have_their_own_guards() -> None:
    # 0.38 is the first diffusers that asks before running a folder's own Python file; torch 2.6
    # closed the weights_only bypass. Lower floors would leave the studio the only guard.
    def key(version: str) -> tuple[int, ...]:
        return tuple(int(p) for p in version.split("."))

    assert key(_floor("diffusers")) >= (0, 38)
    assert key(_floor("torch")) >= (2, 6)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def _payload(path: Path, canary: Path) -> Path:
    """A module that creates ``canary`` when imported, and defines the pipeline it claims."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"open({str(canary)!r}, 'w').close()\n"
        "from diffusers import StableDiffusionPipeline\n"
        "class EvilPipeline(StableDiffusionPipeline):\n"
        "    pass\n",
        encoding="utf-8",
    )
    return path


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _assert_refused_everywhere(
    folder: Path, canary: Path, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(files.UnsafeModelError, match=message):
        files.check_folder_code(folder)
    with pytest.raises(files.UnsafeModelError, match=message):
        ModelLibrary(tmp_path / "models.json").add(folder)
    with pytest.raises(files.UnsafeModelError, match=message):
        load_pipeline(folder, "txt2img")
    capsys.readouterr()
    code = main(
        [
            "generate",
            "--model",
            str(folder),
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
            str(tmp_path / "out.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "refused" in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()
    assert not canary.exists()


def test_the_payload_is_live(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    module = _payload(tmp_path / "evil.py", canary)
    spec = importlib.util.spec_from_file_location("studio_test_evil", module)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert canary.exists()


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_class_name_list_pointing_outside_is_refused(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "models" / "sd")
    canary = tmp_path / "canary"
    _payload(tmp_path / "models" / "evil.py", canary)
    name = str(tmp_path / "models" / "evil") if where == "absolute" else "../evil"
    _edit_json(folder / "model_index.json", lambda d: d.update(_class_name=[name, "EvilPipeline"]))
    _assert_refused_everywhere(folder, canary, "custom pipeline code", tmp_path, capsys)


def test_underscore_key_naming_a_foreign_library_is_refused(tiny_sd: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    _edit_json(folder / "model_index.json", lambda d: d.update(_helper=["antigravity", "X"]))
    with pytest.raises(files.UnsafeModelError, match="'_helper' comes from 'antigravity'"):
        files.check_folder_code(folder)


def test_code_in_a_symlinked_subfolder_is_refused(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    canary = tmp_path / "canary"
    outside = shutil.copytree(folder / "unet", tmp_path / "elsewhere" / "unet")
    _payload(outside / "unet_custom.py", canary)
    shutil.rmtree(folder / "unet")
    (folder / "unet").symlink_to(outside, target_is_directory=True)
    _edit_json(
        folder / "model_index.json", lambda d: d.update(unet=["unet_custom", "EvilPipeline"])
    )
    _assert_refused_everywhere(folder, canary, "leads out of the folder", tmp_path, capsys)

    # A link that stays inside the folder is followed, and what it leads to is checked.
    inside = shutil.copytree(tiny_sd, tmp_path / "sd2")
    _payload(inside / "extras" / "unet_custom.py", canary)
    (inside / "more").symlink_to(inside / "extras", target_is_directory=True)
    with pytest.raises(files.UnsafeModelError, match=r"ships Python code \((extras|more)/"):
        files.check_folder_code(inside)
    assert not canary.exists()


def test_code_deep_down_is_refused(tiny_sd: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    canary = tmp_path / "canary"
    _payload(folder / "unet" / "a" / "b" / "c" / "evil.py", canary)
    with pytest.raises(files.UnsafeModelError, match=r"unet/a/b/c/evil.py"):
        load_pipeline(folder, "txt2img")
    assert not canary.exists()


def test_a_file_link_to_code_is_refused_by_either_name(tiny_sd: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    _payload(folder / "unet" / "x.txt", tmp_path / "canary")
    (folder / "unet" / "unet_custom.py").symlink_to(folder / "unet" / "x.txt")
    with pytest.raises(files.UnsafeModelError, match="ships Python code"):
        files.check_folder_code(folder)


def test_a_large_json_is_checked_not_skipped(tiny_sd: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    config = folder / "text_encoder" / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data["auto_map"] = {"AutoModel": "evil.EvilModel"}
    # 21 MB: the old check read no JSON file over 20 MB
    config.write_text(json.dumps(data) + " " * (21 * 1024 * 1024), encoding="utf-8")
    with pytest.raises(files.UnsafeModelError, match="'auto_map'"):
        files.check_folder_code(folder)


def test_a_json_too_large_to_check_is_refused(
    tiny_sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    monkeypatch.setattr(folder_code, "MAX_JSON_BYTES", 4096)
    (folder / "unet" / "notes.json").write_text(json.dumps({"x": "y" * 5000}), encoding="utf-8")
    with pytest.raises(files.UnsafeModelError, match="notes.json is larger than"):
        files.check_folder_code(folder)


def test_deeply_nested_json_is_refused_without_a_recursion_error(
    tiny_sd: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    (folder / "unet" / "extra.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(files.UnsafeModelError, match="nests too deeply"):
        files.check_folder_code(folder)


def test_auto_map_nested_anywhere_is_refused(tiny_sd: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    _edit_json(
        folder / "tokenizer" / "tokenizer_config.json",
        lambda d: d.update(extra={"deeper": [{"auto_map": ["evil.Tok", None]}]}),
    )
    with pytest.raises(
        files.UnsafeModelError, match=r"tokenizer/tokenizer_config.json .*'auto_map'"
    ):
        files.check_folder_code(folder)


def test_a_link_leaving_the_folder_is_refused_even_to_weights(
    tiny_sd: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    moved = shutil.move(weights, tmp_path / "vae.safetensors")
    weights.symlink_to(moved)
    with pytest.raises(files.UnsafeModelError, match="leads out of the folder"):
        files.check_folder_code(folder)


def test_a_hugging_face_cache_snapshot_is_accepted(tiny_sd: Path, tmp_path: Path) -> None:
    # huggingface_hub's cache: snapshots/<rev>/ holds links into the repository's blobs/.
    repo = tmp_path / "models--someone--tiny-sd"
    snapshot = repo / "snapshots" / "0123abcd"
    for i, source in enumerate(sorted(p for p in tiny_sd.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"{i:040x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, blob)
        link = snapshot / source.relative_to(tiny_sd)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    files.check_folder_code(snapshot)
    pipe = load_pipeline(snapshot, "txt2img")
    assert pipe.unet is not None and pipe.studio_entry.path == str(snapshot)


def test_a_plain_folder_still_loads(tiny_sd: Path) -> None:
    files.check_folder_code(tiny_sd)
    pipe = load_pipeline(tiny_sd, "txt2img")
    assert pipe.unet is not None


# -- FIFOs and other files that are not regular files ------------------------------------------


@contextlib.contextmanager
def _watchdog(fifo: Path, seconds: float = 30.0) -> Iterator[dict[str, bool]]:
    """Fails the test instead of hanging it: after ``seconds`` a reader stuck on ``fifo`` is
    handed end of file (the write end is opened and closed), and ``fired`` is set."""
    state = {"fired": False}
    done = threading.Event()

    def watch() -> None:
        if done.wait(seconds):
            return
        state["fired"] = True
        while not done.wait(0.2):
            with contextlib.suppress(OSError):  # no reader at the moment
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        done.set()
        thread.join()
    assert not state["fired"], f"blocked reading the FIFO {fifo.name}"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("name", ["unet/extra.json", "unet/config.json", "vae/notes.txt"])
def test_a_fifo_in_a_model_folder_is_refused_not_opened(
    tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    fifo = folder / name
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    with _watchdog(fifo):
        with pytest.raises(files.UnsafeModelError, match="not a regular file"):
            files.check_folder_code(folder)
        code = main(
            [
                "generate",
                "--model",
                str(folder),
                "--prompt",
                "x",
                "--steps",
                "1",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "o.png"),
            ]
        )
    assert code == 1 and "not a regular file" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_given_as_the_model_is_refused_not_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with _watchdog(fifo):
        code = main(
            [
                "generate",
                "--model",
                str(fifo),
                "--prompt",
                "x",
                "--steps",
                "1",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "o.png"),
            ]
        )
    assert code == 1 and "model.safetensors is not a regular file" in capsys.readouterr().err


# -- pickles need a torch whose weights-only mode holds -----------------------------------------


def test_pickles_are_refused_on_torch_before_2_6(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import save_file

    pickled = tmp_path / "model.ckpt"
    torch.save({"w": torch.ones(2)}, pickled)
    safe = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(2)}, str(safe))
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(files.UnsafeModelError, match=r"PyTorch 2\.6 or newer.*2\.5\.1"):
        files.read_state_dict(pickled, allow_pickle=True)
    assert torch.equal(files.read_state_dict(safe)["w"], torch.ones(2))  # safetensors still load
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    assert torch.equal(files.read_state_dict(pickled, allow_pickle=True)["w"], torch.ones(2))


def test_a_pickled_folder_is_refused_on_torch_before_2_6(
    tiny_sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import load_file

    folder = shutil.copytree(tiny_sd, tmp_path / "sd")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    monkeypatch.setattr(torch, "__version__", "2.4.0")
    with pytest.raises(files.UnsafeModelError, match=r"PyTorch 2\.6 or newer"):
        load_pipeline(folder, "txt2img", allow_pickle=True)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_library_entry_whose_file_became_a_fifo_is_refused_not_opened(tmp_path: Path) -> None:
    from studio.engine.prompt.library import ModelEntry

    fifo = tmp_path / "sd.safetensors"
    os.mkfifo(fifo)
    entry = ModelEntry(
        id="x", name="sd", path=str(fifo), kind="single-file", arch="sd1", file_format="safetensors"
    )
    with _watchdog(fifo):
        for read in (files.sniff_format, files.read_safetensors_header, files.read_state_dict):
            with pytest.raises(files.ModelFileError, match="not a regular file"):
                read(fifo)
        with pytest.raises(files.ModelFileError, match="not a regular file"):
            load_pipeline(entry, "txt2img")
