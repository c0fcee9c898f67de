"""The model library (inspect, add/list/remove, persistence) and loading pipelines from disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from prompt_fixtures import TINY_IMAGE, build_tiny_sd, write_pickle_bomb, write_safetensors_header

from studio.core.errors import StudioError
from studio.engine.prompt import files, library, loading
from studio.engine.prompt.library import ModelLibrary, inspect_model

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    return {
        "sd": build_tiny_sd(base / "tiny-sd"),
        "inpaint": build_tiny_sd(base / "tiny-inpaint", inpainting=True),
        "sdxl": build_tiny_sd(base / "tiny-sdxl", sdxl=True),
    }


# -- inspect ---------------------------------------------------------------------------------------


def test_inspect_tiny_folders(tiny: dict[str, Path]) -> None:
    sd, inp, xl = (inspect_model(tiny[k]) for k in ("sd", "inpaint", "sdxl"))
    assert (sd.kind, sd.file_format, sd.inpainting, sd.needs_consent) == (
        "diffusers-folder",
        "folder",
        False,
        False,
    )
    assert sd.arch == "unknown"  # cross_attention_dim 16 is neither SD 1.x (768) nor 2.x (1024)
    assert sd.precision == "fp32" and sd.size_bytes > 0
    assert inp.inpainting and inp.arch == "unknown"
    assert xl.arch == "sdxl" and not xl.inpainting
    assert sd.id == library.entry_id(tiny["sd"]) and sd.name == "tiny-sd"


def test_inspect_folder_reads_real_sizes(tiny: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = shutil.copytree(tiny["sd"], tmp_path / "sd15")
    unet = json.loads((folder / "unet/config.json").read_text())
    (folder / "unet/config.json").write_text(json.dumps({**unet, "cross_attention_dim": 768}))
    assert inspect_model(folder).arch == "sd1"
    (folder / "unet/config.json").write_text(json.dumps({**unet, "cross_attention_dim": 1024}))
    assert inspect_model(folder).arch == "sd2"


@pytest.mark.parametrize(
    ("spec", "arch", "inpainting", "precision"),
    [
        (
            {
                "cond_stage_model.transformer.text_model.x": ("F16", [2]),
                UNET_IN: ("F16", [8, 4, 3, 3]),
            },
            "sd1",
            False,
            "fp16",
        ),
        (
            {
                "cond_stage_model.transformer.text_model.x": ("F32", [2]),
                UNET_IN: ("F32", [8, 9, 3, 3]),
            },
            "sd1",
            True,
            "fp32",
        ),
        (
            {
                "cond_stage_model.model.token_embedding.weight": ("BF16", [2]),
                UNET_IN: ("BF16", [8, 4, 3, 3]),
            },
            "sd2",
            False,
            "bf16",
        ),
        (
            {
                "conditioner.embedders.1.model.ln_final.weight": ("F16", [2]),
                UNET_IN: ("F32", [8, 9, 3, 3]),
            },
            "sdxl",
            True,
            "mixed",
        ),
        ({"some.other.weight": ("F32", [2]), "ids": ("I64", [3])}, "unknown", False, "fp32"),
    ],
    ids=["sd1", "sd1-inpainting", "sd2", "sdxl-inpainting", "unknown"],
)
def test_inspect_single_file_from_header(
    tmp_path: Path, spec, arch: str, inpainting: bool, precision: str
) -> None:
    path = write_safetensors_header(tmp_path / "model.safetensors", spec)
    entry = inspect_model(path)
    assert (entry.kind, entry.file_format) == ("single-file", "safetensors")
    assert (entry.arch, entry.inpainting, entry.precision) == (arch, inpainting, precision)
    assert entry.size_bytes == path.stat().st_size and not entry.needs_consent


def test_inspect_refuses_what_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(StudioError, match="not a model Studio can use"):
        inspect_model(tmp_path / "photos")
    with pytest.raises(StudioError, match="does not exist"):
        inspect_model(tmp_path / "nope.safetensors")


# -- the library -------------------------------------------------------------------------------------


def test_library_round_trip_survives_reload(tiny: dict[str, Path], studio_home: Path) -> None:
    lib = ModelLibrary()
    a = lib.add(tiny["sd"])
    b = lib.add(tiny["inpaint"], name="My inpainter")
    assert (studio_home / "models.json").is_file()  # where it was asked to live
    with pytest.raises(StudioError, match="already in the library as 'tiny-sd'"):
        lib.add(tiny["sd"])

    again = ModelLibrary()
    assert [e.id for e in again.entries()] == [a.id, b.id]
    assert again.get(b.id) == b and again.get(b.id).name == "My inpainter"
    assert again.remove(a.id) == a
    assert [e.id for e in ModelLibrary().entries()] == [b.id]
    with pytest.raises(StudioError, match="not in the library"):
        again.remove(a.id)


def test_library_at_explicit_path_and_damaged_file(tiny: dict[str, Path], tmp_path: Path) -> None:
    where = tmp_path / "elsewhere" / "lib.json"
    ModelLibrary(where).add(tiny["sdxl"])
    assert json.loads(where.read_text())["models"][0]["arch"] == "sdxl"
    where.write_text("{ not json")
    lib = ModelLibrary(where)
    assert lib.entries() == [] and "damaged" in lib.warning
    assert (tmp_path / "elsewhere" / "lib.json.damaged").is_file()


def test_adding_a_pickle_does_not_open_it(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    bomb = write_pickle_bomb(tmp_path / "model.ckpt", canary)
    entry = ModelLibrary().add(bomb)
    assert entry.needs_consent and entry.file_format == "pickle" and entry.arch == "unknown"
    with pytest.raises(files.PickleConsentRequired):
        loading.load_pipeline(entry, "txt2img")
    with pytest.raises(files.UnsafeModelError):
        loading.load_pipeline(entry, "txt2img", allow_pickle=True)
    assert not canary.exists()


def _fake_run(folder: Path, family: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"train": {"family": family, "steps": 10, "resolution": 24}})
    )
    (folder / "model").mkdir()
    write_safetensors_header(folder / "model" / "model.safetensors", {"w": ("F32", [4])})
    return folder


def test_runs_listed_only_when_their_family_takes_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.core.paths import runs_dir

    _fake_run(runs_dir() / "plain", "diffusion.ddpm")
    _fake_run(runs_dir() / "texty", "diffusion.text")
    assert all(e.name != "plain" for e in ModelLibrary().entries())  # ddpm takes no prompts
    monkeypatch.setattr(library, "_family_takes_prompts", lambda family: family == "diffusion.text")
    entries = ModelLibrary().entries()
    assert [(e.name, e.kind, e.arch) for e in entries] == [("texty", "studio-run", "studio")]
    assert entries[0].resolution == 24  # the Prompt workspace's default size for it
    lib = ModelLibrary()
    assert lib.get("run:texty") == entries[0]
    with pytest.raises(StudioError, match="delete the run"):
        lib.remove("run:texty")
    with pytest.raises(StudioError, match="Studio run"):
        loading.load_pipeline(entries[0], "txt2img")


# -- loading -----------------------------------------------------------------------------------------


def _run(pipe, **kw):
    kw.setdefault("num_inference_steps", 2)
    kw.setdefault("output_type", "np")
    return pipe("red circle", generator=torch.Generator().manual_seed(3), **kw).images[0]


def test_load_folder_txt2img_runs_and_is_seeded(tiny: dict[str, Path]) -> None:
    pipe = loading.load_pipeline(tiny["sd"], "txt2img")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.safety_checker is None and not pipe.studio_native_inpainting
    image = _run(pipe, height=TINY_IMAGE, width=2 * TINY_IMAGE)
    assert image.shape == (TINY_IMAGE, 2 * TINY_IMAGE, 3) and np.isfinite(image).all()
    assert np.array_equal(image, _run(pipe, height=TINY_IMAGE, width=2 * TINY_IMAGE))
    assert os.environ.get("HF_HUB_OFFLINE") is None or os.environ["HF_HUB_OFFLINE"] == "1"


def test_task_pipelines_share_modules(tiny: dict[str, Path]) -> None:
    pipe = loading.load_pipeline(tiny["sd"], "txt2img")
    img2img = loading.pipeline_components_from(pipe, "img2img")
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert img2img.unet is pipe.unet and img2img.vae is pipe.vae
    assert pipe.unet.dtype == torch.float32  # sharing never casts the original
    init = np.full((TINY_IMAGE, TINY_IMAGE, 3), 0.5, np.float32)
    out = img2img(
        "red circle", image=init[None], strength=0.5, num_inference_steps=2, output_type="np"
    )
    assert out.images[0].shape == (TINY_IMAGE, TINY_IMAGE, 3)
    # a regular UNet asked to inpaint: image-to-image, flagged for masked latent blending
    regular = loading.pipeline_components_from(pipe, "inpaint")
    assert (
        type(regular).__name__ == "StableDiffusionImg2ImgPipeline"
        and not regular.studio_native_inpainting
    )


def test_inpainting_folder_gets_the_inpainting_pipeline(tiny: dict[str, Path]) -> None:
    pipe = loading.load_pipeline(tiny["inpaint"], "inpaint")
    assert type(pipe).__name__ == "StableDiffusionInpaintPipeline" and pipe.studio_native_inpainting
    image = np.full((1, TINY_IMAGE, TINY_IMAGE, 3), 0.5, np.float32)
    mask = np.zeros((1, TINY_IMAGE, TINY_IMAGE, 1), np.float32)
    mask[:, 4:12, 4:12] = 1
    out = _run(pipe, image=image, mask_image=mask, height=TINY_IMAGE, width=TINY_IMAGE)
    assert out.shape == (TINY_IMAGE, TINY_IMAGE, 3)


def test_sdxl_folder_loads_the_xl_pipeline(tiny: dict[str, Path]) -> None:
    pipe = loading.load_pipeline(tiny["sdxl"], "txt2img")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert _run(pipe, height=TINY_IMAGE, width=TINY_IMAGE).shape == (TINY_IMAGE, TINY_IMAGE, 3)


def test_load_pipeline_job_stops_when_cancelled(tiny: dict[str, Path]) -> None:
    from studio.core.jobs import CancelToken, Status, run_sync

    token = CancelToken()
    seen = []

    def on_progress(p) -> None:
        seen.append(p.stage)
        token.cancel()  # cancel while the first stage is reported

    outcome = run_sync(loading.load_pipeline_job(tiny["sd"], "txt2img", token), token, on_progress)
    assert outcome.status is Status.CANCELLED and outcome.result is None and seen == ["load"]


# -- single files: no config on disk -> exactly what to add ---------------------------------------------


def test_single_file_without_config_says_what_to_add(tmp_path: Path, studio_home: Path) -> None:
    path = write_safetensors_header(
        tmp_path / "dream.safetensors",
        {"cond_stage_model.transformer.text_model.x": ("F16", [2]), UNET_IN: ("F16", [8, 4, 3, 3])},
    )
    with pytest.raises(StudioError) as info:
        loading.load_pipeline(path, "txt2img")
    message = str(info.value)
    assert "Stable Diffusion 1.x checkpoint" in message and "never downloads" in message
    assert str(studio_home / "configs" / "sd1") in message and str(tmp_path / "dream") in message
    for item in (
        "model_index.json",
        "scheduler/",
        "text_encoder/config.json",
        "tokenizer/",
        "unet/config.json",
        "vae/config.json",
    ):
        assert item in message
    assert "text_encoder_2" not in message


def test_sdxl_inpainting_single_file_names_its_folder(tmp_path: Path, studio_home: Path) -> None:
    path = write_safetensors_header(
        tmp_path / "xl.safetensors",
        {"conditioner.embedders.1.model.x": ("F16", [2]), UNET_IN: ("F16", [8, 9, 3, 3])},
    )
    with pytest.raises(StudioError, match="SDXL inpainting checkpoint") as info:
        loading.load_pipeline(path, "inpaint")
    assert str(studio_home / "configs" / "sdxl-inpainting") in str(info.value)
    assert "text_encoder_2/config.json" in str(info.value) and "tokenizer_2/" in str(info.value)


def test_incomplete_config_folder_names_the_missing_files(
    tiny: dict[str, Path], tmp_path: Path, studio_home: Path
) -> None:
    import shutil

    path = write_safetensors_header(
        tmp_path / "m.safetensors",
        {"cond_stage_model.model.x": ("F16", [2]), UNET_IN: ("F16", [8, 4, 3, 3])},
    )
    config = shutil.copytree(tiny["sd"], studio_home / "configs" / "sd2")
    shutil.rmtree(config / "tokenizer")
    (config / "vae" / "config.json").unlink()
    with pytest.raises(StudioError, match="is incomplete") as info:
        loading.load_pipeline(path, "txt2img")
    assert "tokenizer/" in str(info.value) and "vae/config.json" in str(info.value)
    assert "unet/config.json" not in str(info.value)


def test_pickled_single_file_with_consent_is_classified_then_asks_for_config(
    tmp_path: Path, studio_home: Path
) -> None:
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": {
                "cond_stage_model.transformer.w": torch.zeros(2),
                UNET_IN: torch.zeros(8, 9, 3, 3),
            }
        },
        path,
    )
    with pytest.raises(files.PickleConsentRequired):
        loading.load_pipeline(path, "inpaint")
    with pytest.raises(StudioError, match="Stable Diffusion 1.x inpainting checkpoint") as info:
        loading.load_pipeline(path, "inpaint", allow_pickle=True)
    assert str(studio_home / "configs" / "sd1-inpainting") in str(info.value)
    scratch = studio_home / "cache" / "single-file"
    assert not scratch.exists() or not any(scratch.iterdir())  # no converted copy left behind


def test_folder_with_pickled_weights_needs_consent(tiny: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file

    folder = shutil.copytree(tiny["sd"], tmp_path / "bin-unet")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    entry = inspect_model(folder)
    assert entry.needs_consent and entry.precision == "fp32"  # the other parts are safetensors
    with pytest.raises(files.PickleConsentRequired):
        loading.load_pipeline(folder, "txt2img")
    pipe = loading.load_pipeline(folder, "txt2img", allow_pickle=True)
    assert _run(pipe, height=TINY_IMAGE, width=TINY_IMAGE).shape == (TINY_IMAGE, TINY_IMAGE, 3)
