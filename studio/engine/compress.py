"""A run with discrete codes (``Capability.CODES``, a VQ-VAE) used as an image codec.

Compressing: the image is cut into squares of the run's resolution (edges padded by
repetition, the original size recorded), each square becomes a grid of codes
(:class:`~studio.models.capabilities.CodeFamily`), and the codes are arithmetic-coded
(:mod:`studio.core.rangecoder`) with their frequencies measured on the run's training images.
The file (:mod:`studio.core.codefile`) names the weights and the table it needs.
Decompressing reverses it; a file made with other weights or another table is refused.

The measured frequencies are kept with the run, ``RUN/codec/frequencies-<weights>.json``
(written atomically), so the table is measured once per set of weights. Without the
training folder and without a kept table the codes are coded with a uniform table (every
code ``log2(codebook size)`` bits), which any copy of the run can decode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from studio.core import atomic
from studio.core.codefile import (
    SUFFIX,
    CodeFile,
    CodeFileError,
    join_tiles,
    parse,
    split_tiles,
)
from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.core.rangecoder import FrequencyTable, StaticModel, decode, encode
from studio.engine.device import resolve_device
from studio.engine.runs import RunFolder
from studio.engine.sample import load_run_model
from studio.models.base import Capability, GenerativeModel
from studio.models.capabilities import CodeSpec
from studio.models.registry import get_family

BATCH = 32  # tiles through the network at once (the same both ways: the same pixels)
MEASURE_LIMIT = 20_000  # training images the frequencies are measured on, at most
TABLE_FOLDER = "codec"
TABLE_KIND = "studio-code-frequencies"
MEASURED = "measured on the run's training images"
UNIFORM = "uniform (the training folder is not there to measure the codes on)"


def check_codes(run_dir: str | Path) -> str:
    """Refuse, in one sentence, a run whose family has no discrete codes (read from its
    config.json, before any weights load); return the family's display name."""
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise StudioError(f"There is no run folder at {run.path}.")
    key = str(run.read_config().get("family", ""))
    try:
        info = get_family(key).info
    except KeyError:
        raise StudioError(f"The run {run.path} is of an unknown model family {key!r}.") from None
    if Capability.CODES not in info.capabilities:
        raise StudioError(
            f"The run {run.path} is a {info.display_name} run, which has no discrete codes: "
            "compress with a run of a family that has them (a VQ-VAE)."
        )
    return info.display_name


def weights_digest(model: GenerativeModel) -> bytes:
    """16 bytes naming the model's weights: SHA-256 over every tensor's name, type, shape
    and bytes, in name order."""
    h = hashlib.sha256(b"studio-weights-v1")
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:16]


