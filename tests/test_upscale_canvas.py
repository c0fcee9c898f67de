"""The Canvas's *Upscale* in the engine: the whole image enlarged by the model, or only the
window around the mask blended into a bicubic enlargement through the feathered mask; which
runs the Canvas offers to upscale (and that Translate no longer offers them)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from studio.core.brush import grow
from studio.core.jobs import run_sync
from studio.engine.translate import translating_runs
from studio.engine.upscale import bicubic, upscale_canvas_job, upscaling_runs
from studio.models.base import Capability

OFFSET = 0.5  # the stand-in's outputs differ from the bicubic enlargement everywhere


class StandIn(torch.nn.Module):
    """An x2 upscaler with what ``upscale_job`` reads of a model: nearest neighbour plus an
    offset (no network, so no diffusers import)."""

    info = SimpleNamespace(
        display_name="Stand-in", capabilities=Capability.PAIRED | Capability.SINGLE_FOLDER
    )
    config = SimpleNamespace(channels=3)
    output_scale = 2
    device = torch.device("cpu")

    def sample_iter(self, n, generator, image=None, **_):
        yield from ()
        x = torch.as_tensor(image).float()
        return (x.repeat_interleave(2, -2).repeat_interleave(2, -1) + OFFSET).clamp(-1, 1)


@pytest.fixture(scope="module")
def model():
    return StandIn()


def picture(h=30, w=40):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 6, yy * 8, (xx + yy) * 3], -1).clip(0, 200).astype(np.uint8)


def _run(job):
    out = run_sync(job)
    assert out.ok, out.error
    return out.result


def test_whole_image_is_enlarged_by_the_model(model):
    image = picture()
    out = _run(upscale_canvas_job("unused", image, None, 2.0, tile=16, model=model))
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8
    expected = np.clip(image.astype(int) + 64, 0, 255).repeat(2, 0).repeat(2, 1)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_a_masked_region_is_the_models_and_the_rest_bicubic(model):
    image = picture()
    mask = np.zeros(image.shape[:2], np.float32)
    mask[10:20, 12:26] = 1.0
    feather = 2.0
    out = _run(upscale_canvas_job("unused", image, mask, feather, tile=16, model=model))
    assert out.shape == (60, 80, 3)
    base = bicubic(image, 60, 80)
    near = grow(mask, 2 * math.ceil(feather) + 2).repeat(2, 0).repeat(2, 1) > 0
    assert np.array_equal(out[~near], base[~near])  # untouched beyond the feather: bicubic
    inside = np.zeros_like(near)
    inside[24:36, 30:46] = True  # well inside the mask, beyond the feather
    model_px = np.clip(image.astype(int) + 64, 0, 255).repeat(2, 0).repeat(2, 1)
    assert np.abs(out[inside].astype(int) - model_px[inside]).max() <= 2
    empty = run_sync(upscale_canvas_job("unused", image, mask * 0, feather, model=model))
    assert not empty.ok and "No mask" in str(empty.error)


def _fake_run(folder, family, model_settings):
    folder.mkdir(parents=True)
    train = {"family": family, "data": "x", "resolution": 16, "model": model_settings}
    (folder / "config.json").write_text(
        json.dumps({"family": family, "train": train}), encoding="utf-8"
    )
    return folder


def test_upscaling_runs_are_offered_to_upscale_and_not_to_translate(tmp_path):
    sr = _fake_run(tmp_path / "sr", "i2i.superres", {"scale": 4})
    style = _fake_run(tmp_path / "style", "style.fast", {})
    p2p = _fake_run(tmp_path / "p2p", "i2i.pix2pix", {})
    found = upscaling_runs([sr, style, p2p, tmp_path / "gone"])
    assert [(u.path, u.scale) for u in found] == [(sr, 4)]
    assert [t.path for t in translating_runs([sr, style, p2p])] == [style, p2p]
