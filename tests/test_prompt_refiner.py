"""The SDXL refiner, from a diffusers folder and from a single file: told apart from SDXL base,
image to image and inpainting only (text to image says what to do instead).

The refiner has ONE text encoder (OpenCLIP bigG with projection: ``text_encoder_2``; no CLIP-L),
and a UNet conditioned on an aesthetic score. ``prompt_fixtures.build_tiny_sdxl_refiner`` builds
a tiny random one (16 px, 2 steps here) and ``export_original_layout`` writes it as a single file
(``conditioner.embedders.0.model.``, no ``conditioner.embedders.1.``), checked against
diffusers' own converters.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from prompt_fixtures import (
    build_tiny_sdxl_refiner,
    config_only_copy,
    export_original_layout,
    hole,
    picture,
)
from safetensors.torch import load_file

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, run_sync
from studio.engine.prompt import loading
from studio.engine.prompt.generate import PipelineCache, generate_job
from studio.engine.prompt.library import ModelLibrary, classify_checkpoint_keys, inspect_model
from studio.engine.prompt.request import GenerateRequest

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("no_network"),
]

REFINES = "refines an existing image"


@pytest.fixture(scope="module")
def refiner(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The refiner as a folder, and as a single file with its weightless config beside it."""
    root = tmp_path_factory.mktemp("refiner")
    folder = build_tiny_sdxl_refiner(root / "refiner")
    single = root / "single"
    single.mkdir()
    file = export_original_layout(folder, single / "xl-refiner.safetensors")
    config_only_copy(folder, single / "xl-refiner")
    return {"folder": folder, "file": file}


def _request(model: Path | str, mode: str, seed: int = 3, **kw: Any) -> GenerateRequest:
    if mode != "txt2img":
        kw.setdefault("image", picture())
    if mode == "inpaint":
        kw.setdefault("mask", hole())
    return GenerateRequest(
        str(model),
        mode=mode,
        prompt="a red circle",
        width=16,
        height=16,
        steps=2,
        seed=seed,
        strength=0.75,
        mask_blur=1,
        **kw,
    )


# -- what it is ------------------------------------------------------------------------------------


def test_the_folder_and_the_file_classify_as_the_refiner(refiner: dict[str, Path]) -> None:
    index = json.loads((refiner["folder"] / "model_index.json").read_text("utf-8"))
    assert index["text_encoder"][0] is None and index["tokenizer"][0] is None
    assert index["requires_aesthetics_score"] is True

    folder, file = inspect_model(refiner["folder"]), inspect_model(refiner["file"])
    assert (folder.kind, folder.arch, folder.inpainting) == (
        "diffusers-folder",
        "sdxl-refiner",
        False,
    )
    assert (file.kind, file.arch, file.inpainting) == ("single-file", "sdxl-refiner", False)
    assert folder.description == file.description == "SDXL refiner"

    keys = load_file(str(refiner["file"])).keys()
    assert any(k.startswith("conditioner.embedders.0.model.") for k in keys)
    assert not any(k.startswith(("conditioner.embedders.1.", "cond_stage_model.")) for k in keys)
    # the same encoder under embedders.1 beside a CLIP-L is SDXL base, not the refiner
    base_keys = {k.replace("embedders.0.model.", "embedders.1.model."): (1,) for k in keys}
    assert classify_checkpoint_keys(base_keys)[0] == "sdxl"


