"""Text-to-image diffusion trained here (``diffusion.text``): captions in, prompts out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_MODELS, train_tiny_run
from PIL import Image

from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.batches import DeviceImages
from studio.engine.data import load_dataset, scan_folder
from studio.engine.prompt.request import GenerateRequest
from studio.engine.prompt.studio_models import generate_with_run
from studio.models.base import Batch, Capability, StepContext
from studio.models.diffusion.text import TextDiffusion, TextDiffusionConfig
from studio.models.diffusion.text_encoder import WordTokenizer, build_vocabulary, words
from studio.models.registry import load_model

TINY = TINY_MODELS["diffusion.text"]
COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 210)}


def make(captions: list[str], res: int = 8, **kw) -> TextDiffusion:
    settings = TextDiffusion.config_for_data({"resolution": res, **TINY, **kw}, captions)
    model = TextDiffusion(TextDiffusionConfig(**settings))
    model.configure_optimizers()
    return model


def seeded(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_captioned(folder: Path, n: int = 16, size: int = 16) -> Path:
    """Solid red or blue squares captioned "red square" / "blue square"; two images without a
    sidecar in a class folder ("blue_things"), one at the root with neither."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = "red" if i % 2 == 0 else "blue"
        img = np.clip(np.array(COLOURS[name]) + rng.normal(0, 6, (size, size, 3)), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"a {name} square\n", encoding="utf-8")
    (folder / "blue_things").mkdir()
    for i in range(2):
        Image.new("RGB", (size, size), COLOURS["blue"]).save(folder / "blue_things" / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> Path:
    return make_captioned(tmp_path_factory.mktemp("captioned"))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, captioned) -> Path:
    run = tmp_path_factory.mktemp("text_run") / "run"
    return train_tiny_run(run, "diffusion.text", captioned, steps=3, holdout_fraction=0.0)


# -- captions: data, batches, tokenizer ---------------------------------------------------------


def test_captions_fall_back_to_folder_names_then_empty(tmp_path, captioned):
    root = tmp_path / "mixed"
    root.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "loose.png")  # no sidecar, no folder
    (root / "red_cars").mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "red_cars" / "a.png")
    Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "red_cars" / "b.png")
    (root / "red_cars" / "b.txt").write_text("  a shiny red car \n", encoding="utf-8")
    data = run_sync(load_dataset(run_sync(scan_folder(root)).result, 8)).result
    assert dict(zip(data.paths, data.captions)) == {
        "loose.png": "",
        "red_cars/a.png": "red cars",
        "red_cars/b.png": "a shiny red car",
    }
    data = run_sync(load_dataset(run_sync(scan_folder(captioned)).result, 8)).result
    assert data.captions.count("blue things") == 2 and data.captions.count("a red square") == 8


def test_batches_carry_the_captions_of_their_images():
    images = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(6)])
    captions = [f"caption {i}" for i in range(5)] + [None]
    data = DeviceImages(images, None, torch.device("cpu"), 0, 3, False, captions=captions)
    seen = []
    for step in range(4):
        batch = data.batch(step, seeded(step))
        assert batch.captions is not None and len(batch.captions) == 3
        for img, cap in zip(batch.images, batch.captions):
            index = round((float(img[0, 0, 0]) + 1) * 127.5)  # the image's own number
            assert cap == (f"caption {index}" if index < 5 else "")
            seen.append(index)
    assert sorted(seen[:6]) == list(range(6))  # one epoch sees every image once
    assert (
        DeviceImages(images, None, torch.device("cpu"), 0, 3, False).batch(0, seeded()).captions
        is None
    )


def test_tokenizer_vocabulary_and_unknown_words():
    vocab = build_vocabulary(["a red square", "A blue square!", "red-ish"], max_words=10)
    assert vocab == ["a", "red", "square", "blue", "ish"]  # by count, ties alphabetical
    assert build_vocabulary(["b b a c c c"], max_words=2) == ["c", "b"]
    tok = WordTokenizer(vocab, max_tokens=4)
    assert tok.unknown_words("A purple square, purple circle") == ["purple", "circle"]
    ids, mask = tok(["red square", "", "a a a a a a"], torch.device("cpu"))
    assert ids.shape == (3, 4) and mask.tolist()[1] == [1, 0, 0, 0]  # <bos> only
    assert ids[0, 0] == ids[1, 0] == tok.stoi["<bos>"] and ids[2].tolist().count(tok.stoi["a"]) == 3
    assert words("Don't stop_me now") == ["don't", "stop", "me", "now"]


