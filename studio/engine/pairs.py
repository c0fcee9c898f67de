"""Datasets of two folders, for image-to-image models: find the pairs, load them, augment them
alike.

Two layouts hold paired images:

* two folders, A and B, whose images match by relative path and name without the extension
  (``a/cats/cat_01.png`` with ``b/cats/cat_01.jpg``);
* one folder whose every image holds A on the left half and B on the right (the layout the
  pix2pix datasets use).

Both folders are scanned as any dataset is (:func:`studio.engine.data.scan_folder`: the same
checks and the same reasons for a bad file). A file that finds no partner, two files that claim
one name, a pair whose two images differ in shape, and a side-by-side file whose width cannot be
halved are listed, each with its reason, and left out. Two images of the same shape and
different sizes are a pair: both are scaled to the training resolution.

Unpaired datasets (any two folders, ``Capability.UNPAIRED``) are two ordinary datasets, one per
folder, each scanned and decoded on its own: :class:`UnpairedImages` holds them together.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from studio.core.errors import NoUsableImages
from studio.core.jobs import Progress
from studio.core.safefiles import inside
from studio.engine.data import (
    _OUTSIDE_DETAIL,
    _PROGRESS_SECONDS,
    ImageDataset,
    ImageEntry,
    ScanResult,
    SkippedFile,
    _describe,
    _report_every,
    scan_folder,
)
from studio.engine.images import OUTSIDE, WHITE, ImageRejected, fit_square, open_image

NO_PARTNER = "no partner"
AMBIGUOUS = "two images with one name"
SIZE_MISMATCH = "size mismatch"
ODD_WIDTH = "not two halves"

#: Two images whose width:height ratios differ by more than this share are not a pair.
SHAPE_TOLERANCE = 0.01


@dataclass(frozen=True)
class Pair:
    """One pair: ``a`` under folder A and ``b`` under folder B (relative, ``/``-separated); in
    the side-by-side layout both are the one file's path. ``size_a``/``size_b`` are (width,
    height) of each image (each half, side by side)."""

    a: str
    b: str
    size_a: tuple[int, int]
    size_b: tuple[int, int]
    class_name: str | None = None


@dataclass(frozen=True)
class PairProblem:
    """A usable image left out of the pairs: ``side`` is "A", "B" or "AB" (side by side)."""

    side: str
    path: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class PairScan:
    """What :func:`scan_pairs` found. ``root_b`` is None in the side-by-side layout."""

    root_a: Path
    root_b: Path | None
    pairs: tuple[Pair, ...]
    problems: tuple[PairProblem, ...]
    skipped_a: tuple[SkippedFile, ...]
    skipped_b: tuple[SkippedFile, ...]
    fingerprint: str
    max_pixels: int

    @property
    def side_by_side(self) -> bool:
        return self.root_b is None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(sorted({p.class_name for p in self.pairs if p.class_name is not None}))

    def require_usable(self) -> None:
        if not self.pairs:
            where = f"{self.root_a}" if self.root_b is None else f"{self.root_a} and {self.root_b}"
            raise NoUsableImages(
                f"No image in {where} has a partner: "
                + (
                    "each file must hold A on its left half and B on its right."
                    if self.root_b is None
                    else "pairs share their relative path and name (a/x.png with b/x.jpg)."
                )
            )

    def describe(self) -> list[str]:
        """One line per file left out: ``"A: path: reason (detail)"``."""
        lines = [
            f"{p.side}: {p.path}: {p.reason}" + (f" ({p.detail})" if p.detail else "")
            for p in self.problems
        ]
        first = "AB" if self.root_b is None else "A"
        lines += [f"{first}: {_describe(s)}" for s in self.skipped_a]
        lines += [f"B: {_describe(s)}" for s in self.skipped_b]
        return lines


def _key(path: str) -> str:
    rel = PurePosixPath(path)
    return str(rel.with_suffix(""))


def _by_key(entries: tuple[ImageEntry, ...], side: str, problems: list[PairProblem]):
    groups: dict[str, list[ImageEntry]] = defaultdict(list)
    for e in entries:
        groups[_key(e.path)].append(e)
    unique: dict[str, ImageEntry] = {}
    for key, group in groups.items():
        if len(group) == 1:
            unique[key] = group[0]
        else:
            names = ", ".join(e.path for e in group)
            problems += [PairProblem(side, e.path, AMBIGUOUS, names) for e in group]
    return unique, set(k for k, g in groups.items() if len(g) > 1)


def _same_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    ra, rb = a[0] / a[1], b[0] / b[1]
    return abs(ra - rb) <= SHAPE_TOLERANCE * max(ra, rb)


def _match(scan_a: ScanResult, scan_b: ScanResult) -> tuple[list[Pair], list[PairProblem]]:
    problems: list[PairProblem] = []
    a, ambiguous_a = _by_key(scan_a.entries, "A", problems)
    b, ambiguous_b = _by_key(scan_b.entries, "B", problems)
    pairs: list[Pair] = []
    for key, ea in a.items():
        eb = b.get(key)
        if eb is None:
            if key not in ambiguous_b:
                problems.append(PairProblem("A", ea.path, NO_PARTNER, "nothing of that name in B"))
            else:
                problems.append(PairProblem("A", ea.path, AMBIGUOUS, "B has two of that name"))
            continue
        size_a, size_b = (ea.width, ea.height), (eb.width, eb.height)
        if not _same_shape(size_a, size_b):
            detail = f"A is {size_a[0]}x{size_a[1]}, B ({eb.path}) is {size_b[0]}x{size_b[1]}"
            problems.append(PairProblem("A", ea.path, SIZE_MISMATCH, detail))
            continue
        pairs.append(Pair(ea.path, eb.path, size_a, size_b, ea.class_name))
    for key, eb in b.items():
        if key not in a and key not in ambiguous_a:
            problems.append(PairProblem("B", eb.path, NO_PARTNER, "nothing of that name in A"))
        elif key in ambiguous_a:
            problems.append(PairProblem("B", eb.path, AMBIGUOUS, "A has two of that name"))
    pairs.sort(key=lambda p: p.a)
    problems.sort(key=lambda p: (p.side, p.path))
    return pairs, problems


def _halves(scan: ScanResult) -> tuple[list[Pair], list[PairProblem]]:
    pairs, problems = [], []
    for e in scan.entries:
        if e.width % 2:
            detail = f"{e.width}x{e.height}: an odd width cannot be split into A and B"
            problems.append(PairProblem("AB", e.path, ODD_WIDTH, detail))
            continue
        half = (e.width // 2, e.height)
        pairs.append(Pair(e.path, e.path, half, half, e.class_name))
    return pairs, problems


def scan_pairs(
    folder_a: str | os.PathLike[str],
    folder_b: str | os.PathLike[str] | None = None,
    *,
    max_pixels: int | None = None,
) -> Generator[Progress, None, PairScan]:
    """Job: scan folder A and folder B (or one side-by-side folder when ``folder_b`` is None)
    and match their images into pairs."""
    kw = {} if max_pixels is None else {"max_pixels": max_pixels}
    scan_a = yield from _labelled(scan_folder(folder_a, **kw), "A" if folder_b else "")
    if folder_b is None:
        pairs, problems = _halves(scan_a)
        scan_b = None
    else:
        scan_b = yield from _labelled(scan_folder(folder_b, **kw), "B")
        pairs, problems = _match(scan_a, scan_b)
    digest = hashlib.sha256(scan_a.fingerprint.encode())
    digest.update((scan_b.fingerprint if scan_b else "side by side").encode())
    for p in pairs:
        digest.update(f"{p.a}\0{p.b}\n".encode())
    return PairScan(
        root_a=scan_a.root,
        root_b=scan_b.root if scan_b else None,
        pairs=tuple(pairs),
        problems=tuple(problems),
        skipped_a=scan_a.skipped,
        skipped_b=scan_b.skipped if scan_b else (),
        fingerprint=digest.hexdigest()[:16],
        max_pixels=scan_a.max_pixels,
    )


def _labelled(job: Generator[Progress, None, ScanResult], side: str):
    """Run ``job``, its messages prefixed with the folder's side."""
    try:
        while True:
            p = next(job)
            if side:
                p = Progress(
                    stage=p.stage, step=p.step, total=p.total, message=f"Folder {side}: {p.message}"
                )
            yield p
    except StopIteration as done:
        return done.value


