"""Single-file checkpoints (original SD 1.x / 2.x / SDXL layout) that really load, end to end.

diffusers reads this layout but cannot write it, so ``prompt_fixtures.export_original_layout``
writes it from a tiny diffusers folder. First diffusers' own converters must turn the file back
into exactly the folder's state dicts; then ``load_pipeline`` on the file (with a local config
folder, offline) must give the folder's weights and, seed for seed, the folder's images.
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
    TINY_IMAGE,
    assert_same_tensors,
    assert_same_weights,
    build_tiny_sd,
    build_tiny_sd2,
    build_tiny_sdxl,
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
from studio.engine.prompt.library import ModelLibrary, classify_checkpoint_keys
from studio.engine.prompt.request import GenerateRequest

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("no_network"),
]

# name -> (builder, arch, inpainting)
KINDS: dict[str, tuple[Any, str, bool]] = {
    "sd1": (build_tiny_sd, "sd1", False),
    "sd1-inpainting": (lambda f: build_tiny_sd(f, inpainting=True), "sd1", True),
    "sd2": (build_tiny_sd2, "sd2", False),
    "sdxl": (build_tiny_sdxl, "sdxl", False),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("single_file_models")
    out = {name: build(root / name) for name, (build, _, _) in KINDS.items()}
    # An SD 2.x "768-v" model: the same weights, a scheduler that predicts v (what
    # build_tiny_sd2(prediction_type="v_prediction") writes, without building it twice).
    v = Path(shutil.copytree(out["sd2"], root / "sd2-v"))
    scheduler = v / "scheduler" / "scheduler_config.json"
    config = json.loads(scheduler.read_text("utf-8"))
    scheduler.write_text(json.dumps({**config, "prediction_type": "v_prediction"}), "utf-8")
    out["sd2-v"] = v
    return out


@pytest.fixture(scope="module")
def exported(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("single_files")
    return {
        name: export_original_layout(f, root / f"{name}.safetensors") for name, f in folders.items()
    }


def file_with_config_beside(
    exported: dict[str, Path], folders: dict[str, Path], name: str, tmp_path: Path
) -> Path:
    """A copy of the exported file with a weightless config folder next to it (``<stem>/``)."""
    file = Path(shutil.copy(exported[name], tmp_path / f"{name}.safetensors"))
    config_only_copy(folders[name], tmp_path / name)
    return file


def _component(folder: Path, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    (file,) = (folder / name).glob("*.safetensors")
    return load_file(str(file)), json.loads((folder / name / "config.json").read_text("utf-8"))


# -- the exporter is exactly what diffusers' converters undo -----------------------------------


@pytest.mark.parametrize("name", ["sd1", "sd1-inpainting", "sd2", "sdxl"])
def test_diffusers_converters_turn_the_file_back_into_the_folder(
    folders: dict[str, Path], exported: dict[str, Path], name: str
) -> None:
    from diffusers.loaders import single_file_utils as su
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder, checkpoint = folders[name], load_file(str(exported[name]))
    _, arch, inpainting = KINDS[name]
    assert classify_checkpoint_keys({k: v.shape for k, v in checkpoint.items()}) == (
        arch,
        inpainting,
    )
    # the original names, not diffusers' (spot checks of each part of the layout)
    assert checkpoint["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == (
        9 if inpainting else 4
    )
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in checkpoint
    assert checkpoint["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # a 1x1 conv
    assert "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight" in checkpoint
    assert not any(
        k.startswith(("unet.", "vae.", "text_encoder", "down_blocks")) for k in checkpoint
    )

    unet, unet_config = _component(folder, "unet")
    assert_same_tensors(unet, su.convert_ldm_unet_checkpoint(checkpoint, unet_config))
    vae, vae_config = _component(folder, "vae")
    assert_same_tensors(vae, su.convert_ldm_vae_checkpoint(checkpoint, vae_config))

    def flat(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # transformers >= 5.6 dropped CLIPTextModel's "text_model." level; diffusers strips it too
        return {k.removeprefix("text_model."): v for k, v in state.items()}

    text, _ = _component(folder, "text_encoder")
    if arch == "sd1":
        assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in checkpoint
        assert_same_tensors(text, flat(su.convert_ldm_clip_checkpoint(checkpoint)))
    elif arch == "sd2":
        assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in checkpoint
        model = CLIPTextModel.from_pretrained(str(folder / "text_encoder"))
        converted = su.convert_open_clip_checkpoint(model, checkpoint, "cond_stage_model.model.")
        assert_same_tensors(text, flat(converted))
    else:
        assert_same_tensors(text, flat(su.convert_ldm_clip_checkpoint(checkpoint)))
        text_2, _ = _component(folder, "text_encoder_2")
        model = CLIPTextModelWithProjection.from_pretrained(str(folder / "text_encoder_2"))
        converted = su.convert_open_clip_checkpoint(
            model, checkpoint, "conditioner.embedders.1.model."
        )
        assert checkpoint["conditioner.embedders.1.model.text_projection"].shape == (24, 24)
        assert_same_tensors(text_2, converted)


# -- SD 1.x through Studio's own loading ---------------------------------------------------------


def _image(pipe: Any, **kw: Any) -> np.ndarray:
    kw.setdefault("height", TINY_IMAGE)
    kw.setdefault("width", TINY_IMAGE)
    out = pipe(
        "red circle",
        generator=torch.Generator().manual_seed(3),
        num_inference_steps=2,
        output_type="np",
        **kw,
    )
    return out.images[0]


def test_sd1_file_loads_the_folders_pipeline(
    folders: dict[str, Path], exported: dict[str, Path], tmp_path: Path
) -> None:
    file = file_with_config_beside(exported, folders, "sd1", tmp_path)
    assert not list((tmp_path / "sd1").rglob("*.safetensors"))  # the weights come from the file
    pipe = loading.load_pipeline(file, "txt2img")
    ref = loading.load_pipeline(folders["sd1"], "txt2img")
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.safety_checker is None
    assert pipe.studio_entry.kind == "single-file" and pipe.studio_entry.arch == "sd1"
    for component in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(pipe, component), getattr(ref, component))
    assert dict(pipe.scheduler.config) == dict(ref.scheduler.config)
    assert pipe.tokenizer("a red circle").input_ids == ref.tokenizer("a red circle").input_ids
    assert np.array_equal(_image(pipe), _image(ref))
    # a differently seeded image differs, so the comparison above can fail
    other = pipe(
        "red circle",
        generator=torch.Generator().manual_seed(4),
        num_inference_steps=2,
        output_type="np",
        height=TINY_IMAGE,
        width=TINY_IMAGE,
    ).images[0]
    assert not np.array_equal(other, _image(ref))


def test_sd1_file_with_the_shared_config_is_listed_and_generates(
    folders: dict[str, Path], exported: dict[str, Path], studio_home: Path, tmp_path: Path
) -> None:
    config_only_copy(folders["sd1"], studio_home / "configs" / "sd1")
    file = Path(shutil.copy(exported["sd1"], tmp_path / "dream.safetensors"))
    half = export_original_layout(
        folders["sd1"], tmp_path / "dream-fp16.safetensors", dtype=torch.float16
    )
    library = ModelLibrary()
    entry, half_entry = library.add(file), library.add(half)
    assert (entry.kind, entry.file_format, entry.description) == (
        "single-file",
        "safetensors",
        "SD 1.x",
    )
    assert (entry.precision, half_entry.precision) == ("fp32", "fp16")
    assert entry.size_bytes == file.stat().st_size and half_entry.size_bytes < entry.size_bytes
    assert {e.id for e in ModelLibrary().entries()} >= {entry.id, half_entry.id}

    cache = PipelineCache(max_models=2)
    images = {}
    for model in (entry.id, str(folders["sd1"])):  # by library id, and the folder by path
        req = GenerateRequest(model, prompt="a red circle", width=16, height=16, steps=2, seed=7)
        out = run_sync(generate_job(req, CancelToken(), pipeline_cache=cache))
        assert out.ok, out.details
        images[model] = out.result.images[0]
    assert np.array_equal(images[entry.id], images[str(folders["sd1"])])


@pytest.mark.parametrize(
    ("name", "mode", "pipeline"),
    [
        ("sd1", "img2img", "StableDiffusionImg2ImgPipeline"),
        ("sd1", "inpaint", "StableDiffusionImg2ImgPipeline"),  # blended latents, regular UNet
        ("sd1-inpainting", "inpaint", "StableDiffusionInpaintPipeline"),
    ],
)
def test_image_tasks_on_a_single_file_match_the_folder(
    folders: dict[str, Path],
    exported: dict[str, Path],
    tmp_path: Path,
    name: str,
    mode: str,
    pipeline: str,
) -> None:
    file = file_with_config_beside(exported, folders, name, tmp_path)
    task = "inpaint" if mode == "inpaint" else "img2img"
    assert type(loading.load_pipeline(file, task)).__name__ == pipeline
    cache = PipelineCache(max_models=2)
    results = []
    for model in (file, folders[name]):
        kw: dict[str, Any] = {"image": picture()}
        if mode == "inpaint":
            kw["mask"] = hole()
        req = GenerateRequest(
            str(model),
            mode=mode,
            prompt="a red circle",
            width=16,
            height=16,
            steps=2,
            seed=3,
            mask_blur=1,
            **kw,
        )
        out = run_sync(generate_job(req, CancelToken(), pipeline_cache=cache))
        assert out.ok, out.details
        results.append(out.result.images[0])
    assert results[0].shape == (24, 20, 3)
    assert np.array_equal(results[0], results[1])


# -- SD 2.x and SDXL -----------------------------------------------------------------------------


def test_sd2_v_prediction_comes_from_the_local_config(
    folders: dict[str, Path], exported: dict[str, Path], studio_home: Path, tmp_path: Path
) -> None:
    # An epsilon SD 2.x config for every SD 2.x file, and a v-prediction one beside this file:
    # the file itself cannot say which it is; the folder beside it wins.
    config_only_copy(folders["sd2"], studio_home / "configs" / "sd2")
    file = file_with_config_beside(exported, folders, "sd2-v", tmp_path)
    assert loading.load_pipeline(file, "txt2img").scheduler.config.prediction_type == "v_prediction"
    # and it survives the sampler swap generate does (from_config of the model's own config)
    cache = PipelineCache(max_models=3)
    images = []
    for model in (file, folders["sd2-v"]):
        req = GenerateRequest(
            str(model),
            prompt="a red circle",
            width=16,
            height=16,
            steps=2,
            seed=3,
            scheduler="euler_a",
        )
        out = run_sync(generate_job(req, CancelToken(), pipeline_cache=cache))
        assert out.ok, out.details
        images.append(out.result.images[0])
    assert np.array_equal(images[0], images[1])
    # Without the folder beside it, the shared (epsilon) config applies: another image.
    alone = Path(shutil.copy(file, tmp_path / "alone.safetensors"))
    eps = loading.load_pipeline(alone, "txt2img")
    assert eps.scheduler.config.prediction_type == "epsilon"
    req = GenerateRequest(
        str(alone), prompt="a red circle", width=16, height=16, steps=2, seed=3, scheduler="euler_a"
    )
    out = run_sync(generate_job(req, CancelToken(), pipeline_cache=cache))
    assert out.ok and not np.array_equal(out.result.images[0], images[0])


def test_sd2_file_loads_the_folders_weights(
    folders: dict[str, Path], exported: dict[str, Path], tmp_path: Path
) -> None:
    file = file_with_config_beside(exported, folders, "sd2", tmp_path)
    pipe = loading.load_pipeline(file, "txt2img")
    ref = loading.load_pipeline(folders["sd2"], "txt2img")
    assert pipe.studio_entry.arch == "sd2" and pipe.text_encoder.config.hidden_act == "gelu"
    for component in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(pipe, component), getattr(ref, component))
    assert np.array_equal(_image(pipe), _image(ref))


def test_sdxl_file_loads_the_folders_pipeline(
    folders: dict[str, Path], exported: dict[str, Path], tmp_path: Path
) -> None:
    file = file_with_config_beside(exported, folders, "sdxl", tmp_path)
    pipe = loading.load_pipeline(file, "txt2img")
    ref = loading.load_pipeline(folders["sdxl"], "txt2img")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and pipe.studio_entry.arch == "sdxl"
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert_same_weights(getattr(pipe, component), getattr(ref, component))
    assert np.array_equal(_image(pipe), _image(ref))
    img2img = loading.load_pipeline(file, "img2img")
    assert type(img2img).__name__ == "StableDiffusionXLImg2ImgPipeline"


def test_a_config_the_file_cannot_fill_is_refused_with_a_message(tmp_path: Path) -> None:
    # build_tiny_sd's SDXL gives both text encoders width 16: in a single file diffusers then
    # reads encoder 0's CLIP weights for encoder 2 and leaves its projection empty ("meta").
    folder = build_tiny_sd(tmp_path / "same-width-xl", sdxl=True)
    file = export_original_layout(folder, tmp_path / "xl.safetensors")
    config_only_copy(folder, tmp_path / "xl")
    with pytest.raises(StudioError, match="does not contain all the weights") as info:
        loading.load_pipeline(file, "txt2img")
    assert "text_encoder_2" in str(info.value) and str(tmp_path / "xl") in str(info.value)


def test_pickled_sd1_checkpoint_loads_with_consent_and_leaves_no_copy(
    folders: dict[str, Path], exported: dict[str, Path], studio_home: Path, tmp_path: Path
) -> None:
    # The .ckpt shape of the same checkpoint: {"state_dict": tensors}, read weights-only.
    file = tmp_path / "old.ckpt"
    torch.save({"state_dict": load_file(str(exported["sd1"]))}, file)
    config_only_copy(folders["sd1"], tmp_path / "old")
    pipe = loading.load_pipeline(file, "txt2img", allow_pickle=True)
    ref = loading.load_pipeline(folders["sd1"], "txt2img")
    for component in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(pipe, component), getattr(ref, component))
    scratch = studio_home / "cache" / "single-file"
    assert not scratch.exists() or not any(scratch.iterdir())  # the safetensors copy is gone
