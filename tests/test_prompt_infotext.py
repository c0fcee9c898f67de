"""PNG settings: AUTOMATIC1111's infotext written and read as A1111 does, and hostile PNGs
dropped for their settings (issue 15, points 8 and 14)."""

from __future__ import annotations

import io
import json
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from studio.engine.prompt.infotext import format_infotext, parse_infotext
from studio.engine.prompt.pngmeta import (
    PngMetadataError,
    png_bytes,
    read_png_metadata,
    write_png,
)
from studio.engine.prompt.request import GenerateRequest

A1111 = (
    "a castle, on a hill: at dawn\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3000000000, "
    "Size: 640x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, '
    "Resize Mode: Crop and Resize, Low Vram: False, Processor Res: 512, Guidance Start: 0.0, "
    'Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced", '
    "Clip skip: 2, Version: v1.9.4"
)


def _png_with_text(**texts: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _raw_png(width: int, height: int, *chunks: bytes) -> bytes:
    """A PNG that claims ``width x height`` gray pixels, with ``chunks`` before the data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * min(width * height + height, 1 << 16))  # short is fine
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + b"".join(chunks)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


# -- point 14: the infotext as A1111 writes and reads it --------------------------------------


def test_quoted_values_do_not_break_the_other_settings() -> None:
    meta = parse_infotext(A1111)
    assert meta["prompt"] == "a castle, on a hill: at dawn"
    assert meta["negative_prompt"] == "blurry, lowres"
    assert (meta["steps"], meta["guidance"], meta["seed"]) == (28, 6.5, 3000000000)
    assert (meta["width"], meta["height"]) == (640, 512)
    assert meta["model"] == "v1-5-pruned-emaonly"  # not the ControlNet's model
    assert meta["scheduler"] == "dpmpp_2m"
    unrestored = meta["unrestored"]
    assert any(line.startswith("Schedule type: Karras") for line in unrestored)
    assert any(line.startswith("ControlNet 0: Module: canny") for line in unrestored)
    assert any(line.startswith("Clip skip: 2") for line in unrestored)
    assert not any(line.startswith(("Version", "Model hash", "Steps")) for line in unrestored)


@pytest.mark.parametrize(
    ("sampler", "scheduler", "note"),
    [
        ("Euler a", "euler_a", None),
        ("Euler ancestral", "euler_a", None),  # what Studio wrote before
        ("DPM++ 2M Karras", "dpmpp_2m", "Karras"),
        ("DPM++ SDE", None, "not available here"),
        ("LMS", None, "not available here"),
    ],
)
def test_samplers_and_schedules_say_what_was_not_restored(sampler, scheduler, note) -> None:
    meta = parse_infotext(f"a cat\nSteps: 20, Sampler: {sampler}, CFG scale: 7, Seed: 1")
    assert meta.get("scheduler") == scheduler
    if note is None:
        assert "unrestored" not in meta
    else:
        assert len(meta["unrestored"]) == 1 and note in meta["unrestored"][0]
        assert meta["unrestored"][0].startswith(f"Sampler: {sampler}")


def test_studio_writes_what_a1111_writes_and_reads_it_back(tmp_path: Path) -> None:
    request = GenerateRequest(
        model="C:\\models\\sd, v1.5.safetensors",  # a colon and a comma: quoted
        prompt="a fox, in the snow",
        negative_prompt="blurry",
        scheduler="euler_a",
        seed=3_000_000_000,
        steps=12,
        guidance=5.5,
        width=64,
        height=48,
    )
    meta = request.to_metadata()
    text = format_infotext(meta)
    assert text.splitlines()[0] == "a fox, in the snow"
    assert "Sampler: Euler a," in text and "Seed: 3000000000," in text
    assert 'Model: "C:\\\\models\\\\sd, v1.5.safetensors"' in text
    back = parse_infotext(text)
    assert "unrestored" not in back
    for key in ("prompt", "negative_prompt", "scheduler", "seed", "steps", "guidance", "model"):
        assert back[key] == meta[key], key
    assert (back["width"], back["height"]) == (64, 48)
    # The PNG carries it as 'parameters', the way A1111 reads it.
    path = write_png(tmp_path / "fox.png", np.zeros((4, 4, 3), np.uint8), meta)
    with Image.open(path) as img:
        assert img.text["parameters"] == text


def test_an_unreadable_value_is_reported_not_guessed() -> None:
    meta = parse_infotext("a\nSteps: many, CFG scale: 7, Seed: -4, Size: big")
    assert "steps" not in meta and "seed" not in meta and meta["guidance"] == 7.0
    assert [line.split(":")[0] for line in meta["unrestored"]] == ["Steps", "Seed", "Size"]


def test_other_tools_parameters_still_read_through_a_png() -> None:
    meta = read_png_metadata(_png_with_text(parameters=A1111))
    assert meta["seed"] == 3000000000 and meta["steps"] == 28 and meta["unrestored"]


# -- point 8: hostile PNGs dropped for their settings -----------------------------------------


def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


def test_deeply_nested_settings_fail_fast_with_a_message() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    data = _png_with_text(studio=deep)
    with pytest.raises(PngMetadataError, match="nested more than"):
        read_png_metadata(data)
    # Nesting the JSON parser accepts but no settings have is refused too.
    with pytest.raises(PngMetadataError, match="nested"):
        read_png_metadata(_png_with_text(studio=json.dumps({"a": _nested(20)})))


def test_oversized_settings_fail_fast_with_a_message() -> None:
    bomb = zlib.compress(b"a" * (16 << 20), 9)  # 16 MiB of text in ~16 KiB
    chunk = _chunk(b"zTXt", b"parameters\x00\x00" + bomb)
    tracemalloc.start()
    try:
        with pytest.raises(PngMetadataError, match="larger than 1 MiB"):
            read_png_metadata(_raw_png(8, 8, chunk))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # stopped at the limit: the 16 MiB of text was never inflated whole
    # Unrelated big text (an XMP packet, say) is skipped, not an error.
    other = _chunk(b"zTXt", b"XML:com.adobe.xmp\x00\x00" + bomb)
    params = _chunk(b"tEXt", b"parameters\x00a cat\nSteps: 3, Seed: 2, CFG scale: 1")
    assert read_png_metadata(_raw_png(8, 8, other, params))["seed"] == 2


def test_settings_are_read_without_decoding_the_pixels(monkeypatch) -> None:
    # 20,000 x 20,000 pixels in a tiny file: Pillow refuses it as a bomb, and a reader that
    # decoded pixels would need 400 MB. The settings come back all the same.
    text = _chunk(b"tEXt", b"parameters\x00a cat\nSteps: 3, Seed: 9, CFG scale: 1")
    data = _raw_png(20_000, 20_000, text)
    assert len(data) < 1_000_000

    def no_decoding(*_a, **_k):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(Image, "open", no_decoding)
    assert read_png_metadata(data)["seed"] == 9


def test_text_after_the_image_data_is_read_too() -> None:
    png = _raw_png(4, 4)
    text = _chunk(
        b"iTXt",
        b"parameters\x00\x01\x00\x00\x00" + zlib.compress(b"x\nSteps: 1, Seed: 5, CFG scale: 2"),
    )
    data = png[:-12] + text + png[-12:]  # before IEND
    assert read_png_metadata(data)["seed"] == 5


def test_studio_json_round_trips_exactly() -> None:
    meta = GenerateRequest(model="m", prompt="p", seed=3_000_000_000).to_metadata()
    assert read_png_metadata(png_bytes(np.zeros((4, 4, 3), np.uint8), meta)) == meta


@pytest.mark.skipif(os.name != "posix", reason="FIFOs need POSIX")
def test_a_fifo_named_like_a_png_is_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "settings.png")
    assert read_png_metadata(tmp_path / "settings.png") is None