# -- quality ---------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two H x W x C uint8 images (Wang et al. 2004: an 11-tap
    Gaussian window of sigma 1.5, each channel, averaged), 1 when identical."""
    x = torch.from_numpy(np.array(a)).double().permute(2, 0, 1)[:, None]
    y = torch.from_numpy(np.array(b)).double().permute(2, 0, 1)[:, None]
    size = min(11, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2  # odd
    taps = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(taps**2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


# -- frequency tables ------------------------------------------------------------------------


def table_path(run_dir: str | Path, weights: bytes) -> Path:
    return Path(run_dir) / TABLE_FOLDER / f"frequencies-{weights.hex()}.json"


def _kept_table(run_dir: str | Path, weights: bytes, size: int) -> FrequencyTable | None:
    """The table kept with the run for these weights, or None (missing, damaged, other)."""
    path = table_path(run_dir, weights)
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 4_000_000:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        counts = record["counts"]
        if record.get("kind") != TABLE_KIND or record.get("weights") != weights.hex():
            return None
        if not isinstance(counts, list) or len(counts) != size:
            return None
        table = FrequencyTable.from_counts(counts)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return table if table.digest().hex() == record.get("table") else None


def _training_images(run_dir: str | Path, resolution: int) -> Generator[Progress, None, Any]:
    """The run's training images (its held-out ones left out) at its resolution, N x R x R x 3
    uint8, or None when its folder is gone."""
    from studio.core.paths import cache_dir
    from studio.engine.data import load_dataset, scan_folder, split_holdout

    config = RunFolder(run_dir).read_config()
    folder = config.get("dataset", {}).get("path")
    if not folder or not Path(folder).is_dir():
        return None
    scan = yield from scan_folder(folder)
    if not scan.entries:
        return None
    data = yield from load_dataset(scan, resolution, cache_dir=cache_dir())
    train = config.get("train", {})
    kept, _ = split_holdout(
        len(data), float(train.get("holdout_fraction", 0.05)), int(train.get("seed", 0))
    )
    return data.images[kept[:MEASURE_LIMIT]]


def measure_table(
    run_dir: str | Path, model: GenerativeModel, weights: bytes
) -> Generator[Progress, None, tuple[FrequencyTable, str]]:
    """Job: the code frequency table for the run's weights and where it came from: the one
    kept with the run, else measured on its training images (and kept), else uniform."""
    spec = _spec(model)
    kept = _kept_table(run_dir, weights, spec.codebook_size)
    if kept is not None:
        return kept, MEASURED
    images = yield from _training_images(run_dir, spec.tile)
    if images is None or not len(images):
        return uniform_table(spec.codebook_size), UNIFORM
    counts = np.zeros(spec.codebook_size, np.int64)
    total = len(images)
    for start in range(0, total, BATCH):
        codes = _encode_tiles(model, spec, images[start : start + BATCH])
        counts += np.bincount(codes.ravel(), minlength=spec.codebook_size)
        done = min(start + BATCH, total)
        yield Progress("encode", done, total, message=f"Measuring code frequencies: {done}/{total}")
    table = FrequencyTable.from_counts(counts)
    record = {
        "kind": TABLE_KIND,
        "version": 1,
        "weights": weights.hex(),
        "codebook_size": spec.codebook_size,
        "images": total,
        "counts": counts.tolist(),
        "table": table.digest().hex(),
    }
    with contextlib.suppress(OSError):  # a read-only run: measured again next time, same table
        atomic.write_json(table_path(run_dir, weights), record)
    return table, MEASURED


def uniform_table(size: int) -> FrequencyTable:
    return FrequencyTable.from_frequencies([1] * size)


# -- the codec -------------------------------------------------------------------------------


def _spec(model: GenerativeModel) -> CodeSpec:
    if Capability.CODES not in model.info.capabilities:
        raise StudioError(f"{model.info.display_name} has no discrete codes to compress with.")
    return model.code_spec()  # type: ignore[attr-defined]


def _to_model(tiles: np.ndarray, channels: int) -> torch.Tensor:
    x = torch.from_numpy(np.array(tiles)).permute(0, 3, 1, 2).float()
    if channels == 1 and x.shape[1] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = x.round()
    return x / 127.5 - 1.0


def _encode_tiles(model: GenerativeModel, spec: CodeSpec, tiles: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        codes = model.encode_codes(_to_model(tiles, spec.channels))  # type: ignore[attr-defined]
    return codes.to("cpu", torch.int64).numpy()


def _decode_codes(model: GenerativeModel, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = model.decode_codes(torch.from_numpy(codes))  # type: ignore[attr-defined]
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def as_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An H x W x 3 uint8 image as the run sees it: itself, or its luminance (H x W x 1)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise StudioError(f"expected an H x W x 3 uint8 image, not {image.shape} {image.dtype}")
    if channels == 3:
        return image
    grey = _to_model(image[None], 1)[0].add(1).mul(127.5).round().clamp(0, 255)
    return grey.to(torch.uint8).permute(1, 2, 0).numpy()


@dataclass(frozen=True)
class CodecReport:
    """One image through the codec: what was coded (H x W x C uint8, the luminance for a grey
    run), what decodes from the file, the file's size, and the quality (computed in the job,
    so a window only shows them)."""

    original: np.ndarray
    decoded: np.ndarray
    file_bytes: int
    tiles: tuple[int, int]  # down, across
    codes: int
    table_source: str
    psnr: float
    ssim: float
    out: Path | None = None
    data: bytes = b""  # the file's contents

    @property
    def bits_per_pixel(self) -> float:
        h, w = self.original.shape[:2]
        return self.file_bytes * 8 / (h * w)


def _load(run_dir: str | Path, device: str, model: GenerativeModel | None) -> Any:
    if model is None:
        check_codes(run_dir)
        yield Progress("load", message=f"Loading {run_dir}")
        model = load_run_model(run_dir, resolve_device(device))
    return model


def compress_job(
    run_dir: str | Path,
    image: np.ndarray,
    out: str | Path | None = None,
    *,
    force: bool = False,
    device: str = "auto",
    model: GenerativeModel | None = None,
    table: tuple[FrequencyTable, str] | None = None,
) -> Generator[Progress, None, CodecReport]:
    """Job: compress ``image`` (H x W x 3 uint8, any size) with the run; write the file to
    ``out`` when given (never over an existing file unless ``force``). ``table`` is the
    frequency table and its source when the caller has it already (:func:`measure_table`)."""
    target = Path(out) if out is not None else None
    if target is not None:
        _check_output(target, force)
    model = yield from _load(run_dir, device, model)
    spec = _spec(model)
    weights = weights_digest(model)
    if table is None:
        table = yield from measure_table(run_dir, model, weights)
    table, source = table
    original = as_channels(image, spec.channels)
    h, w = original.shape[:2]
    tiles = split_tiles(original, spec.tile)
    codes = np.concatenate(
        (yield from _batched(lambda part: _encode_tiles(model, spec, part), tiles, "Encoding"))
    )
    payload = encode(codes.ravel(), StaticModel(table))
    file = CodeFile(
        weights,
        table.digest(),
        w,
        h,
        spec.tile,
        spec.grid,
        spec.codebook_size,
        spec.channels,
        payload,
    )
    data = file.pack()
    decoded_tiles = yield from _batched(lambda part: _decode_codes(model, part), codes, "Decoding")
    decoded = join_tiles(np.concatenate(decoded_tiles), h, w)
    if target is not None:
        _write(target, data, force)
    quality = psnr(original, decoded), ssim(original, decoded)
    return CodecReport(
        original, decoded, len(data), file.tiles, codes.size, source, *quality, target, data
    )


@dataclass(frozen=True)
class ImageResult:
    """One image of :func:`compress_images_job`: its report, or why it could not be done."""

    path: Path
    report: CodecReport | None = None
    error: str = ""


def compress_images_job(
    run_dir: str | Path,
    paths: list[str | Path],
    out_dir: str | Path | None = None,
    *,
    device: str = "auto",
    model: GenerativeModel | None = None,
) -> Generator[Progress, None, list[ImageResult]]:
    """Job: compress each image file with the run (the window's *Compress…*); with
    ``out_dir``, write ``<name>.svq`` there for each, refusing up front any name that is
    taken. An unreadable image is reported in its result and the others go on."""
    from studio.engine.images import ImageRejected, open_image

    files = [Path(p) for p in paths]
    if not files:
        raise StudioError("Choose at least one image to compress.")
    targets: list[Path | None] = [None] * len(files)
    if out_dir is not None:
        folder = Path(out_dir)
        if folder.exists() and not folder.is_dir():
            raise StudioError(f"{folder} is a file; choose a folder for the compressed files.")
        targets = [folder / f"{p.stem}{SUFFIX}" for p in files]
        if len(set(targets)) < len(targets):
            raise StudioError("Two of the images have the same name; compress them apart.")
        for t in targets:
            if t.exists() or t.is_symlink():
                raise StudioError(
                    f"{t} already exists; nothing was written. Choose another folder."
                )
    model = yield from _load(run_dir, device, model)
    table = yield from measure_table(run_dir, model, weights_digest(model))
    results: list[ImageResult] = []
    for i, (path, target) in enumerate(zip(files, targets)):
        yield Progress("encode", i, len(files), message=f"Image {i + 1}/{len(files)}: {path.name}")
        try:
            image = np.asarray(open_image(path), dtype=np.uint8)
        except ImageRejected as err:
            results.append(ImageResult(path, error=f"cannot read the image: {err}"))
            continue
        report = yield from compress_job(run_dir, image, target, model=model, table=table)
        results.append(ImageResult(path, report))
    return results


def decompress_job(
    run_dir: str | Path,
    file_path: str | Path,
    *,
    device: str = "auto",
    model: GenerativeModel | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Job: the image in the compressed file at ``file_path`` (H x W x C uint8), decoded
    with the run it was made with; any other run, or a damaged file, is refused."""
    path = Path(file_path)
    if not path.is_file():
        raise StudioError(f"There is no compressed file at {path}.")
    if path.stat().st_size > 1 << 30:
        raise CodeFileError(f"{path} is over 1 GiB: not a compressed image of ours.")
    file = parse(path.read_bytes(), str(path))
    model = yield from _load(run_dir, device, model)
    spec = _spec(model)
    if file.weights != weights_digest(model):
        raise CodeFileError(
            f"{path} was compressed with another run, or with other weights of this one (a run "
            f"trained further changes them); {Path(run_dir)} cannot decode it."
        )
    mine = (spec.tile, spec.grid, spec.codebook_size, spec.channels)
    if (file.tile, file.grid, file.codebook_size, file.channels) != mine:
        raise CodeFileError(f"{path}'s tiling does not match the run {Path(run_dir)}.")
    table = yield from _table_for(run_dir, model, file, path)
    symbols = np.asarray(decode(file.payload, file.symbols, StaticModel(table)), np.int64)
    codes = symbols.reshape(-1, *spec.grid)
    decoded = yield from _batched(lambda part: _decode_codes(model, part), codes, "Decoding")
    return join_tiles(np.concatenate(decoded), file.height, file.width)


def _table_for(
    run_dir: str | Path, model: GenerativeModel, file: CodeFile, path: Path
) -> Generator[Progress, None, FrequencyTable]:
    uniform = uniform_table(file.codebook_size)
    if file.table == uniform.digest():
        return uniform
    table, _ = yield from measure_table(run_dir, model, file.weights)
    if file.table != table.digest():
        raise CodeFileError(
            f"{path} was coded with a code frequency table this run does not have any more "
            f"({table_path(run_dir, file.weights)} is missing or other, and measuring the "
            "training folder again gives another): it cannot be decoded."
        )
    return table


def _batched(fn: Any, items: np.ndarray, verb: str) -> Generator[Progress, None, list[np.ndarray]]:
    parts = []
    total = len(items)
    for start in range(0, total, BATCH):
        parts.append(fn(items[start : start + BATCH]))
        done = min(start + BATCH, total)
        stage = "encode" if verb == "Encoding" else "decode"
        yield Progress(stage, done, total, message=f"{verb} tiles: {done}/{total}")
    return parts


def _check_output(target: Path, force: bool) -> None:
    if target.is_dir():
        raise StudioError(f"{target} is a folder; give a file name.")
    if (target.exists() or target.is_symlink()) and not force:
        raise StudioError(f"{target} already exists; choose another name, or pass --force.")


def _write(target: Path, data: bytes, force: bool) -> None:
    if force:
        if target.is_symlink():
            raise StudioError(f"{target} is a symbolic link; it was left alone.")
        atomic.write_bytes(target, data)
        return
    try:
        atomic.create_new_bytes(target, data)
    except FileExistsError:
        raise StudioError(f"{target} appeared meanwhile; it was left alone.") from None


def write_image(target: str | Path, image: np.ndarray, force: bool = False) -> None:
    """Save a decoded image as PNG (grey runs: a greyscale PNG), atomically, never over an
    existing file unless ``force``."""
    import io

    from PIL import Image

    path = Path(target)
    _check_output(path, force)
    buf = io.BytesIO()
    arr = image[..., 0] if image.shape[-1] == 1 else image
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    _write(path, buf.getvalue(), force)