def test_caption_dropout_rate_is_respected():
    caps = ["a red square", "a blue square"] * 50
    model = make(caps, cond_drop_prob=0.25, word_dropout=0.0)
    batch = Batch(images=torch.zeros(len(caps), 3, 8, 8), captions=tuple(caps))
    empty = 0
    for step in range(40):
        out = model._train_captions(batch, StepContext(step, seeded(step)))
        assert all(o in ("", c) for o, c in zip(out, caps))
        empty += sum(o == "" for o in out)
    assert abs(empty / 4000 - 0.25) < 0.03  # binomial sd ~0.007

    # Word dropout removes about that share of words and never empties a caption.
    model = make(caps, cond_drop_prob=0.0, word_dropout=0.5)
    kept = total = 0
    for step in range(20):
        out = model._train_captions(batch, StepContext(step, seeded(step)))
        assert all(o for o in out)
        kept += sum(len(o.split()) for o in out)
        total += sum(len(c.split()) for c in caps)
    # Each of 3 words kept with p 0.5; all dropped (1/8) keeps the caption whole: 0.625.
    assert abs(kept / total - 0.625) < 0.03


# -- the family -----------------------------------------------------------------------------------


def test_family_declares_text_and_builds_its_vocabulary_from_captions():
    assert Capability.TEXT in TextDiffusion.info.capabilities
    settings = TextDiffusion.config_for_data({"resolution": 8}, ["a red square", "blue square"])
    assert settings["vocab"].split() == ["square", "a", "blue", "red"]
    assert settings["sample_prompts"] == "a red square|blue square"
    kept = TextDiffusion.config_for_data(
        {}, ["green"], previous={"vocab": "red", "sample_prompts": "x"}
    )
    assert kept["vocab"] == "red" and kept["sample_prompts"] == "x"  # a resumed run keeps its own
    with pytest.raises(ValueError, match="text width"):
        TextDiffusionConfig(resolution=8, text_dim=10, text_heads=4)


def test_sample_with_prompt_gives_images_of_the_right_shape_and_seed_decides():
    model = make(["a red square", "a blue square"])
    a = model.sample(3, seeded(1), prompt="red square", steps=3, guidance=2.0)
    assert a.shape == (3, 3, 8, 8) and a.min() >= -1 and a.max() <= 1
    b = model.sample(3, seeded(1), prompt="red square", steps=3, guidance=2.0)
    assert torch.equal(a, b)
    assert not torch.equal(
        a, model.sample(3, seeded(2), prompt="red square", steps=3, guidance=2.0)
    )
    per_image = model.sample(2, seeded(1), prompt=["red", "blue"], steps=2, sampler="ddim")
    assert per_image.shape == (2, 3, 8, 8)
    assert model.sample(2, seeded(1), steps=2).shape == (2, 3, 8, 8)  # sample prompts in turn
    with pytest.raises(ValueError, match="does not take"):
        model.sample(1, seeded(), label=0)
    with pytest.raises(ValueError, match="2 prompts"):
        model.sample(2, seeded(), prompt=["a", "b", "c"], steps=1)


def test_the_prompt_changes_the_image_and_the_negative_prompt_is_used():
    model = make(["a red square", "a blue square"])
    with torch.no_grad():  # random weights are enough to see the conditioning path is live
        for p in model.ema.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    red = model.sample(1, seeded(3), prompt="red", steps=3, guidance=3.0)
    blue = model.sample(1, seeded(3), prompt="blue", steps=3, guidance=3.0)
    assert not torch.equal(red, blue)
    neg = model.sample(1, seeded(3), prompt="red", negative_prompt="blue", steps=3, guidance=3.0)
    assert not torch.equal(red, neg)