@dataclass(frozen=True)
class PairedImages:
    """Decoded pairs: ``a`` and ``b`` are ``(n, resolution, resolution, 3)`` uint8 arrays whose
    ``i``-th images are a pair (``paths[i]``). ``lost`` lists files that changed since the
    scan."""

    a: np.ndarray
    b: np.ndarray
    paths: tuple[tuple[str, str], ...]
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    resolution: int
    fingerprint: str
    lost: tuple[SkippedFile, ...]

    def __len__(self) -> int:
        return len(self.a)


def load_pairs(
    scan: PairScan, resolution: int, *, background: tuple[int, int, int] = WHITE
) -> Generator[Progress, None, PairedImages]:
    """Job: decode every pair of ``scan`` to two ``resolution`` squares (:func:`fit_square`:
    both images of a pair are scaled and cropped alike, since they share their shape)."""
    if resolution < 1:
        raise ValueError(f"resolution must be positive, not {resolution}")
    scan.require_usable()
    total = len(scan.pairs)
    a = np.empty((total, resolution, resolution, 3), dtype=np.uint8)
    b = np.empty_like(a)
    kept: list[Pair] = []
    lost: list[SkippedFile] = []
    root_b = scan.root_b
    every = _report_every(total)
    last = time.monotonic()
    for i, pair in enumerate(scan.pairs):
        try:
            pa = scan.root_a / pair.a
            if not inside(pa, scan.root_a):
                raise ImageRejected(OUTSIDE, _OUTSIDE_DETAIL)
            img_a = open_image(pa, max_pixels=scan.max_pixels, background=background)
            if root_b is None:
                w, h = img_a.size
                if w % 2:
                    raise ImageRejected(ODD_WIDTH, f"{w}x{h}")
                img_b = img_a.crop((w // 2, 0, w, h))
                img_a = img_a.crop((0, 0, w // 2, h))
            else:
                pb = root_b / pair.b
                if not inside(pb, root_b):
                    raise ImageRejected(OUTSIDE, _OUTSIDE_DETAIL)
                img_b = open_image(pb, max_pixels=scan.max_pixels, background=background)
            a[len(kept)] = fit_square(img_a, resolution)
            b[len(kept)] = fit_square(img_b, resolution)
            kept.append(pair)
        except ImageRejected as err:
            name = pair.a if root_b is None or pair.a == pair.b else f"{pair.a} / {pair.b}"
            lost.append(SkippedFile(name, err.reason, f"{err.detail}; changed since the scan"))
        done = i + 1
        if done % every == 0 or done == total or time.monotonic() - last > _PROGRESS_SECONDS:
            last = time.monotonic()
            yield Progress(
                stage="decode", step=done, total=total, message=f"Decoding pairs: {done}/{total}"
            )
    if not kept:
        raise NoUsableImages(
            "No usable pair: every image changed or disappeared since the folders were "
            "checked. Check them again."
        )
    n = len(kept)
    names = scan.class_names
    labels = None
    if names and all(p.class_name is not None for p in kept):
        index = {name: i for i, name in enumerate(names)}
        labels = np.array([index[str(p.class_name)] for p in kept], dtype=np.int64)
    return PairedImages(
        a=a[:n].copy() if n < total else a,
        b=b[:n].copy() if n < total else b,
        paths=tuple((p.a, p.b) for p in kept),
        labels=labels,
        class_names=names,
        resolution=resolution,
        fingerprint=scan.fingerprint,
        lost=tuple(lost),
    )


@dataclass(frozen=True)
class UnpairedImages:
    """The two folders of an unpaired run, each decoded as an ordinary dataset: ``a`` (folder
    A) and ``b`` (folder B), of any sizes; nothing matches an image of one to the other."""

    a: ImageDataset
    b: ImageDataset

    @property
    def fingerprint(self) -> str:
        """Both folders' contents: changes when either changes."""
        both = f"unpaired\0{self.a.fingerprint}\0{self.b.fingerprint}"
        return hashlib.sha256(both.encode()).hexdigest()[:16]


def paired_crop_flip(a, b, size: int, generator, flip: bool = True):
    """The same random ``size`` crop and the same random horizontal flip (when ``flip``) for
    both image batches ``a`` and ``b`` (tensors ``(n, c, h, w)`` of one height and width),
    image by image, so every pair stays aligned pixel for pixel. Randomness from the torch
    ``generator`` (on any device; the batches may live on another)."""
    import torch

    if a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
        raise ValueError("the two batches must hold as many images of one size")
    n, h, w = a.shape[0], a.shape[-2], a.shape[-1]
    if size > min(h, w):
        raise ValueError(f"a {size} px crop does not fit {w}x{h} images")
    dev = generator.device
    tops = torch.randint(0, h - size + 1, (n,), generator=generator, device=dev).tolist()
    lefts = torch.randint(0, w - size + 1, (n,), generator=generator, device=dev).tolist()
    flips = (torch.rand(n, generator=generator, device=dev) < 0.5).tolist() if flip else [False] * n
    out_a, out_b = [], []
    for i in range(n):
        t, x = tops[i], lefts[i]
        ca = a[i, :, t : t + size, x : x + size]
        cb = b[i, :, t : t + size, x : x + size]
        if flips[i]:
            ca, cb = ca.flip(-1), cb.flip(-1)
        out_a.append(ca)
        out_b.append(cb)
    return torch.stack(out_a), torch.stack(out_b)


@dataclass(frozen=True)
class PairThumbnail:
    """The payload of a :func:`preview_pairs` report whose ``image`` shows pair ``index`` of
    the scan: A and B side by side, each whole, letterboxed in a square."""

    index: int
    a: str
    b: str
    size_a: tuple[int, int]
    size_b: tuple[int, int]


def _letterboxed(img, size: int) -> np.ndarray:
    from PIL import Image

    scale = size / max(img.width, img.height)
    shape = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    enlarge = scale > 1  # small images grow pixel-sharp, large ones shrink smoothly
    img = img.resize(shape, Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS)
    box = Image.new("RGB", (size, size), (128, 128, 128))
    box.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.asarray(box, dtype=np.uint8)


def preview_pairs(
    folder_a: str | os.PathLike[str],
    folder_b: str | os.PathLike[str] | None = None,
    *,
    thumbnails: int = 48,
    size: int = 72,
    gap: int = 4,
) -> Generator[Progress, None, PairScan]:
    """Job: :func:`scan_pairs`, then the first ``thumbnails`` pairs as images (A left, B right,
    ``gap`` pixels apart) in reports with a :class:`PairThumbnail` payload."""
    scan = yield from scan_pairs(folder_a, folder_b)
    shown = scan.pairs[:thumbnails]
    for i, pair in enumerate(shown):
        try:
            img_a = open_image(scan.root_a / pair.a, max_pixels=scan.max_pixels)
            if scan.root_b is None:
                w, h = img_a.size
                img_b = img_a.crop((w // 2, 0, w, h))
                img_a = img_a.crop((0, 0, w // 2, h))
            else:
                img_b = open_image(scan.root_b / pair.b, max_pixels=scan.max_pixels)
        except ImageRejected:
            continue  # changed since the scan; training's load names it
        strip = np.full((size, 2 * size + gap, 3), 128, dtype=np.uint8)
        strip[:, :size] = _letterboxed(img_a, size)
        strip[:, size + gap :] = _letterboxed(img_b, size)
        yield Progress(
            stage="scan",
            step=i + 1,
            total=len(shown),
            message=f"Showing pairs: {i + 1}/{len(shown)}",
            image=strip,
            payload=PairThumbnail(i, pair.a, pair.b, pair.size_a, pair.size_b),
        )
    return scan
