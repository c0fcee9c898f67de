"""Which modes a model supports, decided once (studio.engine.prompt.modes) for every architecture
the library knows, and what a load tells the library about a pickle it listed as "unknown"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from studio.core.errors import StudioError
from studio.engine.prompt import library, modes
from studio.engine.prompt.library import ARCHS, ModelEntry, ModelLibrary, record_architecture
from studio.engine.prompt.modes import ModeRefused, check_mode, modes_for, refusal

# arch -> the modes it supports; every arch in library.ARCHS must be here
EXPECTED = {
    "sd1": ("txt2img", "img2img", "inpaint"),
    "sd2": ("txt2img", "img2img", "inpaint"),
    "sdxl": ("txt2img", "img2img", "inpaint"),
    "sdxl-refiner": ("img2img", "inpaint"),
    "studio": ("txt2img", "img2img", "inpaint"),  # prompt models trained here
    "unknown": ("txt2img", "img2img", "inpaint"),  # an unread pickle: tried, and told then
}


def _entry(arch: str, *, inpainting: bool = False, kind: str = "single-file") -> ModelEntry:
    return ModelEntry("x", "My model", "/nowhere/model.ckpt", kind, arch, inpainting=inpainting)


def test_every_arch_the_library_knows_is_decided() -> None:
    assert set(EXPECTED) == set(ARCHS)


@pytest.mark.parametrize("arch", sorted(EXPECTED))
@pytest.mark.parametrize("inpainting", [False, True])
def test_the_modes_of_each_arch(arch: str, inpainting: bool) -> None:
    for subject in (arch, _entry(arch, inpainting=inpainting)):
        support = modes_for(subject)
        assert support.arch == arch
        assert support.modes == EXPECTED[arch]
        for mode in modes.MODES:
            allowed = mode in EXPECTED[arch]
            assert support.allows(mode) is allowed
            assert bool(support.why_not(mode)) is not allowed  # a reason for each refusal
            assert (refusal(mode, arch, "My model", inpainting=inpainting) is None) is allowed
    assert modes.allows_txt2img(arch) is ("txt2img" in EXPECTED[arch])


def test_a_refiner_asked_for_text_to_image_says_what_to_do() -> None:
    support = modes_for(_entry("sdxl-refiner"))
    assert "refines an existing image" in support.why_not("txt2img")
    assert "Image to image" in support.why_not("txt2img")
    with pytest.raises(ModeRefused) as info:
        check_mode("txt2img", "sdxl-refiner", "My refiner", inpainting=False)
    err = info.value
    assert isinstance(err, StudioError)  # shown as is, in the window and the CLI
    assert str(err).startswith("My refiner is an SDXL refiner")
    assert "Image to image" in str(err) and "--image" in str(err)
    assert (err.name, err.mode, err.arch, err.inpainting) == (
        "My refiner",
        "txt2img",
        "sdxl-refiner",
        False,
    )
    check_mode("img2img", "sdxl-refiner", "My refiner")  # allowed: no error
    check_mode("inpaint", "sdxl-refiner", "My refiner")


def test_no_model_and_unheard_of_archs_allow_everything() -> None:
    assert modes_for(None).modes == modes.MODES
    assert modes_for("sd9-turbo").modes == modes.MODES
    assert modes_for(object()).modes == modes.MODES  # no arch attribute: unknown


def test_the_library_and_the_modes_agree_on_image_only_archs() -> None:
    assert library.IMAGE_ONLY_ARCHS is modes.IMAGE_ONLY_ARCHS
    assert {a for a in ARCHS if not modes.allows_txt2img(a)} == set(modes.IMAGE_ONLY_ARCHS)


def test_modes_import_neither_torch_nor_qt() -> None:
    """The GUI decides what to offer on its own thread: no heavy import behind it."""
    code = (
        "import sys, studio.engine.prompt.modes; "
        "bad = [m for m in ('torch', 'PySide6', 'diffusers') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_loader_refuses_a_refiner_for_text_to_image_before_reading_it(tmp_path: Path) -> None:
    from studio.engine.prompt.loading import load_pipeline

    file = tmp_path / "refiner.safetensors"
    file.write_bytes(b"not read at all")
    entry = ModelEntry("r", "refiner", str(file), "single-file", "sdxl-refiner")
    with pytest.raises(ModeRefused, match="refines an existing image"):
        load_pipeline(entry, "txt2img")


# -- the library learns what a load found ---------------------------------------------------------


@pytest.fixture
def pickled(tmp_path: Path) -> Path:
    import torch

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    return path


def test_a_load_tells_the_library_what_a_pickle_is(pickled: Path) -> None:
    added = ModelLibrary().add(pickled, name="mystery")
    assert (added.arch, added.file_format, added.needs_consent) == ("unknown", "pickle", True)

    updated = record_architecture(pickled, "sdxl-refiner", False)
    assert updated is not None and updated.id == added.id
    assert (updated.arch, updated.inpainting) == ("sdxl-refiner", False)
    # only the type changed: the name, the consent it needs, when it was added, stay
    assert updated == ModelEntry.from_dict(
        {**added.to_dict(), "arch": "sdxl-refiner", "inpainting": False}
    )
    (stored,) = ModelLibrary().entries()  # saved: a new listing says the same
    assert stored == updated and not modes_for(stored).allows("txt2img")
    assert record_architecture(pickled, "sdxl-refiner", False) is None  # nothing new
    assert record_architecture(pickled.with_name("other.ckpt"), "sd1", False) is None


def test_update_changes_one_entry_and_refuses_what_it_cannot(pickled: Path) -> None:
    lib = ModelLibrary()
    entry = lib.add(pickled)
    assert lib.update(entry.id, inpainting=True).inpainting
    with pytest.raises(ValueError, match="path"):
        lib.update(entry.id, path="/elsewhere")
    with pytest.raises(ValueError, match="colour"):
        lib.update(entry.id, colour="red")
    with pytest.raises(StudioError, match="not in the library"):
        lib.update("no-such-id", arch="sd1")


def test_a_library_that_cannot_be_written_does_not_fail_the_load(
    pickled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ModelLibrary().add(pickled)

    def full_disk(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(library.atomic, "write_json", full_disk)
        assert record_architecture(pickled, "sd1", False) is None
    assert ModelLibrary().entries()[0].arch == "unknown"  # unchanged on disk


@pytest.fixture(scope="module")
def refiner_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL refiner as one pickled .ckpt, its weightless config beside it."""
    from prompt_fixtures import build_tiny_sdxl_refiner, config_only_copy, export_pickled_checkpoint

    root = tmp_path_factory.mktemp("refiner_ckpt")
    folder = build_tiny_sdxl_refiner(root / "folder")
    file = export_pickled_checkpoint(folder, root / "tiny-refiner.ckpt")
    config_only_copy(folder, root / "tiny-refiner")
    return file


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.usefixtures("no_network")
def test_generating_with_a_pickle_records_what_it_turned_out_to_be(refiner_ckpt: Path) -> None:
    """Every way a generation can find the pickle's type (refused on its first read, loaded,
    refused by the loaded pipeline of another mode) leaves it in the library."""
    from prompt_fixtures import picture

    from studio.core.jobs import CancelToken, run_sync
    from studio.engine.prompt.generate import PipelineCache, generate_job
    from studio.engine.prompt.request import GenerateRequest

    lib = ModelLibrary()
    entry = lib.add(refiner_ckpt)
    cache = PipelineCache()

    def run(mode: str) -> str:
        lib.update(entry.id, arch="unknown")  # as listed before any read
        image = picture() if mode == "img2img" else None
        request = GenerateRequest(
            entry.id, mode=mode, prompt="a red circle", width=16, height=16, steps=2, image=image
        )
        outcome = run_sync(
            generate_job(request, CancelToken(), allow_pickle=True, pipeline_cache=cache)
        )
        assert ModelLibrary().find(refiner_ckpt).arch == "sdxl-refiner", mode
        return outcome.error or ""

    assert "refines an existing image" in run("txt2img")  # read, then refused: nothing loaded
    assert len(cache) == 0
    assert run("img2img") == ""  # loaded
    assert "refines an existing image" in run("txt2img")  # the loaded pipeline refuses
