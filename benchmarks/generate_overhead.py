"""Prompt generation overhead: studio ``generate_job`` vs calling the diffusers pipeline.

One pipeline object, one prompt, one scheduler (DPM++ 2M), one seed, batch 1: the same call
is timed directly (``pipe(...)``, the way diffusers' docs call it) and through
``generate_job`` (worker thread, per-step cancel checks, a latent preview every step, memory
plan, metadata), interleaved, alternating which goes first. it/s = denoising steps / wall time of
the whole call (text encoding and VAE decode included on both sides). The ratio is taken per
pair and the median reported. Target: >= 0.98 (no overhead).

``--sd15-unet`` builds a Stable Diffusion 1.5-shaped pipeline (860 M-parameter UNet, SD VAE,
a CLIP ViT-L-sized text encoder) with random weights at 512 x 512: the speed does not depend on
the weights. For a GPU. ``--compile`` adds a row for ``compile=True`` (target >= 1.8x at
batch 1 on a GPU). ``--quick`` uses tiny components on the CPU and finishes in under a minute.

    python benchmarks/generate_overhead.py --quick
    python benchmarks/generate_overhead.py --sd15-unet --device cuda --compile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine_info import describe  # noqa: E402 - a sibling script's module

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _tokenizer(folder: Path):
    """A CLIP tokenizer over the 256 byte symbols and the two specials (no merges)."""
    from transformers import CLIPTokenizer

    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    alphabet, extra = [], 0
    for b in range(256):
        alphabet.append(chr(b) if b in keep else chr(256 + extra))
        extra += b not in keep
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": 256 + i for i, ch in enumerate(alphabet)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def build_pipeline(sd15: bool, device, dtype):  # noqa: ANN001, ANN201
    """A StableDiffusionPipeline with random weights: SD 1.5-shaped, or tiny."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
    if sd15:
        text = CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
    else:
        text = CLIPTextConfig(
            vocab_size=514,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
        )
        unet = UNet2DConditionModel(
            sample_size=16,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(16, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=32,
        )
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=CLIPTextModel(text).eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def _sync(device) -> None:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny components on the CPU (< 1 min)")
    parser.add_argument("--sd15-unet", action="store_true", help="SD 1.5-shaped, random weights")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also time compile=True")
    args = parser.parse_args(argv)

    import torch

    from studio.core.jobs import CancelToken, run_sync
    from studio.engine.prompt import memory as mem
    from studio.engine.prompt.generate import PipelineCache, generate_job
    from studio.engine.prompt.request import GenerateRequest

    if args.quick and args.sd15_unet:
        parser.error("--quick and --sd15-unet exclude each other")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sd15 = args.sd15_unet
    size = args.size or (512 if sd15 else 32)
    steps = args.steps or (20 if sd15 else 10)
    repeats = args.repeats or 5
    dtype = mem.resolve_dtype("auto", device)

    pipe = build_pipeline(sd15, device, dtype)
    params = sum(p.numel() for p in pipe.unet.parameters())
    folder = Path(tempfile.mkdtemp(prefix="studio-bench-model-"))  # only its name is used
    cache = PipelineCache()
    cache.put(PipelineCache.key_for(folder, "txt2img", device, dtype), pipe)
    pipe._studio_scheduler_config = dict(pipe.scheduler.config)
    request = GenerateRequest(
        str(folder),
        prompt="a photo of a red fox in the snow",
        steps=steps,
        guidance=7.5,
        scheduler="dpmpp_2m",
        seed=1,
        width=size,
        height=size,
        memory="full",
        device=str(device),
        dtype=mem.dtype_name(dtype),
    )

    def direct() -> float:
        from diffusers import DPMSolverMultistepScheduler

        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe._studio_scheduler_config)
        _sync(device)
        t = time.perf_counter()
        pipe(
            prompt=request.prompt,
            num_inference_steps=steps,
            guidance_scale=request.guidance,
            width=size,
            height=size,
            generator=torch.Generator("cpu").manual_seed(1),
            output_type="np",
        )
        _sync(device)
        return steps / (time.perf_counter() - t)

    def studio(**changes) -> float:  # noqa: ANN003
        import dataclasses

        req = dataclasses.replace(request, **changes)
        _sync(device)
        t = time.perf_counter()
        out = run_sync(generate_job(req, CancelToken(), pipeline_cache=cache))
        _sync(device)
        if not out.ok:
            raise SystemExit(f"generate_job failed: {out.error}\n{out.details or ''}")
        return steps / (time.perf_counter() - t)

    variants = {
        "studio generate_job (preview every step)": {},
        "studio generate_job (no previews)": {"preview_every": 0},
    }
    print(f"# {describe()}", file=sys.stderr)
    print(
        f"# {'SD1.5-shaped' if sd15 else 'tiny'} UNet ({params / 1e6:.1f} M params), "
        f"{size}x{size}, {steps} steps DPM++ 2M, CFG 7.5, batch 1, {mem.dtype_name(dtype)}, "
        f"{device}",
        file=sys.stderr,
    )
    direct(), studio()  # warm-up (allocator, kernels, first-call costs)
    rates: dict[str, list[float]] = {"diffusers pipeline, called directly": []}
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    for name in variants:
        rates[name] = []
    for r in range(repeats):
        for name, changes in variants.items():
            if r % 2 == 0:
                d, s = direct(), studio(**changes)
            else:
                s, d = studio(**changes), direct()
            rates["diffusers pipeline, called directly"].append(d)
            rates[name].append(s)
            ratios[name].append(s / d)
    compile_row = None
    if args.compile:
        studio(compile=True)  # compiles (slow) and warms up
        compiled = [studio(compile=True) for _ in range(repeats)]
        compile_row = ("studio generate_job, compile=True", statistics.median(compiled))

    base = statistics.median(rates["diffusers pipeline, called directly"])
    print(f"\n{'path':<46} | {'it/s (median)':>13} | ratio (median of pairs)")
    print(f"{'-' * 46}-|-{'-' * 13}-|-{'-' * 24}")
    print(f"{'diffusers pipeline, called directly':<46} | {base:>13.2f} | 1.00")
    for name in variants:
        spread = f" (min {min(ratios[name]):.3f}, max {max(ratios[name]):.3f})"
        print(
            f"{name:<46} | {statistics.median(rates[name]):>13.2f} | "
            f"{statistics.median(ratios[name]):.3f}{spread}"
        )
    if compile_row is not None:
        print(
            f"{compile_row[0]:<46} | {compile_row[1]:>13.2f} | {compile_row[1] / base:.2f}x "
            "vs eager direct"
        )
    print(f"\n{repeats} interleaved pairs per row; target ratio >= 0.98.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
