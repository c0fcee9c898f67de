"""Neural style transfer: the Gram matrix, the optimisation, the VGG-19 file (read weights-only,
checked shape by shape) and ``studio stylize``. Every network here is a narrow VGG-19-shaped one
with random weights saved by the test; never real weights, nothing downloaded."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_VGG_WIDTHS, tiny_vgg_files
from PIL import Image
from safetensors.torch import save_file

from studio.cli.main import main
from studio.core.errors import StudioError
from studio.core.jobs import CancelToken, Status, run_sync
from studio.core.stylize import WEIGHTS_URL, StyleSettings
from studio.engine import stylize as st
from studio.engine.stylize import StyleRequest, blend_result, gram, stylize_job
from studio.engine.vgg import (
    WrongWeightsFile,
    conv_indices,
    full_state_dict,
    load_vgg19,
    random_vgg19,
)


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory) -> dict[str, Path]:
    return tiny_vgg_files(tmp_path_factory.mktemp("vgg"))


def picture(h: int = 32, w: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 6, yy * 7, (xx * yy) % 255], -1)
    return np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)


# -- the maths --------------------------------------------------------------------------------


def test_gram_of_a_known_feature_map():
    # Two channels over four positions: a = (1, 2, 3, 4), b = (0, 1, 0, 1).
    f = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]]).reshape(1, 2, 2, 2)
    expected = torch.tensor([[30.0, 6.0], [6.0, 2.0]]) / (2 * 2 * 2)  # F F^T / (C H W)
    assert torch.allclose(gram(f)[0], expected)
    # Symmetric and unchanged by moving positions around (style has no layout).
    shuffled = f.reshape(1, 2, 4)[..., [3, 1, 0, 2]].reshape(1, 2, 2, 2)
    assert torch.allclose(gram(shuffled), gram(f))


def test_content_weight_alone_reconstructs_the_content_features(vgg_files):
    vgg = load_vgg19(vgg_files["safetensors"])
    content = picture()
    settings = StyleSettings(
        steps=40, style_weight=0.0, tv_weight=0.0, size=32, init="noise", preview_every=5
    )
    reports = []
    outcome = run_sync(
        stylize_job(StyleRequest(content, picture(seed=9), settings), vgg=vgg),
        on_progress=reports.append,
    )
    assert outcome.status is Status.FINISHED, outcome.error
    losses = [p.metrics["content"] for p in reports if p.metrics]
    assert len(losses) == 40 and losses[0] > 0
    assert losses[-1] < 0.02 * losses[0]  # falls near 0
    assert reports[-1].metrics["style"] == 0.0
    assert sum(p.image is not None for p in reports) == 8  # a preview every 5 iterations
    image = outcome.result.image
    assert image.shape == (26, 32, 3) and image.dtype == np.uint8  # 40x32 at 32 px
    # The result's features are the content's, which noise's are not.
    x = st.to_tensor(image, 32, torch.device("cpu"))
    c = st.to_tensor(content, 32, torch.device("cpu"))
    noise = torch.rand_like(c)
    with torch.no_grad():
        f = {k: vgg(t, ["relu4_2"])["relu4_2"] for k, t in (("x", x), ("c", c), ("n", noise))}
    assert (f["x"] - f["c"]).pow(2).mean() < 0.1 * (f["n"] - f["c"]).pow(2).mean()


def test_style_loss_falls_and_stop_keeps_the_image_so_far(vgg_files, monkeypatch):
    vgg = load_vgg19(vgg_files["pth"])
    settings = StyleSettings(steps=50, content_weight=0.0, size=32, preview_every=100)
    token = CancelToken()
    reports = []

    def on_progress(p):
        reports.append(p)
        if p.step == 6:
            token.stop()

    request = StyleRequest(picture(), picture(seed=3)[::-1].copy(), settings)
    outcome = run_sync(stylize_job(request, vgg=vgg, token=token), token, on_progress)
    result = outcome.result
    assert outcome.status is Status.FINISHED and result.stopped_early
    assert result.steps_done == 6 and result.image.shape == (26, 32, 3)
    assert reports[-1].metrics["style"] < reports[0].metrics["style"]
    # A cancel gives nothing back, and lands inside an iteration (between evaluations).
    token = CancelToken()
    job = stylize_job(request, vgg=vgg, token=token)
    assert run_sync(job, token, lambda p: token.cancel()).status is Status.CANCELLED
    token = CancelToken()
    calls = []

    def cancel_in_first_evaluation(*_args):
        calls.append(1)
        token.cancel()
        return real_tv(*_args)

    real_tv = st.tv_loss
    monkeypatch.setattr(st, "tv_loss", cancel_in_first_evaluation)
    reports = []
    job = stylize_job(request, vgg=vgg, token=token)
    assert run_sync(job, token, reports.append).status is Status.CANCELLED
    # The first iteration evaluates at least twice (its start, then the line search): the
    # second evaluation never ran, and no iteration was reported.
    assert len(calls) == 1 and reports == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"steps": 0}, "Steps"),
        ({"size": 8}, "size"),
        ({"style_weight": -1.0}, "weights"),
        ({"tv_weight": float("nan")}, "weights"),
        ({"content_weight": 0.0, "style_weight": 0.0}, "weight above 0"),
        ({"init": "zeros"}, "start image"),
    ],
)
def test_bad_settings_are_refused_before_loading(change, message, tmp_path):
    request = StyleRequest(picture(), picture(), StyleSettings(**change))
    outcome = run_sync(stylize_job(request, tmp_path / "never_read.pth"))
    assert outcome.status is Status.FAILED and message in outcome.error


def test_too_big_for_memory_suggests_a_smaller_size(vgg_files, monkeypatch):
    monkeypatch.setattr(st, "available_memory", lambda device: 1_000_000)
    request = StyleRequest(picture(), picture(), StyleSettings(size=512, steps=1))
    outcome = run_sync(stylize_job(request, vgg_files["safetensors"]))
    assert outcome.status is Status.FAILED
    assert "Not enough memory to stylize at 512 px" in outcome.error
    assert "--size 256" in outcome.error
    # An allocation that fails mid-way says the same, not a traceback.
    monkeypatch.setattr(st, "available_memory", lambda device: None)

    def no_memory(*_args, **_kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")

    monkeypatch.setattr(st, "tv_loss", no_memory)
    outcome = run_sync(stylize_job(request, vgg_files["safetensors"]))
    assert outcome.status is Status.FAILED and "smaller size" in outcome.error


def test_blend_whole_or_masked_region_feathered():
    original = picture(40, 48)
    stylized = picture(20, 24, seed=5)  # the working size: resized back to the original's
    whole = blend_result(original, stylized, None, 4)
    assert whole.shape == original.shape and not np.array_equal(whole, original)
    mask = np.zeros((40, 48), np.float32)
    mask[10:20, 12:24] = 1.0
    out = blend_result(original, stylized, mask, 3.0)
    far = np.ones_like(mask, bool)
    far[10 - 7 : 20 + 7, 12 - 7 : 24 + 7] = False  # beyond twice the feather (+1)
    assert np.array_equal(out[far], original[far])
    assert np.array_equal(out[10:20, 12:24], whole[10:20, 12:24])  # fully stylised inside


def test_a_masked_region_is_stylized_in_its_own_window(vgg_files):
    image = picture(120, 160)
    mask = np.zeros((120, 160), np.float32)
    mask[50:70, 60:90] = 1.0
    window = st.mask_window(mask, 2.0)
    assert window == (50 - 13, 70 + 13, 60 - 13, 90 + 13)  # 2*2+2 feather reach + 30 // 4
    assert st.mask_window(np.zeros_like(mask), 2.0) is None
    vgg = load_vgg19(vgg_files["safetensors"])
    settings = StyleSettings(steps=2, size=32)
    job = st.stylize_canvas_job(image, mask, 2.0, picture(seed=2), settings, vgg)
    outcome = run_sync(job)
    out, result = outcome.result
    assert result.image.shape == (32 * 46 // 56, 32, 3)  # the window, at the working size
    outside = np.ones_like(mask, bool)
    outside[window.slices] = False
    assert np.array_equal(out[outside], image[outside]) and out.shape == image.shape
    assert (out[mask == 1] != image[mask == 1]).any()
    empty = run_sync(st.stylize_canvas_job(image, mask * 0, 2.0, image, settings, vgg))
    assert empty.status is Status.FAILED and "No mask painted" in empty.error


# -- the weights file -------------------------------------------------------------------------


def test_pth_and_safetensors_load_the_same_network(vgg_files):
    a, b = load_vgg19(vgg_files["pth"]), load_vgg19(vgg_files["safetensors"])
    assert a.widths == b.widths == TINY_VGG_WIDTHS
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        fa, fb = a(x, ["relu5_1"])["relu5_1"], b(x, ["relu5_1"])["relu5_1"]
    assert torch.equal(fa, fb) and fa.shape == (1, 16, 2, 2)
    assert not any(p.requires_grad for p in a.parameters())


def test_full_size_layout_matches_torchvision_keys():
    state = full_state_dict(random_vgg19())
    assert [i for i in conv_indices()] == [
        0,
        2,
        5,
        7,
        10,
        12,
        14,
        16,
        19,
        21,
        23,
        25,
        28,
        30,
        32,
        34,
    ]
    assert state["features.0.weight"].shape == (64, 3, 3, 3)
    assert state["features.34.weight"].shape == (512, 512, 3, 3)
    assert len(state) == 32


class _Payload:
    """Unpickling this runs ``open(canary, 'w')``: the attack a weights-only load refuses."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self):
        return (open, (self.canary, "w"))


