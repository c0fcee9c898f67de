"""Image folders: find, verify and decode the images a model trains on.

Everything here is plain Python, Pillow and numpy, so it runs in the CLI, the tests and the
engine thread alike. The long operations (:func:`scan_folder`, :func:`load_dataset`) are jobs:
generators that yield :class:`~studio.core.jobs.Progress` and return their result.

A dataset folder looks like this::

    root/
        cats/a.png          -> class "cats"
        cats/a.txt          -> caption of cats/a.png (a sidecar, not a skipped file)
        dogs/puppies/b.jpg  -> class "dogs" (the first folder below the root names the class)
        c.png               -> no class
        .DS_Store           -> hidden: ignored silently
        notes.md            -> listed as skipped: "not an image"
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from studio.core.atomic import atomic_path
from studio.core.errors import NoUsableImages
from studio.core.jobs import Progress
from studio.core.safefiles import inside, kind_of, open_regular, printable
from studio.engine.images import (  # noqa: F401 - re-exported: the public image API
    CAPTION_EXTENSION,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    IMAGE_FORMATS,
    NOT_REGULAR,
    OUTSIDE,
    REASONS,
    WHITE,
    ImageRejected,
    _decode,
    fit_square,
    open_image,
    to_rgb,
)

_CAPTION_MAX_BYTES = 64 * 1024
_CACHE_VERSION = 1
_PROGRESS_SECONDS = 0.25  # also report on time, so cancel stays responsive on huge files
_OUTSIDE_DETAIL = "a link to something outside the dataset folder; not followed"


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the dataset. ``path`` is relative to the root, with ``/``."""

    path: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Thumbnail:
    """The payload of a scan report whose ``image`` is a thumbnail: the image at ``path``
    (relative to the scanned folder, ``/``-separated, as :attr:`ImageEntry.path`), whose full
    size (after EXIF rotation) is ``width`` x ``height`` pixels."""

    path: str
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class ImageEntry:
    """One usable image. ``width``/``height`` are after EXIF rotation; ``mode`` and ``format``
    describe the file as stored. ``class_name`` is the first folder below the root, or None."""

    path: str
    width: int
    height: int
    mode: str
    format: str
    class_name: str | None = None
    caption: str | None = None
    size_bytes: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class ScanResult:
    """What :func:`scan_folder` found. Entries are sorted by path."""

    root: Path
    entries: tuple[ImageEntry, ...]
    skipped: tuple[SkippedFile, ...]
    class_names: tuple[str, ...]
    fingerprint: str
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def labels(self) -> tuple[int | None, ...]:
        """Index of each entry's class in :attr:`class_names`; None for images at the root."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return tuple(None if e.class_name is None else index[e.class_name] for e in self.entries)

    def size_summary(self) -> list[tuple[int, int, int]]:
        """``(width, height, count)`` for each image size, most common first."""
        counts = Counter((e.width, e.height) for e in self.entries)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(w, h, n) for (w, h), n in ordered]

    def describe_skipped(self) -> list[str]:
        """One line per skipped file: ``"path: reason (detail)"``."""
        return [_describe(s) for s in self.skipped]

    def require_usable(self) -> None:
        """Raise :class:`NoUsableImages` with a message for the user if there is no image."""
        if self.entries:
            return
        if not self.skipped:
            raise NoUsableImages(f"The folder {self.root} is empty.")
        n = len(self.skipped)
        what = "1 file was" if n == 1 else f"{n} files were"
        reasons = Counter(s.reason for s in self.skipped).most_common()
        why = ", ".join(f"{count} {reason}" for reason, count in reasons)
        raise NoUsableImages(
            f"No usable image in {self.root}: {what} skipped (see the list): {why}."
        )


def _describe(skipped: SkippedFile) -> str:
    path = printable(skipped.path)  # a name that is not UTF-8 prints as escapes
    if skipped.detail:
        return f"{path}: {skipped.reason} ({printable(skipped.detail)})"
    return f"{path}: {skipped.reason}"


@dataclass(frozen=True)
class _Found:
    rel: str
    size: int
    mtime_ns: int


def _walk(root: Path, problems: list[SkippedFile]) -> Iterator[_Found]:
    """Yield every non-hidden regular file below ``root``; folders it cannot open, FIFOs,
    devices and sockets, and symlinks that lead out of ``root`` go to ``problems``.

    Symlinked folders inside ``root`` are followed once each, so a link loop cannot trap the
    walk.
    """
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda d: d.name)
        except OSError as err:
            if not prefix:
                raise
            problems.append(SkippedFile(prefix, "unreadable", f"cannot open the folder: {err}"))
            continue
        subfolders = []
        for item in items:
            if item.name.startswith("."):
                continue
            rel = f"{prefix}/{item.name}" if prefix else item.name
            try:
                if item.is_symlink() and not inside(item.path, root):
                    problems.append(SkippedFile(rel, OUTSIDE, _OUTSIDE_DETAIL))
                    continue
                if item.is_dir():
                    subfolders.append((Path(item.path), rel))
                    continue
                st = item.stat()
            except OSError as err:
                problems.append(SkippedFile(rel, "unreadable", printable(err)))
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(SkippedFile(rel, NOT_REGULAR, kind_of(st.st_mode)))
                continue
            yield _Found(rel, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subfolders))


def _sort_key(rel: str) -> tuple[str, ...]:
    return PurePosixPath(rel).parts


def _read_caption(root: Path, path: Path) -> str | None:
    """The caption text, or None when it cannot be read or is no longer a regular file
    inside ``root`` (the walk checked; this checks again when it is read)."""
    if not inside(path, root):
        return None
    try:
        with open_regular(path) as fh:
            raw = fh.read(_CAPTION_MAX_BYTES)
    except OSError:
        return None
    return raw.decode("utf-8", errors="replace").strip()


def _fingerprint(entries: list[ImageEntry], class_names: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    rows = [[e.path, e.size_bytes, e.mtime_ns, e.caption] for e in entries]
    digest.update(json.dumps({"images": rows, "classes": list(class_names)}).encode("utf-8"))
    return digest.hexdigest()


def _report_every(total: int) -> int:
    return max(1, min(20, -(-total // 100)))  # every ~1%, and at least every 20 files


def scan_folder(
    root: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    thumbnails: int = 0,
    thumb_size: int = 96,
) -> Generator[Progress, None, ScanResult]:
    """Job: list and fully verify every image below ``root``.

    Yields ``Progress(stage="scan")``; the first ``thumbnails`` usable images also come as a
    ``thumb_size`` thumbnail in ``Progress.image`` with a :class:`Thumbnail` payload. Images in a
    subfolder get the subfolder's name as class; images at the root get no class (so when both
    exist, the root images have no label). A missing root, or a file, raises
    :class:`NoUsableImages`; an empty result does not (see :meth:`ScanResult.require_usable`).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise NoUsableImages(f"The folder {root} does not exist.")
    if not root.is_dir():
        raise NoUsableImages(f"{root} is a file, not a folder. Choose the folder of images.")

    problems: list[SkippedFile] = []
    found: list[_Found] = []
    last = time.monotonic()
    try:
        for item in _walk(root, problems):
            found.append(item)
            if len(found) % 500 == 0 or time.monotonic() - last > _PROGRESS_SECONDS:
                last = time.monotonic()
                yield Progress(stage="scan", step=0, message=f"Listing files: {len(found)}")
    except OSError as err:
        raise NoUsableImages(f"The folder {root} cannot be read: {err}") from None

    # "foo.txt" beside "foo.png" is that image's caption, not a skipped file.
    texts = {
        (str(rel.parent), rel.stem): item.rel
        for item in found
        if (rel := PurePosixPath(item.rel)).suffix.lower() == CAPTION_EXTENSION
    }
    image_stems: set[tuple[str, str]] = set()
    candidates: list[_Found] = []
    for item in sorted(found, key=lambda f: _sort_key(f.rel)):
        rel = PurePosixPath(item.rel)
        if rel.suffix.lower() in IMAGE_EXTENSIONS:
            candidates.append(item)
            image_stems.add((str(rel.parent), rel.stem))
    for item in found:
        rel = PurePosixPath(item.rel)
        is_caption = texts.get((str(rel.parent), rel.stem)) == item.rel
        if rel.suffix.lower() in IMAGE_EXTENSIONS or (
            is_caption and (str(rel.parent), rel.stem) in image_stems
        ):
            continue
        kind = f"a '{rel.suffix}' file" if rel.suffix else "a file without extension"
        problems.append(SkippedFile(item.rel, "not an image", kind))

    entries: list[ImageEntry] = []
    total = len(candidates)
    every = _report_every(total)
    for i, item in enumerate(candidates):
        path = root / item.rel
        try:
            if not inside(path, root):  # swapped for a link since the listing
                raise ImageRejected(OUTSIDE, _OUTSIDE_DETAIL)
            rgb, mode, fmt = _decode(path, max_pixels, WHITE)
        except ImageRejected as err:
            problems.append(SkippedFile(item.rel, err.reason, err.detail))
            rgb = None
        if rgb is not None:
            rel = PurePosixPath(item.rel)
            caption_rel = texts.get((str(rel.parent), rel.stem))
            entries.append(
                ImageEntry(
                    path=item.rel,
                    width=rgb.width,
                    height=rgb.height,
                    mode=mode,
                    format=fmt,
                    class_name=rel.parts[0] if len(rel.parts) > 1 else None,
                    caption=_read_caption(root, root / caption_rel) if caption_rel else None,
                    size_bytes=item.size,
                    mtime_ns=item.mtime_ns,
                )
            )
            if len(entries) <= thumbnails:
                thumb = rgb.copy()
                thumb.thumbnail((thumb_size, thumb_size), Image.Resampling.LANCZOS)
                yield Progress(
                    stage="scan",
                    step=i + 1,
                    total=total,
                    message=f"Checking images: {i + 1}/{total}",
                    image=np.asarray(thumb, dtype=np.uint8).copy(),
                    payload=Thumbnail(item.rel, rgb.width, rgb.height),
                )
                last = time.monotonic()
                continue
        done = i + 1
        if done % every == 0 or done == total or time.monotonic() - last > _PROGRESS_SECONDS:
            last = time.monotonic()
            yield Progress(
                stage="scan", step=done, total=total, message=f"Checking images: {done}/{total}"
            )

    class_names = tuple(sorted({e.class_name for e in entries if e.class_name is not None}))
    problems.sort(key=lambda s: _sort_key(s.path))
    return ScanResult(
        root=root,
        entries=tuple(entries),
        skipped=tuple(problems),
        class_names=class_names,
        fingerprint=_fingerprint(entries, class_names),
        max_pixels=max_pixels,
    )