def test_prompt_conditioning_is_learned():
    """After a short training on solid red / blue images, denoising red images is easier with
    the prompt "red" than with "blue" (and the other way round): the prompt carries colour."""
    torch.manual_seed(0)
    caps = ["red", "blue"] * 8
    data = torch.stack([torch.tensor(COLOURS[c], dtype=torch.float32) / 127.5 - 1 for c in caps])
    data = data[:, :, None, None].expand(-1, -1, 8, 8).contiguous()
    model = make(caps, lr=2e-3, warmup_steps=0, cond_drop_prob=0.1, text_layers=1)
    for step in range(120):
        model.train_step(Batch(data, captions=tuple(caps)), StepContext(step, seeded(step)))

    def loss(colour: str, prompt: str) -> float:
        x0 = data[[caps.index(colour)] * 32]
        gen = seeded(99)
        t = torch.randint(300, 1000, (32,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        hidden, mask = model.encode_prompts([prompt] * 32, use_ema=False)
        x_t = model.scheduler.add_noise(x0, noise, t)
        with torch.no_grad():
            pred = model.unet(x_t, t, **model.unet_inputs(hidden, mask)).sample
        return float(((pred - model.scheduler.get_velocity(x0, noise, t)) ** 2).mean())

    for colour, other in (("red", "blue"), ("blue", "red")):
        right, wrong = loss(colour, colour), loss(colour, other)
        assert right < 0.7 * wrong, (colour, right, wrong)
    red = model.sample(4, seeded(5), prompt="red", steps=10, guidance=3.0).mean(dim=(0, 2, 3))
    blue = model.sample(4, seeded(5), prompt="blue", steps=10, guidance=3.0).mean(dim=(0, 2, 3))
    print("sampled means (RGB)", red.tolist(), blue.tolist())
    assert red[0] - red[2] > 0.2 and blue[2] - blue[0] > 0.2, (red, blue)


def test_unknown_words_are_reported():
    model = make(["a red square"])
    assert model.unknown_words("a purple square or a red disk") == ["purple", "or", "disk"]
    assert model.unknown_words("") == []


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    model = make(["a red square", "a blue square"])
    gen = seeded(0)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    for step in range(2):
        model.train_step(Batch(x, captions=("a red square",) * 4), StepContext(step, gen))
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "studio.json").read_text())
    assert meta["family"] == "diffusion.text" and "square" in meta["config"]["vocab"].split()
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, TextDiffusion)
    a = model.sample(2, seeded(4), prompt="a red square", steps=3)
    b = loaded.sample(2, seeded(4), prompt="a red square", steps=3)
    assert torch.equal(a, b)


def test_pretrained_clip_text_encoder_is_frozen_and_not_saved(tmp_path):
    from prompt_fixtures import build_tiny_sd

    sd = build_tiny_sd(tmp_path / "sd")
    model = make(["red circle"], text_encoder_path=str(sd))
    assert model.text_encoder is None and model.pretrained is not None
    assert not any("text_model" in k for k in model.state_dict())
    before = {k: v.clone() for k, v in model.pretrained.model.state_dict().items()}
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    losses = model.train_step(Batch(x, captions=("red circle", "")), StepContext(0, seeded()))
    assert torch.isfinite(losses["loss"])
    after = model.pretrained.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    a = model.sample(1, seeded(4), prompt="red circle", steps=2)
    assert torch.equal(a, loaded.sample(1, seeded(4), prompt="red circle", steps=2))
    from studio.core.errors import StudioError

    with pytest.raises(StudioError, match="No CLIP text encoder"):
        make(["x"], text_encoder_path=str(tmp_path / "nothing"))


# -- runs: training with captions, generation through the Prompt workspace's job ------------------


def test_training_run_learns_the_vocabulary_and_resumes_with_it(text_run, captioned):
    saved = json.loads((text_run / "config.json").read_text())["model"]
    assert set(saved["vocab"].split()) == {"a", "red", "blue", "square", "things"}
    assert saved["sample_prompts"]
    from studio.engine.train import train_job

    # Resume with new words in the folder: the run keeps the vocabulary it was built with.
    (captioned / "000.txt").write_text("a green square\n", encoding="utf-8")
    try:
        out = run_sync(train_job(text_run, CancelToken(), steps=4))
        assert out.ok, out.error or out.details
        assert (
            json.loads((text_run / "model" / "studio.json").read_text())["config"]["vocab"]
            == saved["vocab"]
        )
    finally:
        (captioned / "000.txt").write_text("a red square\n", encoding="utf-8")


def request(run: Path, **kw) -> GenerateRequest:
    settings = dict(model=str(run), prompt="a red square", steps=3, guidance=2.0, width=16,
                    height=16, seed=5, batch_count=2, scheduler="ddim", device="cpu")  # fmt: skip
    settings.update(kw)
    return GenerateRequest(**settings)