def test_a_pickle_with_code_is_refused_and_never_runs(tmp_path, vgg_files, capsys):
    canary = tmp_path / "canary"
    state = {"features.0.weight": _Payload(canary)}
    for name in ("evil.pth", "evil.safetensors"):  # a pickle renamed .safetensors too
        path = tmp_path / name
        torch.save(state, path, pickle_protocol=2)
        with pytest.raises(StudioError, match="refuses it"):
            load_vgg19(path)
        assert not canary.exists()
        content, style = _images(tmp_path)
        out = tmp_path / "o.png"
        code = main(
            ["stylize", "--content", str(content), "--style", str(style), "--vgg", str(path),
             "--out", str(out), "--size", "32"]
        )  # fmt: skip
        assert code == 1 and not canary.exists() and not out.exists()
        assert "needs code to load" in capsys.readouterr().err
    # A bare (legacy) pickle stream: refused the same way.
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(StudioError):
        load_vgg19(path)
    assert not canary.exists()


def _saved(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous().clone() for k, v in state.items()}, path)
    return path


def test_a_wrong_state_dict_gets_a_clear_message(tmp_path, vgg_files):
    good = dict(load_vgg19(vgg_files["pth"]).features.state_dict())
    good = {f"features.{k}": v for k, v in good.items()}

    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}
    with pytest.raises(WrongWeightsFile, match="features.0.weight is missing") as err:
        load_vgg19(_saved(tmp_path, resnet))
    assert WEIGHTS_URL in str(err.value)

    vgg16 = {k: v for k, v in good.items() if not k.startswith("features.16.")}
    vgg16["features.17.weight"] = good["features.19.weight"].clone()
    with pytest.raises(WrongWeightsFile, match="VGG-16"):
        load_vgg19(_saved(tmp_path, vgg16))

    five = dict(good, **{"features.2.weight": torch.zeros(4, 4, 5, 5)})
    with pytest.raises(WrongWeightsFile, match=r"features.2.weight has shape \(4, 4, 5, 5\)"):
        load_vgg19(_saved(tmp_path, five))

    chain = dict(good, **{"features.5.weight": torch.zeros(8, 7, 3, 3)})
    with pytest.raises(WrongWeightsFile, match="expected 4 input channels"):
        load_vgg19(_saved(tmp_path, chain))

    nan = dict(good, **{"features.0.bias": torch.full((4,), float("nan"))})
    with pytest.raises(WrongWeightsFile, match="NaN"):
        load_vgg19(_saved(tmp_path, nan))

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(vgg_files["safetensors"].read_bytes()[:500])
    with pytest.raises(StudioError, match="truncated"):
        load_vgg19(truncated)


