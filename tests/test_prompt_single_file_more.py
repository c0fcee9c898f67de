"""Single files that go through code tested only for other variants (issue 6's leftovers):

- an SD 2.x inpainting file (9-channel UNet, OpenCLIP-shaped text encoder, linear projections);
- an SDXL inpainting file (9-channel SDXL UNet, two text encoders);
- a pickled ``.ckpt`` SDXL refiner (read weights-only after consent, then as for safetensors).

Each is built tiny (``prompt_fixtures``), written in the original layout, checked against
diffusers' own converters, and then loaded through Studio's code (``loading.load_pipeline``,
``generate_job``): the right architecture and pipeline class, the folder's weights, and seed
for seed the folder's images. Also what the Prompt workspace's model list says about each.
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
    assert_same_tensors,
    assert_same_weights,
    build_tiny_sd2,
    build_tiny_sdxl,
    build_tiny_sdxl_refiner,
    config_only_copy,
    export_original_layout,
    export_pickled_checkpoint,
    hole,
    picture,
)
from safetensors.torch import load_file

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, run_sync
from studio.engine.prompt import files, loading
from studio.engine.prompt.generate import PipelineCache, generate_job
from studio.engine.prompt.library import IMAGE_ONLY_ARCHS, ModelLibrary, classify_checkpoint_keys
from studio.engine.prompt.request import GenerateRequest

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("no_network"),
]

# name -> (builder, arch, inpainting, file suffix)
KINDS: dict[str, tuple[Any, str, bool, str]] = {
    "sd2-inpainting": (lambda f: build_tiny_sd2(f, inpainting=True), "sd2", True, ".safetensors"),
    "sdxl-inpainting": (
        lambda f: build_tiny_sdxl(f, inpainting=True),
        "sdxl",
        True,
        ".safetensors",
    ),
    "refiner-ckpt": (build_tiny_sdxl_refiner, "sdxl-refiner", False, ".ckpt"),
}
INPAINTING = ["sd2-inpainting", "sdxl-inpainting"]
TEXT_ENCODERS = {
    "sd2-inpainting": ("text_encoder",),
    "sdxl-inpainting": ("text_encoder", "text_encoder_2"),
    "refiner-ckpt": ("text_encoder_2",),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Each kind as a diffusers folder, and as one file with its weightless config beside it."""
    root = tmp_path_factory.mktemp("single_file_more")
    (root / "files").mkdir()
    out = {}
    for name, (build, _, _, suffix) in KINDS.items():
        folder = build(root / "folders" / name)
        file = root / "files" / f"{name}{suffix}"
        if suffix == ".ckpt":
            export_pickled_checkpoint(folder, file)
        else:
            export_original_layout(folder, file)
        config_only_copy(folder, root / "files" / name)
        out[name] = {"folder": folder, "file": file}
    return out


def _allow(name: str) -> bool:
    return KINDS[name][3] == ".ckpt"


def _request(model: Path, mode: str, seed: int = 3) -> GenerateRequest:
    kw: dict[str, Any] = {}
    if mode != "txt2img":
        kw["image"] = picture()
    if mode == "inpaint":
        kw["mask"] = hole()
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


# -- the files are what they claim to be --------------------------------------------------------