def test_diffusers_converters_turn_the_file_back_into_the_folder(
    refiner: dict[str, Path],
) -> None:
    from diffusers.loaders import single_file_utils as su
    from transformers import CLIPTextModelWithProjection

    folder, checkpoint = refiner["folder"], load_file(str(refiner["file"]))
    assert su.is_open_clip_sdxl_refiner_model(checkpoint)  # how diffusers tells the refiner

    def component(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        (weights,) = (folder / name).glob("*.safetensors")
        return load_file(str(weights)), json.loads((folder / name / "config.json").read_text())

    def same(original: dict[str, torch.Tensor], converted: dict[str, torch.Tensor]) -> None:
        assert sorted(converted) == sorted(original)
        assert all(torch.equal(original[k], converted[k]) for k in original)

    unet, unet_config = component("unet")
    same(unet, su.convert_ldm_unet_checkpoint(checkpoint, unet_config))
    vae, vae_config = component("vae")
    same(vae, su.convert_ldm_vae_checkpoint(checkpoint, vae_config))
    text_2, _ = component("text_encoder_2")
    model = CLIPTextModelWithProjection.from_pretrained(str(folder / "text_encoder_2"))
    same(
        text_2, su.convert_open_clip_checkpoint(model, checkpoint, "conditioner.embedders.0.model.")
    )


def test_the_library_lists_the_refiner(refiner: dict[str, Path], studio_home: Path) -> None:
    from studio.qt.prompt.model_list import describe_type

    library = ModelLibrary()
    added = [library.add(refiner["folder"]), library.add(refiner["file"])]
    listed = {e.id: e for e in ModelLibrary().entries()}
    assert [listed[e.id].arch for e in added] == ["sdxl-refiner", "sdxl-refiner"]
    assert [describe_type(e) for e in added] == ["SDXL refiner folder", "SDXL refiner file"]


# -- what it does -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["folder", "file"])
def test_txt2img_says_the_refiner_refines_an_image(refiner: dict[str, Path], source: str) -> None:
    with pytest.raises(StudioError, match=REFINES) as info:
        loading.load_pipeline(refiner[source], "txt2img")
    assert "Image to image" in str(info.value) and "base model" in str(info.value)
    out = run_sync(
        generate_job(
            _request(refiner[source], "txt2img"), CancelToken(), pipeline_cache=PipelineCache()
        )
    )
    assert not out.ok and REFINES in (out.error or "")


@pytest.mark.parametrize("source", ["folder", "file"])
def test_img2img_and_inpaint_give_images_same_seed_same_image(
    refiner: dict[str, Path], source: str
) -> None:
    model = refiner[source]
    pipe = loading.load_pipeline(model, "img2img")
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert pipe.text_encoder is None and pipe.tokenizer is None and pipe.text_encoder_2 is not None
    assert pipe.config.requires_aesthetics_score and pipe.studio_entry.arch == "sdxl-refiner"
    inpaint = loading.load_pipeline(model, "inpaint")  # a regular UNet: blended latents
    assert type(inpaint).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert not inpaint.studio_native_inpainting

    cache = PipelineCache()
    results: dict[tuple[str, int], np.ndarray] = {}
    for mode, seed in (("img2img", 3), ("img2img", 3), ("img2img", 4), ("inpaint", 3)):
        out = run_sync(
            generate_job(_request(model, mode, seed), CancelToken(), pipeline_cache=cache)
        )
        assert out.ok, out.details
        image = out.result.images[0]
        assert image.shape == (24, 20, 3) and image.dtype == np.uint8  # the canvas image's size
        assert out.result.metadata[0]["generation_size"] == [16, 16]
        if (mode, seed) in results:
            assert np.array_equal(image, results[(mode, seed)])  # same seed, same image
        results[(mode, seed)] = image
    assert not np.array_equal(results[("img2img", 3)], results[("img2img", 4)])
    inpainted, original = results[("inpaint", 3)], picture()
    assert np.array_equal(inpainted[20:], original[20:])  # far from the mask: untouched
    assert not np.array_equal(inpainted[6:14, 5:13], original[6:14, 5:13])
    # with the image-to-image pipeline loaded, text to image still says why not
    out = run_sync(generate_job(_request(model, "txt2img"), CancelToken(), pipeline_cache=cache))
    assert not out.ok and REFINES in (out.error or "")


def test_the_file_gives_the_folders_images(refiner: dict[str, Path]) -> None:
    cache = PipelineCache(max_models=2)
    images = []
    for model in (refiner["file"], refiner["folder"]):
        out = run_sync(
            generate_job(_request(model, "img2img"), CancelToken(), pipeline_cache=cache)
        )
        assert out.ok, out.details
        images.append(out.result.images[0])
    assert np.array_equal(images[0], images[1])


def test_a_refiner_file_without_config_names_the_refiners_files(
    refiner: dict[str, Path], studio_home: Path, tmp_path: Path
) -> None:
    file = Path(shutil.copy(refiner["file"], tmp_path / "alone.safetensors"))
    with pytest.raises(StudioError) as info:
        loading.load_pipeline(file, "img2img")
    message = str(info.value)
    assert "SDXL refiner checkpoint" in message
    assert str(studio_home / "configs" / "sdxl-refiner") in message
    assert "text_encoder_2/config.json" in message and "tokenizer_2/" in message
    assert "text_encoder/" not in message and "tokenizer/" not in message
    # the shared config folder, once added, is used
    config_only_copy(refiner["folder"], studio_home / "configs" / "sdxl-refiner")
    assert loading.load_pipeline(file, "img2img").studio_entry.arch == "sdxl-refiner"
