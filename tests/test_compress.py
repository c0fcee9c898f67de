"""A VQ-VAE run as an image codec: compress, decompress, refuse what it cannot decode."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import make_tiny_dataset, train_tiny_run
from PIL import Image

from studio.cli.main import main
from studio.core.codefile import join_tiles, parse, split_tiles
from studio.core.jobs import CancelToken, Progress, Status, run_sync
from studio.engine.compress import (
    MEASURED,
    UNIFORM,
    compress_job,
    decompress_job,
    psnr,
    ssim,
    table_path,
    weights_digest,
)
from studio.engine.sample import load_run_model

VQ = {"codebook_size": 16, "embedding_dim": 4, "downsample": 2, "width": 8, "lr": 3e-3}


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("vq_train"), n=24, size=16, classes=2)


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory, train_dir):
    run = tmp_path_factory.mktemp("vq_runs") / "vq"
    return train_tiny_run(run, "vae.vqvae", train_dir, VQ, steps=30, batch_size=8)


@pytest.fixture(scope="module")
def photo():
    """37 x 23: neither side a multiple of the 16 px tile."""
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:23, 0:37]
    base = np.stack([x * 6, y * 10, (x + y) * 4], -1) % 256
    return (base + rng.integers(0, 30, base.shape)).clip(0, 255).astype(np.uint8)


def ok(job, token=None):
    out = run_sync(job, token)
    assert out.ok, out.error or out.details
    return out.result


def test_decompress_gives_the_pixels_of_decoding_the_codes_directly(vq_run, photo, tmp_path):
    model = load_run_model(vq_run, "cpu")
    out = tmp_path / "photo.svq"
    report = ok(compress_job(vq_run, photo, out, model=model))
    assert out.read_bytes() == report.data and report.file_bytes == out.stat().st_size
    assert report.tiles == (2, 3) and report.codes == 6 * 8 * 8
    assert report.table_source == MEASURED
    # What the model gives for the tiles' codes, decoded directly, reassembled and cropped.
    tiles = split_tiles(photo, 16)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 127.5 - 1
    direct = model.decode_codes(model.encode_codes(x))
    direct = direct.add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    expected = join_tiles(direct, 23, 37)
    assert np.array_equal(report.decoded, expected)
    back = ok(decompress_job(vq_run, out))
    assert back.shape == (23, 37, 3) and np.array_equal(back, expected)
    # The numbers: smaller than the raw pixels, and a quality that means something.
    assert 0 < report.bits_per_pixel < 24
    assert report.psnr == pytest.approx(psnr(photo, back)) and 5 < report.psnr < 60
    assert -1 <= report.ssim <= 1 and ssim(photo, photo) == pytest.approx(1.0)


def test_the_frequencies_are_measured_once_and_kept_with_the_run(vq_run, photo):
    model = load_run_model(vq_run, "cpu")
    weights = weights_digest(model)
    path = table_path(vq_run, weights)
    path.unlink(missing_ok=True)
    stages = []
    run_sync(compress_job(vq_run, photo, model=model), on_progress=stages.append)
    record = json.loads(path.read_text())
    assert record["weights"] == weights.hex() and len(record["counts"]) == 16
    train_images = 24 - 5  # holdout_fraction 0.2 of 24
    assert sum(record["counts"]) == train_images * 8 * 8
    assert any("Measuring" in p.message for p in stages)
    again = []
    run_sync(compress_job(vq_run, photo, model=model), on_progress=again.append)
    assert not any("Measuring" in p.message for p in again)
    # A damaged kept table is measured again, never trusted.
    path.write_text("{not json")
    report = ok(compress_job(vq_run, photo, model=model))
    assert report.table_source == MEASURED and json.loads(path.read_text())["counts"]


def test_without_the_training_folder_a_uniform_table_still_decodes(vq_run, photo, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(vq_run, moved)
    shutil.rmtree(moved / "codec", ignore_errors=True)
    config = json.loads((moved / "config.json").read_text())
    config["dataset"]["path"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    report = ok(compress_job(moved, photo, tmp_path / "u.svq", device="cpu"))
    assert report.table_source == UNIFORM
    assert report.file_bytes * 8 >= report.codes * 4  # log2(16) bits a code
    assert np.array_equal(ok(decompress_job(vq_run, tmp_path / "u.svq")), report.decoded)


def _corrupt(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d: _corrupt(d, len(d) // 2), "damaged"),
        (lambda d: d[: len(d) - 7], "truncated"),
        (lambda d: b"GIF8" + d[4:], "not a Studio compressed image"),
        (lambda d: b"", "not a Studio compressed image"),
    ],
)
def test_a_damaged_file_is_a_clear_error(vq_run, photo, tmp_path, damage, words):
    good = ok(compress_job(vq_run, photo, device="cpu")).data
    bad = tmp_path / "bad.svq"
    bad.write_bytes(damage(good))
    out = run_sync(decompress_job(vq_run, bad, device="cpu"))
    assert out.status is Status.FAILED and words in out.error and not out.details


def test_a_file_from_other_weights_is_refused(vq_run, photo, tmp_path, train_dir):
    data = ok(compress_job(vq_run, photo, device="cpu")).data
    (tmp_path / "f.svq").write_bytes(data)
    stranger = train_tiny_run(tmp_path / "other", "vae.vqvae", train_dir, VQ, steps=1, seed=9)
    out = run_sync(decompress_job(stranger, tmp_path / "f.svq", device="cpu"))
    assert out.status is Status.FAILED and "another run" in out.error and not out.details
    other = load_run_model(vq_run, "cpu")
    with torch.no_grad():
        other.decoder[0].weight.mul_(1.01)  # the same run trained a little further
    out = run_sync(decompress_job(vq_run, tmp_path / "f.svq", model=other))
    assert out.status is Status.FAILED and "another run" in out.error


def test_a_foreign_table_id_is_refused(vq_run, photo, tmp_path):
    data = ok(compress_job(vq_run, photo, device="cpu")).data
    file = parse(data)
    forged = type(file)(**{**file.__dict__, "table": b"\x01" * 8}).pack()  # checksum right
    (tmp_path / "t.svq").write_bytes(forged)
    out = run_sync(decompress_job(vq_run, tmp_path / "t.svq", device="cpu"))
    assert out.status is Status.FAILED and "frequency table" in out.error


def test_a_cancelled_compression_writes_nothing(vq_run, photo, tmp_path):
    token = CancelToken()
    target = tmp_path / "c.svq"

    def cancel(p: Progress) -> None:
        token.cancel()

    out = run_sync(compress_job(vq_run, photo, target, device="cpu"), token, cancel)
    assert out.status is Status.CANCELLED and not target.exists()
    assert not list(tmp_path.iterdir())


# -- the command line ------------------------------------------------------------------------


def test_cli_round_trip_and_existing_outputs(vq_run, photo, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(photo).save(image)
    svq, png = tmp_path / "photo.svq", tmp_path / "back.png"
    assert main(["compress", "--run", str(vq_run), "--image", str(image), "--out", str(svq)]) == 0
    said = capsys.readouterr().out
    assert "bits/pixel" in said and "PSNR" in said and "SSIM" in said
    assert main(["decompress", "--run", str(vq_run), str(svq), "--out", str(png)]) == 0
    decoded = np.asarray(Image.open(png))
    assert decoded.shape == photo.shape
    assert np.array_equal(decoded, ok(decompress_job(vq_run, svq)))

    # Existing outputs are left alone unless --force.
    before = svq.read_bytes()
    args = ["compress", "--run", str(vq_run), "--image", str(image), "--out", str(svq)]
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err and svq.read_bytes() == before
    png.write_bytes(b"mine")
    assert main(["decompress", "--run", str(vq_run), str(svq), "--out", str(png)]) == 1
    assert png.read_bytes() == b"mine"
    assert main([*args, "--force"]) == 0 and svq.read_bytes() == before  # deterministic
    assert main(["decompress", "--run", str(vq_run), str(svq), "--out", str(png), "--force"]) == 0
    assert np.array_equal(np.asarray(Image.open(png)), decoded)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_errors_are_one_sentence(vq_run, tmp_path, train_dir, capsys):
    image = next(train_dir.rglob("*.png"))
    cases = [
        (["compress", "--run", str(tmp_path / "nope"), "--image", str(image)], "no run folder"),
        (["compress", "--run", str(vq_run), "--image", str(tmp_path / "x.png")], "no image"),
        (["compress", "--run", str(vq_run), "--image", str(tmp_path)], "no image"),
        (["decompress", "--run", str(vq_run), str(tmp_path / "x.svq")], "no compressed file"),
    ]
    for args, words in cases:
        assert main([*args, "--out", str(tmp_path / "o")]) == 1
        assert words in capsys.readouterr().err
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    args = ["--run", str(vq_run), "--image", str(not_image), "--out", str(tmp_path / "o")]
    assert main(["compress", *args]) == 1
    assert "cannot read the image" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_run_without_codes_is_refused_before_loading(tmp_path, train_dir, capsys):
    run = train_tiny_run(tmp_path / "vae", "vae.conv", train_dir, steps=1)
    image = next(train_dir.rglob("*.png"))
    args = ["compress", "--run", str(run), "--image", str(image), "--out", str(tmp_path / "o")]
    assert main(args) == 1
    assert "has no discrete codes" in capsys.readouterr().err


def test_a_grey_model_codes_the_luminance(vq_run, tmp_path, photo):
    """(The trainer does not train 1-channel runs yet, so the model is built here.)"""
    from studio.models.registry import get_family

    family = get_family("vae.vqvae")
    torch.manual_seed(0)
    grey = family(family.Config.from_dict({**VQ, "channels": 1, "resolution": 16})).eval()
    report = ok(compress_job(vq_run, photo, tmp_path / "g.svq", model=grey))
    assert report.original.shape == (23, 37, 1) and report.decoded.shape == (23, 37, 1)
    back = ok(decompress_job(vq_run, tmp_path / "g.svq", model=grey))
    assert np.array_equal(back, report.decoded)
    table_path(vq_run, weights_digest(grey)).unlink()  # leave the shared run as it was


def test_create_new_never_replaces_anything(tmp_path):
    from studio.core.atomic import create_new_bytes

    create_new_bytes(tmp_path / "a.svq", b"one")
    assert (tmp_path / "a.svq").read_bytes() == b"one"
    with pytest.raises(FileExistsError):
        create_new_bytes(tmp_path / "a.svq", b"two")
    (tmp_path / "link.svq").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        create_new_bytes(tmp_path / "link.svq", b"two")
    assert not (tmp_path / "nowhere").exists() and (tmp_path / "a.svq").read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.svq", "link.svq"]
