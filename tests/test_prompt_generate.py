"""Prompt generation with tiny random Stable Diffusion pipelines (CPU, 16-24 px, 2-3 steps)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from prompt_fixtures import build_tiny_sd, hole, picture

from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.device import is_out_of_memory
from studio.engine.prompt import memory as mem
from studio.engine.prompt.bridge import latent_preview
from studio.engine.prompt.generate import PipelineCache, generate_job
from studio.engine.prompt.history import list_history, save_generation
from studio.engine.prompt.pngmeta import png_bytes, read_png_metadata, write_png
from studio.engine.prompt.request import GenerateRequest
from studio.engine.prompt.xygrid import xy_grid_job

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_sd")
    return {
        "sd": build_tiny_sd(root / "sd"),
        "inpainting": build_tiny_sd(root / "sd-inpainting", inpainting=True),
    }


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache(max_models=2)


def request(model: Path, **kw) -> GenerateRequest:
    defaults = dict(prompt="a red circle", width=16, height=16, steps=3, mask_blur=1)
    return GenerateRequest(str(model), **{**defaults, **kw})


def run(
    req: GenerateRequest,
    cache: PipelineCache,
    token: CancelToken | None = None,
    progress: list[Progress] | None = None,
):
    on = progress.append if progress is not None else None
    return run_sync(generate_job(req, token or CancelToken(), pipeline_cache=cache), token, on)


# -- modes and sizes ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["sd", "inpainting"])
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_modes_give_images_of_the_requested_size(models, cache, which, mode):
    kw = {}
    if mode != "txt2img":
        kw["image"] = picture()
    if mode == "inpaint":
        kw["mask"] = hole()
    out = run(request(models[which], mode=mode, batch_count=2, **kw), cache)
    assert out.ok, out.details
    expected = (16, 16, 3) if mode == "txt2img" else (24, 20, 3)
    assert [im.shape for im in out.result.images] == [expected, expected]
    assert all(im.dtype == np.uint8 for im in out.result.images)
    assert out.result.seeds == [0, 1]
    assert [m["seed"] for m in out.result.metadata] == [0, 1]
    if mode == "inpaint":
        original, result = kw["image"], out.result.images[0]
        # Far from the (grown, feathered) mask the pixels are exactly the original's...
        assert np.array_equal(result[18:], original[18:])
        # ... and inside it they were regenerated.
        assert not np.array_equal(result[7:13, 6:12], original[7:13, 6:12])


def test_only_masked_area_keeps_the_rest_and_the_size(models, cache):
    image, mask = picture(40, 40), np.zeros((40, 40), np.uint8)
    mask[30:34, 30:34] = 1
    req = request(
        models["sd"],
        mode="inpaint",
        image=image,
        mask=mask,
        only_masked=True,
        only_masked_padding=2,
    )
    out = run(req, cache)
    assert out.ok, out.details
    result = out.result.images[0]
    assert result.shape == image.shape
    assert np.array_equal(result[:25], image[:25])
    assert not np.array_equal(result[30:34, 30:34], image[30:34, 30:34])
    assert out.result.metadata[0]["generation_size"] == [16, 16]


def test_same_seed_same_image_different_seed_different(models, cache):
    a = run(request(models["sd"], seed=5, scheduler="euler_a"), cache).result.images[0]
    b = run(request(models["sd"], seed=5, scheduler="euler_a"), cache).result.images[0]
    c = run(request(models["sd"], seed=6, scheduler="euler_a"), cache).result.images[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # The second image of a batch is the image of its own seed.
    batch = run(request(models["sd"], seed=5, batch_count=2, scheduler="euler_a"), cache)
    assert np.array_equal(batch.result.images[0], a)
    assert np.array_equal(batch.result.images[1], c)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp_2m", "unipc"])
def test_every_scheduler_runs_and_is_the_one_asked_for(models, cache, scheduler):
    out = run(request(models["sd"], scheduler=scheduler, steps=2), cache)
    assert out.ok, out.details
    key = (str(models["sd"].resolve()), "txt2img", "cpu", "fp32", False)
    from studio.engine.prompt.request import SCHEDULERS

    assert type(cache.get(key).scheduler).__name__ == SCHEDULERS[scheduler]


def test_missing_inputs_and_bad_sizes_are_clear():
    with pytest.raises(StudioError, match="multiple of 8"):
        GenerateRequest("m", width=20)
    with pytest.raises(StudioError, match="same size"):
        GenerateRequest("m", mode="inpaint", image=picture(), mask=np.ones((8, 8), np.uint8))
    with pytest.raises(StudioError, match="needs an image"):
        GenerateRequest("m", mode="img2img").require_inputs()
    with pytest.raises(StudioError, match="needs a mask"):
        GenerateRequest("m", mode="inpaint", image=picture()).require_inputs()
    with pytest.raises(StudioError, match="mask is empty"):
        GenerateRequest("m", mode="inpaint", image=picture(), mask=hole() * 0).require_inputs()


def test_unknown_model_says_what_to_do(cache):
    out = run(request(Path("no-such-model")), cache)
    assert out.status is Status.FAILED and "model library" in out.error


# -- cancel and previews ---------------------------------------------------------------------


def _count_decodes(monkeypatch) -> list[int]:
    from diffusers import AutoencoderKL

    calls, original = [], AutoencoderKL.decode

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "decode", counting)
    return calls


def test_cancel_mid_run_returns_nothing_and_decodes_nothing(models, cache, monkeypatch):
    decodes = _count_decodes(monkeypatch)
    token = CancelToken()
    steps: list[int] = []

    def on_progress(p: Progress) -> None:
        if p.stage == "generate" and p.step:
            steps.append(p.step)
            token.cancel()

    out = run_sync(
        generate_job(request(models["sd"], steps=3), token, pipeline_cache=cache),
        token,
        on_progress,
    )
    assert out.status is Status.CANCELLED and out.result is None
    assert steps == [1]
    assert decodes == []  # the image was never finished
    assert not [t for t in threading.enumerate() if t.name == "studio-generate"]


def test_cancel_inside_the_pipeline_raises_cancelled(models, cache, monkeypatch):
    """Cancelled from another thread while the pipeline runs: the callback stops it."""
    from studio.core.jobs import Cancelled

    decodes = _count_decodes(monkeypatch)
    token = CancelToken()
    job = generate_job(request(models["sd"], steps=3, preview_every=0), token, pipeline_cache=cache)
    for p in job:
        if p.stage == "generate":
            token.cancel()  # the worker sees it at its next step, before any decode
            break
    with pytest.raises(Cancelled):
        for _ in job:
            pass
    assert decodes == []


def test_previews_arrive_while_the_pipeline_runs(models, cache):
    """The UNet's later steps wait until the job has delivered the first preview: if previews
    only came at the end, this would time out."""
    seen_preview = threading.Event()
    waited: list[bool] = []
    calls = [0]

    def hold(_module, _args):
        calls[0] += 1
        if calls[0] == 3:  # the third UNet call is step 3's
            waited.append(seen_preview.wait(timeout=20))

    previews: list[np.ndarray] = []

    def on_progress(p: Progress) -> None:
        if p.stage == "generate" and p.image is not None and "step" in p.message:
            previews.append(p.image)
            seen_preview.set()

    req = request(models["sd"], steps=4, guidance=1.0)  # guidance 1: one UNet call per step
    run(req, cache)  # loaded and cached
    pipe = cache.get((str(models["sd"].resolve()), "txt2img", "cpu", "fp32", False))
    handle = pipe.unet.register_forward_pre_hook(hold)
    try:
        out = run_sync(generate_job(req, CancelToken(), pipeline_cache=cache), None, on_progress)
    finally:
        handle.remove()
    assert out.ok
    assert waited == [True]
    assert len(previews) == 4
    assert previews[0].shape == (16, 16, 3) and previews[0].dtype == np.uint8


def test_latent_preview_maps_four_channels_to_rgb():
    latents = torch.zeros(1, 4, 8, 6)
    latents[0, 3] = -2.0  # the 4th channel pulls towards blue... and the map saturates
    img = latent_preview(latents).numpy()
    assert img.shape == (8, 6, 3) and img.dtype == np.uint8
    assert img[..., 2].mean() > img[..., 0].mean()


# -- memory: out-of-memory retries and compile fallback ----------------------------------------


def _fail_calls(monkeypatch, times: int) -> list[int]:
    from diffusers import StableDiffusionPipeline

    calls, original = [], StableDiffusionPipeline.__call__

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) <= times:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", failing)
    return calls


def test_out_of_memory_retries_one_rung_lighter(models, cache, monkeypatch):
    calls = _fail_calls(monkeypatch, times=1)
    progress: list[Progress] = []
    out = run(request(models["sd"], memory="full"), cache, progress=progress)
    assert out.ok, out.details
    assert len(calls) == 2
    assert any("retrying with memory=balanced" in p.message for p in progress)
    assert out.result.metadata[0]["memory_rung"] == "balanced"
    pipe = cache.get((str(models["sd"].resolve()), "txt2img", "cpu", "fp32", False))
    assert pipe._studio_memory_plan.attention_slicing


def test_out_of_memory_at_every_rung_says_what_to_change(models, cache, monkeypatch):
    calls = _fail_calls(monkeypatch, times=99)
    out = run(request(models["sd"], memory="full"), cache)
    assert out.status is Status.FAILED
    assert len(calls) == 3  # full, balanced, low
    assert "Out of memory" in out.error and "smaller size" in out.error


def test_memory_plans():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert mem.choose_plan("auto", cpu, 512, 512, torch.float32).rung == "full"
    gib = mem.GIB
    assert mem.choose_plan("auto", cuda, 512, 512, torch.float16, free=20 * gib).rung == "full"
    assert mem.choose_plan("auto", cuda, 512, 512, torch.float16, free=2 * gib).rung == "balanced"
    assert mem.choose_plan("auto", cuda, 1024, 1024, torch.float16, free=2 * gib).rung == "low"
    assert mem.choose_plan("low", cpu, 64, 64, torch.float32).vae_tiling
    assert mem.lighter(mem.plan_for("low", cpu), cpu) is None
    low = mem.plan_for("low", cuda)
    assert low.cpu_offload == mem.offload_available()
    if not low.cpu_offload:
        assert "accelerate" in low.note
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shapes do not match"))


def test_compile_failure_falls_back_to_eager(models, cache, monkeypatch):
    def broken_compile(fn, *args, **kwargs):
        def run_compiled(*a, **k):
            raise RuntimeError("inductor: backend compiler failed")

        return run_compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    progress: list[Progress] = []
    out = run(request(models["sd"], compile=True), cache, progress=progress)
    assert out.ok, out.details
    assert any("torch.compile failed" in p.message for p in progress)
    assert out.result.metadata[0]["compiled"] is False
    pipe = cache.get((str(models["sd"].resolve()), "txt2img", "cpu", "fp32", False))
    assert pipe.unet._compiled_call_impl is None


# -- metadata, history, grids -----------------------------------------------------------------


def test_png_metadata_round_trips_and_restores_the_request(models, cache, tmp_path):
    req = request(models["sd"], seed=3, batch_count=2, negative_prompt="blurry, dark")
    out = run(req, cache)
    meta = out.result.metadata[1]
    path = write_png(tmp_path / "out.png", out.result.images[1], meta)
    assert read_png_metadata(path) == meta
    assert read_png_metadata(path.read_bytes()) == meta
    again = GenerateRequest.from_metadata(read_png_metadata(path))
    assert again == dataclasses.replace(req, seed=4, batch_count=1)
    # Regenerating from the metadata gives the same image.
    assert np.array_equal(run(again, cache).result.images[0], out.result.images[1])
    # The human summary is there too, and a PNG with no settings gives None.
    from PIL import Image

    with Image.open(path) as img:
        assert (
            "Seed: 4" in img.text["parameters"]
            and "Negative prompt: blurry" in img.text["parameters"]
        )
    assert read_png_metadata(png_bytes(out.result.images[0], None)) is None
    assert read_png_metadata(b"not a png") is None


def test_parameters_from_other_tools_are_read():
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a cat\nNegative prompt: dog\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 6.5, Seed: 42, Size: 64x48",
    )
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
    meta = read_png_metadata(buf.getvalue())
    assert meta["prompt"] == "a cat" and meta["negative_prompt"] == "dog"
    assert (meta["steps"], meta["scheduler"], meta["guidance"], meta["seed"]) == (
        20,
        "euler_a",
        6.5,
        42,
    )
    assert (meta["width"], meta["height"]) == (64, 48)


def test_history_saves_atomically_and_lists_newest_first(tmp_path):
    import datetime as dt

    root = tmp_path / "generations"
    when = dt.datetime(2026, 11, 5, 12, 0, 0)
    paths = [
        save_generation(
            picture(), {"model": "m", "prompt": f"p{i}", "seed": i}, root=root, now=when
        )
        for i in range(3)
    ]
    assert [p.name for p in paths] == ["00001.png", "00002.png", "00003.png"]
    assert paths[0].parent == root / "2026-11-05"
    with open(root / "index.jsonl", "a") as fh:
        fh.write('{"path": "torn')  # a crash mid-append
    entries = list_history(2, root=root)
    assert [e.metadata["prompt"] for e in entries] == ["p2", "p1"]
    assert entries[0].thumbnail is not None and entries[0].thumbnail.is_file()
    assert entries[0].read_metadata()["seed"] == 2
    paths[2].unlink()
    assert [e.metadata["prompt"] for e in list_history(5, root=root)] == ["p1", "p0"]
    assert not list(root.rglob("*.tmp"))


def test_xy_grid_has_rows_times_cols_labelled_cells(models, cache):
    req = request(models["sd"], prompt="a red circle", steps=2)
    result = run_sync(
        xy_grid_job(
            req,
            ("seed", ["1", "2", "3"]),
            ("prompt_sr", ["red", "blue"]),
            CancelToken(),
            pipeline_cache=cache,
        )
    )
    assert result.ok, result.details
    grid = result.result
    assert (grid.rows, grid.cols) == (2, 3) and len(grid.cells) == 6
    assert [m["seed"] for m in grid.cell_metadata] == [1, 2, 3, 1, 2, 3]
    assert [m["prompt"] for m in grid.cell_metadata][2:4] == ["a red circle", "a blue circle"]
    h, w, _ = grid.image.shape
    assert h > 2 * 16 and w > 3 * 16  # cells plus the label margins
    assert h - 2 * 16 < 80 and w - 3 * 16 < 200
    assert grid.x_labels == ["Seed: 1", "Seed: 2", "Seed: 3"] and grid.y_labels == ["red", "blue"]
    assert len(grid.metadata["xy_grid"]["cells"]) == 6


def test_xy_grid_checks_axes_before_running():
    req = GenerateRequest("m", prompt="a red circle")
    bad = [
        (("colour", [1]), "cannot vary"),
        (("prompt_sr", ["green", "blue"]), "not in the prompt"),
        (("steps", ["many"]), "not a valid steps"),
        (("scheduler", ["warp"]), "unknown scheduler"),
    ]
    for axis, message in bad:
        with pytest.raises(StudioError, match=message):
            next(xy_grid_job(req, axis, None, CancelToken()))


def test_a_studio_run_folder_goes_to_the_run_adapter(tmp_path, monkeypatch):
    import sys
    import types

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    seen = []

    def generate_with_run(path, req, token):
        seen.append(Path(path))
        yield Progress("generate", 1, 1)
        return "from the run"

    fake = types.ModuleType("studio.engine.prompt.studio_models")
    fake.generate_with_run = generate_with_run
    monkeypatch.setitem(sys.modules, "studio.engine.prompt.studio_models", fake)
    out = run_sync(generate_job(GenerateRequest(str(run_dir), prompt="x"), CancelToken()))
    assert out.ok and out.result == "from the run"
    assert seen == [run_dir.resolve()]


# -- unloading --------------------------------------------------------------------------------


def test_release_unloads_every_pipeline_and_says_what(models, tmp_path):
    cache = PipelineCache(max_models=2)
    assert run(request(models["sd"]), cache).ok
    assert len(cache) == 1 and cache.models() == [str(models["sd"].resolve())]
    assert not cache.on_gpu()  # a CPU pipeline: training on a GPU leaves it alone
    line = cache.release()
    assert len(cache) == 0 and "Unloaded sd" in line and "next Generate" in line
    assert cache.release() == "No model was loaded."
    assert run(request(models["sd"]), cache).ok  # it loads again


def test_training_on_a_gpu_unloads_gpu_pipelines_first(monkeypatch):
    from studio.engine.prompt import cache as gen

    cache = PipelineCache(max_models=2)
    monkeypatch.setattr(gen, "_default_cache", cache)
    cpu_key = ("/m/a", "txt2img", "cpu", "fp32", False)
    cache.put(cpu_key, object())
    assert gen.make_room_for_training("auto") is None  # nothing on a GPU
    cache.put(("/m/b", "txt2img", "cuda:0", "fp16", False), object())
    assert gen.make_room_for_training("cpu") is None  # training on the CPU needs no room there
    line = gen.make_room_for_training("auto")
    assert line is not None and "Making room for training" in line and "Unloaded a, b" in line
    assert len(cache) == 0
    cache.put(("/m/c", "txt2img", "cpu", "fp16", True), object())  # offloaded: GPU while it runs
    assert gen.make_room_for_training(None) is not None
