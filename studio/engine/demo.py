"""The built-in demo dataset: coloured shapes, one class folder per shape, with captions.

It lets a new user train something within minutes without finding images first, and gives
the tests a dataset whose content is known. Drawing is plain Pillow on a supersampled canvas,
so 3000 images at 64 px take a few seconds on one core.

Layout::

    folder/circle/00000.png    folder/circle/00000.txt   -> "small red circle on blue"
    ...
    folder/.studio-demo.journal -> while writing: one line per file written (size, SHA-256)
    folder/.studio-demo.json    -> the manifest, written last (atomically): every file with
                                   its size and SHA-256; its presence means the folder is complete

The demo removes or replaces only files it can prove it wrote: listed in the manifest or the
journal and still of the listed size and hash. A folder that is not empty and holds neither
(a user's folder, or a demo made before the manifest existed) is refused, nothing touched;
the default demo folder is then built in a fresh sibling (``demo-shapes-2``) instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import secrets
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from studio.core.atomic import fsync_dir, write_json, write_text
from studio.core.errors import StudioError
from studio.core.jobs import Progress
from studio.core.paths import demo_dir

DEMO_VERSION = 2  # 2: the manifest lists every file with its size and SHA-256
MARKER_NAME = ".studio-demo.json"
JOURNAL_NAME = ".studio-demo.journal"
_MAX_SIBLINGS = 20  # demo-shapes, demo-shapes-2, ... demo-shapes-20
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (245, 220, 50),
    "green": (50, 170, 70),
    "cyan": (60, 200, 220),
    "blue": (40, 80, 210),
    "purple": (140, 60, 190),
    "pink": (240, 130, 180),
    "brown": (120, 75, 40),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}
SIZES: dict[str, float] = {"small": 0.18, "medium": 0.27, "large": 0.37}  # radius / side

_SUPERSAMPLE = 4  # draw 4x larger, then box-reduce: cheap anti-aliasing
_REPORT_EVERY = 50
_MIN_DISTANCE = 140.0  # Euclidean RGB distance between a shape and its background...
_MIN_LUMA_GAP = 35.0  # ...and a brightness gap, so hue-only pairs (orange on pink) are out
_OUR_PATH = re.compile(rf"^({'|'.join(SHAPES)})/\d+\.(png|txt)$")


def _luma(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _contrasting_pairs() -> list[tuple[str, str]]:
    """Every (shape colour, background colour) pair that is easy to tell apart."""
    return [
        (fg, bg)
        for fg, fg_rgb in PALETTE.items()
        for bg, bg_rgb in PALETTE.items()
        if math.dist(fg_rgb, bg_rgb) >= _MIN_DISTANCE
        and abs(_luma(fg_rgb) - _luma(bg_rgb)) >= _MIN_LUMA_GAP
    ]


_PAIRS = _contrasting_pairs()


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Corner points of a polygonal shape of outer radius ``r``, rotated by ``angle``."""
    if shape == "square":
        pts = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == "triangle":
        pts = [(-math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
    elif shape == "star":
        pts = [(-math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else r * 0.45) for k in range(10)]
    elif shape == "cross":
        w = 0.33  # half-width of the arms, relative to r
        corners = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1)]
        corners += [(-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        return [_rotate(cx, cy, x * r * 0.9, y * r * 0.9, angle) for x, y in corners]
    else:
        raise ValueError(shape)
    return [_rotate(cx, cy, rad * math.cos(a), rad * math.sin(a), angle) for a, rad in pts]


def _rotate(cx: float, cy: float, x: float, y: float, angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    return (cx + x * c - y * s, cy + x * s + y * c)


def draw_shape_image(index: int, size: int = 64, seed: int = 0) -> tuple[Image.Image, str, str]:
    """Draw demo image ``index``; return ``(image, shape, caption)``.

    Each image depends only on ``(seed, index)``, so a bigger dataset starts with the same
    images as a smaller one.
    """
    rng = np.random.default_rng([seed, index])
    shape = SHAPES[index % len(SHAPES)]  # balanced classes
    size_name = list(SIZES)[int(rng.integers(len(SIZES)))]
    fg, bg = _PAIRS[int(rng.integers(len(_PAIRS)))]
    big = size * _SUPERSAMPLE
    r = SIZES[size_name] * big * float(rng.uniform(0.9, 1.1))
    slack = max(0.0, big / 2 - r * 1.05)  # keep the whole shape inside the image
    cx = big / 2 + float(rng.uniform(-slack, slack)) * 0.8
    cy = big / 2 + float(rng.uniform(-slack, slack)) * 0.8
    angle = math.radians(float(rng.uniform(-20.0, 20.0)))

    img = Image.new("RGB", (big, big), PALETTE[bg])
    draw = ImageDraw.Draw(img)
    colour = PALETTE[fg]
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(1, round(r * 0.35)))
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=colour)
    return img.reduce(_SUPERSAMPLE), shape, f"{size_name} {fg} {shape} on {bg}"


# -- what the demo wrote: the manifest and the journal ------------------------------------------

Entry = tuple[int, str]  # size in bytes, SHA-256 hex


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The finished demo's manifest (the current version), or None."""
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("version") != DEMO_VERSION:
        return None
    if not isinstance(data.get("files"), dict):
        return None
    return data


def _entry(value: Any) -> Entry | None:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], int)
        and isinstance(value[1], str)
    ):
        return int(value[0]), value[1]
    return None