# -- decoding a whole dataset -----------------------------------------------------------------


@dataclass(frozen=True)
class ImageDataset:
    """Decoded training images, ``N x resolution x resolution x 3`` uint8.

    ``labels`` holds each image's index into ``class_names``, or is None unless every image
    has a class (images at the root of a folder that also has class subfolders have none).
    ``captions`` holds each image's sidecar caption, else its class folder's name, else "".
    """

    images: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    captions: tuple[str | None, ...]
    paths: tuple[str, ...]
    resolution: int
    fingerprint: str
    skipped: tuple[SkippedFile, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _cache_file(
    cache_dir: Path, scan: ScanResult, resolution: int, background: tuple[int, int, int]
) -> Path:
    key = json.dumps([_CACHE_VERSION, scan.fingerprint, resolution, list(background)])
    return Path(cache_dir) / f"images-{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"


def _read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # missing or corrupt: rebuilt and overwritten
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.shape != shape:
        return None
    return arr


def _write_cache(path: Path, images: np.ndarray) -> None:
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, images, allow_pickle=False)  # a handle: np.save would add ".npy"
    except OSError:
        pass  # the cache only saves time; a full or read-only disk must not fail the job


def load_dataset(
    scan: ScanResult,
    resolution: int,
    *,
    background: tuple[int, int, int] = WHITE,
    cache_dir: Path | None = None,
) -> Generator[Progress, None, ImageDataset]:
    """Job: decode every entry of ``scan`` to a ``resolution`` square (see :func:`fit_square`).

    Images that vanished or broke since the scan are added to ``skipped``; if none is left it
    raises :class:`NoUsableImages`. With ``cache_dir``, the decoded array is kept as ``.npy``
    keyed by the scan's fingerprint, the resolution and the background; a cache hit skips the
    decoding. A corrupt cache file is ignored and rewritten.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, not {resolution}")
    scan.require_usable()
    entries = scan.entries
    total = len(entries)
    background = (int(background[0]), int(background[1]), int(background[2]))
    cache = _cache_file(cache_dir, scan, resolution, background) if cache_dir else None
    if cache is not None:
        cached = _read_cache(cache, (total, resolution, resolution, 3))
        if cached is not None:
            yield Progress(
                stage="decode", step=total, total=total, message=f"Loaded {total} images (cache)"
            )
            return _make_dataset(scan, list(entries), cached, resolution, ())

    images = np.empty((total, resolution, resolution, 3), dtype=np.uint8)
    kept: list[ImageEntry] = []
    lost: list[SkippedFile] = []
    every = _report_every(total)
    last = time.monotonic()
    for i, entry in enumerate(entries):
        try:
            if not inside(scan.root / entry.path, scan.root):
                raise ImageRejected(OUTSIDE, _OUTSIDE_DETAIL)
            rgb = open_image(
                scan.root / entry.path, max_pixels=scan.max_pixels, background=background
            )
            images[len(kept)] = fit_square(rgb, resolution)
            kept.append(entry)
        except ImageRejected as err:
            lost.append(
                SkippedFile(entry.path, err.reason, f"{err.detail}; changed since the scan")
            )
        done = i + 1
        if done % every == 0 or done == total or time.monotonic() - last > _PROGRESS_SECONDS:
            last = time.monotonic()
            yield Progress(
                stage="decode", step=done, total=total, message=f"Decoding images: {done}/{total}"
            )
    if not kept:
        raise NoUsableImages(
            f"No usable image in {scan.root}: all {total} images changed or disappeared since "
            "the folder was checked. Check the folder again."
        )
    if len(kept) < total:
        images = images[: len(kept)].copy()
    elif cache is not None:
        # Only a complete decode matches the fingerprint, so only that one is cached.
        _write_cache(cache, images)
    return _make_dataset(scan, kept, images, resolution, tuple(lost))


def caption_of(entry: ImageEntry) -> str:
    """The image's sidecar caption, else its class folder's name ("red_cars" -> "red cars"),
    else the empty caption."""
    if entry.caption and entry.caption.strip():
        return entry.caption.strip()
    if entry.class_name:
        return " ".join(entry.class_name.replace("_", " ").replace("-", " ").split())
    return ""


def _make_dataset(
    scan: ScanResult,
    kept: list[ImageEntry],
    images: np.ndarray,
    resolution: int,
    lost: tuple[SkippedFile, ...],
) -> ImageDataset:
    labels: np.ndarray | None = None
    if all(e.class_name is not None for e in kept):
        index = {name: i for i, name in enumerate(scan.class_names)}
        labels = np.array([index[str(e.class_name)] for e in kept], dtype=np.int64)
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=scan.class_names,
        captions=tuple(caption_of(e) for e in kept),
        paths=tuple(e.path for e in kept),
        resolution=resolution,
        fingerprint=scan.fingerprint,
        skipped=scan.skipped + lost,
    )


def split_holdout(
    n: int,
    fraction: float = 0.05,
    seed: int = 0,
    *,
    min_holdout: int = 1,
    max_holdout: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into sorted ``(train, held_out)`` index arrays, the same every time.

    The held-out share is ``fraction`` of ``n`` clamped to ``[min_holdout, max_holdout]``, and
    always leaves at least one training image; with ``n < 2`` or ``fraction <= 0`` it is empty.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), not {fraction}")
    if n < 2 or fraction == 0.0:
        return np.arange(max(n, 0), dtype=np.int64), np.empty(0, dtype=np.int64)
    count = min(max(round(n * fraction), min_holdout), max_holdout, n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[count:]).astype(np.int64), np.sort(order[:count]).astype(np.int64)