# -- the command line -------------------------------------------------------------------------


def _images(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    Image.fromarray(picture(36, 48)).save(content)
    Image.fromarray(picture(30, 30, seed=4)).save(style)
    return content, style


def test_cli_stylizes_and_explains_its_errors(tmp_path, vgg_files, capsys):
    content, style = _images(tmp_path)
    out = tmp_path / "out" / "styled.png"
    base = ["stylize", "--content", str(content), "--style", str(style)]
    run = [*base, "--vgg", str(vgg_files["pth"]), "--size", "32", "--steps", "3"]
    assert main([*run, "--out", str(out)]) == 0
    assert Image.open(out).size == (32, 24)
    assert "3 iterations" in capsys.readouterr().out

    cases = [
        ([*base, "--vgg", str(tmp_path / "none.pth")], ["no VGG-19 weights file", WEIGHTS_URL]),
        ([*run, "--style-weight", "-1"], ["weights must be finite and 0 or more"]),
        ([*run, "--size", "99999"], ["size must be between"]),
        ([*run, "--steps", "0"], ["Steps must be"]),
        ([*run[:2], str(tmp_path / "gone.png"), *run[3:]], ["no content image"]),
        ([*run[:4], str(vgg_files["pth"]), *run[5:]], ["cannot read the style image"]),
        ([*base, "--vgg", str(content), "--size", "32"], ["not a model file"]),
    ]
    before = content.read_bytes()
    assert main([*run, "--out", str(content)]) == 1  # never over the content image
    assert "is the content image" in capsys.readouterr().err
    assert content.read_bytes() == before
    for argv, words in cases:
        assert main([*argv, "--out", str(tmp_path / "no.png")]) == 1, argv
        err = capsys.readouterr().err
        for word in words:
            assert word in err, (argv, err)
    assert not (tmp_path / "no.png").exists()