def _listed(marker: dict[str, Any]) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for rel, value in marker["files"].items():
        entry = _entry(value)
        if isinstance(rel, str) and _OUR_PATH.match(rel) and entry is not None:
            out[rel] = entry
    return out


def _claimed(folder: Path) -> dict[str, Entry]:
    """Every file the manifest or the journal says the demo wrote (paths checked to be the
    demo's own names, so a damaged list can never point elsewhere)."""
    manifest = _read_manifest(folder)
    out = _listed(manifest) if manifest is not None else {}
    try:
        lines = (folder / JOURNAL_NAME).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    for line in lines:
        try:
            rel, size, digest = json.loads(line)
        except (ValueError, TypeError):
            continue  # a line cut short by a crash
        entry = _entry([size, digest])
        if isinstance(rel, str) and _OUR_PATH.match(rel) and entry is not None:
            out[rel] = entry
    return out


def _matches(path: Path, entry: Entry) -> bool:
    """``path`` is a regular file (not a link) of the listed size and hash."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != entry[0]:
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() == entry[1]
    except OSError:
        return False


def _is_demo_folder(folder: Path) -> bool:
    return (folder / JOURNAL_NAME).is_file() or _read_manifest(folder) is not None


def _usable(folder: Path) -> bool:
    """A folder the demo may write into: missing, empty, or a demo it made."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    return _is_demo_folder(folder) or not any(folder.iterdir())


def _refusal(folder: Path) -> StudioError:
    return StudioError(
        f"{folder} is not empty and is not a demo dataset this version of Studio made, so "
        "nothing in it was changed; choose an empty or new folder for the demo."
    )


def _target_names(count: int) -> list[tuple[int, str]]:
    width = max(5, len(str(count - 1)))
    return [(i, f"{SHAPES[i % len(SHAPES)]}/{i:0{width}d}") for i in range(count)]


def _ours(folder: Path) -> dict[str, Entry]:
    """The files in ``folder`` the demo can prove it wrote: claimed, and still matching."""
    if not folder.is_dir():
        return {}
    return {rel: e for rel, e in _claimed(folder).items() if _matches(folder / rel, e)}


def _in_the_way(folder: Path, count: int, ours: dict[str, Entry]) -> Path | None:
    """The first file at a name a demo of ``count`` images writes that is not provably ours."""
    for _i, stem in _target_names(count):
        for rel in (f"{stem}.png", f"{stem}.txt"):
            path = folder / rel
            if (path.exists() or path.is_symlink()) and rel not in ours:
                return path
    return None


def _prepare(folder: Path, count: int) -> None:
    """Check ``folder`` can take a demo of ``count`` images without touching a file the demo
    cannot prove it wrote, then remove the provable files of an earlier demo."""
    if not _usable(folder):
        raise _refusal(folder)
    ours = _ours(folder)
    blocker = _in_the_way(folder, count, ours)
    if blocker is not None:
        raise StudioError(
            f"{blocker} is in the way of the demo and Studio cannot prove it wrote it, so "
            "nothing was changed; choose an empty or new folder for the demo."
        )
    if not folder.is_dir():
        return
    # The journal lists the old files until they are gone (a crash here loses no proof);
    # then the manifest goes, so the folder no longer looks complete.
    lines = "".join(json.dumps([rel, *entry]) + "\n" for rel, entry in sorted(ours.items()))
    write_text(folder / JOURNAL_NAME, lines)
    with contextlib.suppress(FileNotFoundError):
        (folder / MARKER_NAME).unlink()
    for rel, entry in sorted(ours.items()):
        if _matches(folder / rel, entry):  # checked again just before removal
            (folder / rel).unlink()
    (folder / JOURNAL_NAME).unlink()


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``, whole or not at all (a hidden temp file linked into
    place), and never replacing anything already there."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)  # fails when ``path`` exists, link or not
        except FileExistsError:
            raise StudioError(
                f"{path} appeared while the demo was being written; it was left alone. Choose "
                "an empty or new folder for the demo."
            ) from None
        except OSError:  # a file system without hard links
            with open(path, "xb") as fh:
                fh.write(data)
    finally:
        tmp.unlink(missing_ok=True)