@pytest.mark.parametrize("name", list(KINDS))
def test_diffusers_converters_turn_the_file_back_into_the_folder(
    models: dict[str, dict[str, Path]], name: str
) -> None:
    from diffusers.loaders import single_file_utils as su
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder, file = models[name]["folder"], models[name]["file"]
    _, arch, inpainting, _ = KINDS[name]
    if _allow(name):
        assert files.sniff_format(file) is files.FileFormat.TORCH_ZIP
        with pytest.raises(files.PickleConsentRequired):
            files.read_state_dict(file)
    checkpoint = files.read_state_dict(file, allow_pickle=True)
    assert classify_checkpoint_keys({k: v.shape for k, v in checkpoint.items()}) == (
        arch,
        inpainting,
    )
    conv_in = checkpoint["model.diffusion_model.input_blocks.0.0.weight"]
    assert conv_in.shape[1] == (9 if inpainting else 4)

    def component(sub: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        (weights,) = (folder / sub).glob("*.safetensors")
        return load_file(str(weights)), json.loads((folder / sub / "config.json").read_text())

    unet, unet_config = component("unet")
    assert unet_config["in_channels"] == conv_in.shape[1]
    assert_same_tensors(unet, su.convert_ldm_unet_checkpoint(checkpoint, unet_config))
    vae, vae_config = component("vae")
    assert_same_tensors(vae, su.convert_ldm_vae_checkpoint(checkpoint, vae_config))
    # OpenCLIP-shaped encoders: SD 2.x's only one, SDXL's second, the refiner's only one
    open_clip = {
        "sd2": ("text_encoder", CLIPTextModel, "cond_stage_model.model."),
        "sdxl": ("text_encoder_2", CLIPTextModelWithProjection, "conditioner.embedders.1.model."),
        "sdxl-refiner": (
            "text_encoder_2",
            CLIPTextModelWithProjection,
            "conditioner.embedders.0.model.",
        ),
    }[arch]

    def flat(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # transformers >= 5.6 dropped CLIPTextModel's "text_model." level (not WithProjection's)
        return {k.removeprefix("text_model."): v for k, v in state.items()}

    sub, cls, prefix = open_clip
    text, _ = component(sub)
    model = cls.from_pretrained(str(folder / sub))
    assert_same_tensors(
        flat(text), flat(su.convert_open_clip_checkpoint(model, checkpoint, prefix))
    )
    if arch == "sdxl":  # and its CLIP-L
        text, _ = component("text_encoder")
        assert_same_tensors(flat(text), flat(su.convert_ldm_clip_checkpoint(checkpoint)))


# -- what the model list shows --------------------------------------------------------------------


# name -> (arch, ModelEntry.description, the Prompt list's type column, needs consent)
LISTED = {
    "sd2-inpainting": ("sd2", "SD 2.x inpainting", "SD 2.x file, inpainting", False),
    "sdxl-inpainting": ("sdxl", "SDXL inpainting", "SDXL file, inpainting", False),
    # a pickle is not opened until the user agrees, so the list cannot tell what it is yet
    "refiner-ckpt": ("unknown", "unknown type", "Unknown file, pickle", True),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_the_model_list_describes_the_file(
    models: dict[str, dict[str, Path]], studio_home: Path, name: str
) -> None:
    from studio.qt.prompt.model_list import describe_type

    arch, description, label, consent = LISTED[name]
    added = ModelLibrary().add(models[name]["file"])
    (entry,) = [e for e in ModelLibrary().entries() if e.id == added.id]
    assert (entry.kind, entry.arch, entry.needs_consent) == ("single-file", arch, consent)
    assert entry.inpainting == (name in INPAINTING)
    assert entry.description == description
    assert describe_type(entry) == label
    # Text to image is offered unless the architecture only refines images (the workspace greys
    # it out for IMAGE_ONLY_ARCHS); inpainting models do all three modes through their pipeline.
    assert entry.arch not in IMAGE_ONLY_ARCHS


# -- loading: the right pipeline, the folder's weights ---------------------------------------------


@pytest.mark.parametrize("name", INPAINTING)
def test_an_inpainting_file_loads_the_inpainting_pipeline_with_the_folders_weights(
    models: dict[str, dict[str, Path]], name: str
) -> None:
    _, arch, _, _ = KINDS[name]
    expected = (
        "StableDiffusionXLInpaintPipeline" if arch == "sdxl" else "StableDiffusionInpaintPipeline"
    )
    file = models[name]["file"]
    pipes = {task: loading.load_pipeline(file, task) for task in loading.TASKS}
    ref = loading.load_pipeline(models[name]["folder"], "inpaint")
    for task, pipe in pipes.items():  # the UNet needs the mask channels: every task inpaints
        assert type(pipe).__name__ == expected, task
        assert pipe.studio_native_inpainting and pipe.unet.config.in_channels == 9
        assert (pipe.studio_entry.arch, pipe.studio_entry.inpainting) == (arch, True)
    pipe = pipes["inpaint"]
    assert type(ref).__name__ == expected
    for component in ("unet", "vae", *TEXT_ENCODERS[name]):
        assert_same_weights(getattr(pipe, component), getattr(ref, component))
    assert dict(pipe.scheduler.config) == dict(ref.scheduler.config)
    if arch == "sd2":
        assert pipe.text_encoder.config.hidden_act == "gelu"
        assert pipe.unet.config.use_linear_projection
    else:
        assert not pipe.config.requires_aesthetics_score
        assert pipe.text_encoder_2.config.hidden_size == 24


def test_a_pickled_refiner_loads_with_consent_as_the_refiner(
    models: dict[str, dict[str, Path]], studio_home: Path
) -> None:
    file = models["refiner-ckpt"]["file"]
    with pytest.raises(files.PickleConsentRequired):
        loading.load_pipeline(file, "img2img")
    # Text to image: the refiner's message once the file is read, not a diffusers error.
    with pytest.raises(StudioError, match="refines an existing image"):
        loading.load_pipeline(file, "txt2img", allow_pickle=True)
    pipe = loading.load_pipeline(file, "img2img", allow_pickle=True)
    ref = loading.load_pipeline(models["refiner-ckpt"]["folder"], "img2img")
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert pipe.text_encoder is None and pipe.tokenizer is None
    assert pipe.config.requires_aesthetics_score and not pipe.studio_native_inpainting
    # listed as "unknown" (unread), the loaded pipeline says what the file turned out to be
    assert (pipe.studio_entry.arch, pipe.studio_entry.inpainting) == ("sdxl-refiner", False)
    assert loading.is_refiner(pipe)
    for component in ("unet", "vae", "text_encoder_2"):
        assert_same_weights(getattr(pipe, component), getattr(ref, component))
    inpaint = loading.load_pipeline(file, "inpaint", allow_pickle=True)  # blended latents
    assert type(inpaint).__name__ == "StableDiffusionXLImg2ImgPipeline"
    with pytest.raises(StudioError, match="refines an existing image"):
        loading.pipeline_components_from(pipe, "txt2img")
    scratch = studio_home / "cache" / "single-file"
    assert not scratch.exists() or not any(scratch.iterdir())  # the safetensors copies are gone


# -- images: seed for seed the folder's ------------------------------------------------------------

MODES = {
    "sd2-inpainting": ("inpaint", "txt2img"),
    "sdxl-inpainting": ("inpaint", "txt2img"),
    "refiner-ckpt": ("img2img", "inpaint"),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_the_file_gives_the_folders_images(models: dict[str, dict[str, Path]], name: str) -> None:
    cache = PipelineCache(max_models=2)
    for mode in MODES[name]:
        images = []
        for model, seed in (("file", 3), ("folder", 3), ("file", 4)):
            out = run_sync(
                generate_job(
                    _request(models[name][model], mode, seed),
                    CancelToken(),
                    pipeline_cache=cache,
                    allow_pickle=_allow(name),
                )
            )
            assert out.ok, out.details
            images.append(out.result.images[0])
        assert images[0].shape == ((16, 16, 3) if mode == "txt2img" else (24, 20, 3))
        assert np.array_equal(images[0], images[1]), mode  # same seed, same image
        assert not np.array_equal(images[0], images[2]), mode  # the comparison can fail
        if mode == "inpaint":  # far from the mask the picture is untouched, under it repainted
            original = picture()
            assert np.array_equal(images[0][20:], original[20:])
            assert not np.array_equal(images[0][6:14, 5:13], original[6:14, 5:13])


# -- configs: the shared folder for each kind, and a wrong one named ------------------------------


@pytest.mark.parametrize(("name", "key"), [("sd2-inpainting", "sd2"), ("sdxl-inpainting", "sdxl")])
def test_an_inpainting_file_without_config_names_its_own_shared_folder(
    models: dict[str, dict[str, Path]], studio_home: Path, tmp_path: Path, name: str, key: str
) -> None:
    file = Path(shutil.copy(models[name]["file"], tmp_path / "alone.safetensors"))
    # the regular model's shared config is not used for an inpainting file
    config_only_copy(models[name]["folder"], studio_home / "configs" / key)
    with pytest.raises(StudioError) as info:
        loading.load_pipeline(file, "inpaint")
    message = str(info.value)
    assert "inpainting checkpoint" in message
    assert str(studio_home / "configs" / f"{key}-inpainting") in message
    assert ("text_encoder_2/config.json" in message) == (key == "sdxl")
    shutil.move(studio_home / "configs" / key, studio_home / "configs" / f"{key}-inpainting")
    pipe = loading.load_pipeline(file, "inpaint")
    assert pipe.studio_native_inpainting and pipe.studio_entry.arch == key


@pytest.mark.parametrize(("name", "channels"), [("sd2-inpainting", 4), ("refiner-ckpt", 9)])
def test_a_config_for_the_other_unet_is_refused_with_what_to_do(
    models: dict[str, dict[str, Path]], studio_home: Path, tmp_path: Path, name: str, channels: int
) -> None:
    # The config beside the file is the same model's, with the other UNet input: a regular
    # model's config beside an inpainting file, or an inpainting config beside a regular file.
    file = Path(shutil.copy(models[name]["file"], tmp_path / f"model{KINDS[name][3]}"))
    config = config_only_copy(models[name]["folder"], tmp_path / "model")
    unet = config / "unet" / "config.json"
    unet.write_text(json.dumps({**json.loads(unet.read_text()), "in_channels": channels}))
    with pytest.raises(StudioError) as info:
        loading.load_pipeline(file, "img2img", allow_pickle=True)
    message = str(info.value)
    kind = "inpainting" if name in INPAINTING else "regular"
    assert f"is {'an' if kind == 'inpainting' else 'a'} {kind} checkpoint" in message
    assert str(config) in message and f"in_channels {channels}" in message
    shared = studio_home / "configs" / loading.config_key(KINDS[name][1], KINDS[name][2])
    assert str(shared) in message
    assert "ignore_mismatched_sizes" not in message  # not diffusers' advice for training code