def test_generate_with_run_gives_images_and_metadata(text_run):
    seen: list[Progress] = []
    out = run_sync(generate_with_run(text_run, request(text_run), CancelToken()), None, seen.append)
    assert out.ok, out.error or out.details
    result = out.result
    assert len(result.images) == 2 and result.seeds == [5, 6]
    assert all(img.shape == (16, 16, 3) and img.dtype == np.uint8 for img in result.images)
    assert [m["seed"] for m in result.metadata] == [5, 6]
    assert all(
        m["prompt"] == "a red square" and m["model_family"] == "diffusion.text"
        for m in result.metadata
    )
    assert result.metadata[0]["generation_size"] == [16, 16]
    assert any(p.stage == "generate" and p.image is not None for p in seen)
    # The same seed alone gives the same image as in the batch.
    again = run_sync(
        generate_with_run(text_run, request(text_run, seed=6, batch_count=1), CancelToken())
    )
    assert np.array_equal(again.result.images[0], result.images[1])

    # Other sizes are resized from the model's resolution, and said so.
    seen.clear()
    big = run_sync(
        generate_with_run(
            text_run,
            request(text_run, width=32, height=24, batch_count=1, scheduler="euler_a"),
            CancelToken(),
        ),
        None,
        seen.append,
    )
    assert big.ok, big.error or big.details
    assert big.result.images[0].shape == (24, 32, 3)
    assert any("resized to 32x24" in (p.message or "") for p in seen)


def test_generate_reports_unknown_words(text_run):
    seen: list[Progress] = []
    req = request(text_run, prompt="a purple square", negative_prompt="fuzzy", batch_count=1)
    out = run_sync(generate_with_run(text_run, req, CancelToken()), None, seen.append)
    assert out.ok
    assert out.result.metadata[0]["unknown_words"] == ["purple", "fuzzy"]
    assert any(p.info.get("unknown_words") == ["purple", "fuzzy"] for p in seen)


def test_generate_cancel_returns_nothing(text_run):
    token = CancelToken()

    def cancel_mid_run(p: Progress) -> None:
        if p.stage == "generate" and p.step >= 2:
            token.cancel()

    out = run_sync(generate_with_run(text_run, request(text_run), token), token, cancel_mid_run)
    assert out.status is Status.CANCELLED and out.result is None


def test_image_to_image_and_inpainting(text_run):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), bool)
    mask[16:26, 20:32] = True
    i2i = run_sync(
        generate_with_run(
            text_run,
            request(text_run, mode="img2img", image=image, strength=0.5, batch_count=1),
            CancelToken(),
        )
    )
    assert i2i.ok, i2i.error or i2i.details
    assert i2i.result.images[0].shape == image.shape
    inp = run_sync(
        generate_with_run(
            text_run,
            request(text_run, mode="inpaint", image=image, mask=mask, mask_blur=2, batch_count=1),
            CancelToken(),
        )
    )
    assert inp.ok, inp.error or inp.details
    out = inp.result.images[0]
    assert out.shape == image.shape
    far = np.ones_like(mask)
    far[6:36, 10:42] = False  # beyond the mask plus its blur
    assert np.array_equal(out[far], image[far])
    assert not np.array_equal(out[mask], image[mask])


def test_generate_job_dispatches_runs_and_refuses_runs_without_prompts(text_run, tmp_path):
    from helpers import make_tiny_dataset

    from studio.engine.prompt.generate import generate_job

    out = run_sync(generate_job(request(text_run, batch_count=1), CancelToken()))
    assert out.ok, out.error or out.details
    assert out.result.metadata[0]["model_family"] == "diffusion.text"
    data = make_tiny_dataset(tmp_path / "data", n=8, size=16)
    ddpm = train_tiny_run(tmp_path / "ddpm", "diffusion.ddpm", data)
    bad = run_sync(generate_with_run(ddpm, request(ddpm, batch_count=1), CancelToken()))
    assert bad.status is Status.FAILED and "does not read prompts" in bad.error


def test_studio_generate_draws_a_run_at_its_own_size(text_run, tmp_path):
    from studio.cli.main import main
    from studio.engine.prompt.pngmeta import read_png_metadata

    out = tmp_path / "gen.png"
    code = main(["generate", "--model", str(text_run), "--prompt", "red circle",
                 "--steps", "2", "--guidance", "3", "--seed", "4", "--out", str(out)])  # fmt: skip
    assert code == 0
    resolution = json.loads((text_run / "config.json").read_text())["train"]["resolution"]
    with Image.open(out) as img:
        assert img.size == (resolution, resolution)  # not the 512 px Stable Diffusion default
    meta = read_png_metadata(out)
    assert meta["prompt"] == "red circle" and meta["seed"] == 4