def make_demo_dataset(
    folder: str | os.PathLike[str], *, count: int = 3000, size: int = 64, seed: int = 0
) -> Generator[Progress, None, Path]:
    """Job: write ``count`` demo PNGs of ``size`` px with captions into ``folder``.

    ``folder`` must be missing, empty or a demo this version made; the files of an earlier
    demo are removed first, only where their size and hash prove the demo wrote them. Each
    file written is recorded in a journal; the manifest, written last, lists them all, so a
    cancelled or crashed run never looks complete (see :func:`demo_is_complete`).
    """
    if count < 1 or size < 8:
        raise StudioError(
            f"The demo needs a count of 1 or more and a size of 8 px or more, not {count} and {size}."
        )
    folder = Path(folder)
    _prepare(folder, count)
    for shape in SHAPES:
        (folder / shape).mkdir(parents=True, exist_ok=True)
    files: dict[str, Entry] = {}
    yield Progress(stage="demo", step=0, total=count, message="Drawing the demo images")
    with open(folder / JOURNAL_NAME, "a", encoding="utf-8") as journal:
        for i, stem in _target_names(count):
            img, _shape, caption = draw_shape_image(i, size, seed)
            buffer = io.BytesIO()
            img.save(buffer, format="PNG", compress_level=6)
            for rel, data in ((f"{stem}.png", buffer.getvalue()),
                              (f"{stem}.txt", (caption + "\n").encode("utf-8"))):  # fmt: skip
                entry = (len(data), hashlib.sha256(data).hexdigest())
                journal.write(json.dumps([rel, *entry]) + "\n")  # the claim comes first
                journal.flush()
                _write_new(folder / rel, data)
                files[rel] = entry
            done = i + 1
            if done % _REPORT_EVERY == 0 or done == count:
                yield Progress(
                    stage="demo",
                    step=done,
                    total=count,
                    message=f"Drawing the demo images: {done}/{count}",
                )
        os.fsync(journal.fileno())
    fsync_dir(folder)
    marker = {"count": count, "size": size, "seed": seed, "version": DEMO_VERSION}
    write_json(folder / MARKER_NAME, {**marker, "shapes": list(SHAPES), "files": files})
    (folder / JOURNAL_NAME).unlink()  # the manifest now lists every file
    return folder


def demo_is_complete(
    folder: str | os.PathLike[str],
    *,
    count: int | None = None,
    size: int | None = None,
    seed: int | None = None,
) -> bool:
    """True when ``folder`` holds a finished demo dataset of the current version.

    ``count``, ``size`` and ``seed``, when given, must also match the finished dataset. Every
    listed file must still be there with its listed size (a user may have tidied the folder).
    """
    folder = Path(folder)
    marker = _read_manifest(folder)
    if marker is None:
        return False
    wanted = {"count": count, "size": size, "seed": seed}
    if any(value is not None and marker.get(key) != value for key, value in wanted.items()):
        return False
    expected = marker.get("count")
    if not isinstance(expected, int) or expected < 1:
        return False
    files = _listed(marker)
    if len(files) != 2 * expected:
        return False
    for rel, (length, _digest) in files.items():
        try:
            if (folder / rel).stat().st_size != length:
                return False
        except OSError:
            return False
    return True


def _default_candidates() -> list[Path]:
    """The default demo folder and its fresh siblings (used when the default holds files
    Studio cannot prove it wrote, such as a demo from before the manifest)."""
    base = demo_dir()
    return [base] + [base.with_name(f"{base.name}-{k}") for k in range(2, _MAX_SIBLINGS + 1)]


def find_demo() -> Path | None:
    """The default location's finished demo, whatever its size, or None."""
    return next((c for c in _default_candidates() if demo_is_complete(c)), None)


def default_demo_folder(
    count: int | None = None, size: int | None = None, seed: int | None = None
) -> Path:
    """Where the default demo is, or goes: the first of the default folder and its siblings
    that holds a finished demo of these settings, else the first the demo may write into."""
    candidates = _default_candidates()
    for candidate in candidates:
        if demo_is_complete(candidate, count=count, size=size, seed=seed):
            return candidate
    for candidate in candidates:
        if _usable(candidate) and (
            count is None or _in_the_way(candidate, count, _ours(candidate)) is None
        ):
            return candidate
    raise StudioError(
        f"{candidates[0]} and its siblings hold files Studio did not write; move them away "
        "or make the demo in an empty folder (studio demo --out DIR)."
    )


def ensure_demo_dataset(
    folder: str | os.PathLike[str] | None = None,
    *,
    count: int = 3000,
    size: int = 64,
    seed: int = 0,
) -> Generator[Progress, None, Path]:
    """Job: return the demo folder (default :func:`default_demo_folder`, under
    :func:`studio.core.paths.demo_dir`), making it first when it is missing, incomplete or
    made with other settings. A complete one is returned at once, without yielding."""
    if folder is None:
        target = default_demo_folder(count, size, seed)
    else:
        target = Path(folder)
    if demo_is_complete(target, count=count, size=size, seed=seed):
        return target
    return (yield from make_demo_dataset(target, count=count, size=size, seed=seed))
