"""Translating on the Canvas (engine side): which runs translate (from config.json only), the
whole image keeps its size and shape, a masked translation leaves every pixel beyond the
feather's reach exactly as it was, and an empty mask is refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import tiny_model

from studio.core.brush import grow
from studio.core.errors import StudioError
from studio.core.jobs import run_sync
from studio.engine.translate import describe_translator, translate_canvas_job, translating_runs


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _run(folder, family: str):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"family": family}), encoding="utf-8")
    return folder


def test_only_runs_of_translating_families_are_listed(tmp_path):
    paired = _run(tmp_path / "p", "i2i.pix2pix")
    unpaired = _run(tmp_path / "u", "i2i.cyclegan")
    other = _run(tmp_path / "g", "gan.dcgan")
    unknown = _run(tmp_path / "x", "no.such_family")
    broken = tmp_path / "b"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    found = translating_runs([paired, other, tmp_path / "gone", unknown, broken, unpaired])
    assert [(t.path, t.both_ways) for t in found] == [(paired, False), (unpaired, True)]
    with pytest.raises(StudioError, match="does not translate"):
        describe_translator(other)


@pytest.fixture(scope="module")
def model():
    m = tiny_model("i2i.pix2pix")
    m.eval()
    return m


def _translate(model, image, mask=None, feather=2.0, seed=0):
    out = run_sync(translate_canvas_job("unused", image, mask, feather, seed, model=model))
    assert out.ok, out.error
    return out.result


def test_the_whole_image_is_translated_at_its_own_shape(model):
    image = _image(20, 34)
    out = _translate(model, image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert np.array_equal(out, _translate(model, image))  # same seed, same image


def test_a_masked_translation_changes_only_the_feathered_mask(model):
    image = _image(40, 56, seed=1)
    mask = np.zeros(image.shape[:2], np.float32)
    mask[10:22, 30:44] = 1.0
    feather = 2.0
    out = _translate(model, image, mask, feather)
    near = grow(mask, 2 * math.ceil(feather) + 1) > 0
    assert np.array_equal(out[~near], image[~near])
    assert (out[mask == 1] != image[mask == 1]).any()
    empty = np.zeros_like(mask)
    result = run_sync(translate_canvas_job("unused", image, empty, feather, model=model))
    assert not result.ok and "No mask painted" in (result.error or "")


def test_a_run_that_does_not_translate_is_refused_before_loading(tmp_path):
    other = _run(tmp_path / "g", "gan.dcgan")
    result = run_sync(translate_canvas_job(other, _image(8, 8), None, 2.0))
    assert not result.ok and "does not translate" in (result.error or "")


def test_a_translating_run_without_weights_says_so(tmp_path):
    run = _run(tmp_path / "p", "i2i.pix2pix")  # config.json only: training never saved
    result = run_sync(translate_canvas_job(run, _image(8, 8), None, 2.0, device="cpu"))
    assert not result.ok and "no usable weights" in (result.error or "")
