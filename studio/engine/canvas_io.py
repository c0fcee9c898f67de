"""Canvas files: opening an image for the canvas, mask PNGs, the ``.studio-canvas`` document
and crash recovery. Pillow and numpy only (no torch, no Qt).

A ``.studio-canvas`` file is one zip, written atomically (temp file, fsync, rename), holding
``document.json`` (format, version, size, name, source path, metadata), ``image.png`` and
``mask.npy`` — the float32 mask exactly, so a reloaded or recovered mask is bit-identical. One
file rather than a folder, so a save is a single atomic rename and the user can move it as one.
Undo history is not saved, nor recovered after a crash: only the image and the mask are.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

from studio.core import atomic
from studio.core.canvas import CanvasDocument, MaskCommand, scale_mask
from studio.core.errors import StudioError
from studio.core.paths import studio_home
from studio.engine.images import DEFAULT_MAX_PIXELS, ImageRejected, open_checked, open_image
from studio.engine.images import to_rgb as _to_rgb

FORMAT = "studio-canvas"
FORMAT_VERSION = 1
SUFFIX = ".studio-canvas"
_JSON, _IMAGE, _MASK = "document.json", "image.png", "mask.npy"


class CanvasFileError(StudioError):
    """A canvas, mask or autosave file that cannot be read or written; says which and why."""


class MaskSizeError(CanvasFileError):
    """A mask file whose size differs from the image's (and resizing was not asked for)."""


# -- images and masks ------------------------------------------------------------------------


def open_canvas_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """The image at ``path`` as displayed (EXIF orientation applied): ``H x W x 3`` uint8."""
    try:
        img = open_image(path, max_pixels=max_pixels)
    except ImageRejected as err:
        raise CanvasFileError(f"Cannot open {Path(path).name}: {err}") from None
    return np.asarray(img, dtype=np.uint8).copy()


def open_document(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> CanvasDocument:
    """A ``.studio-canvas`` file, or a new document (empty mask) for an image file."""
    p = Path(path)
    if p.suffix.lower() == SUFFIX:
        return load_document(p, max_pixels=max_pixels)
    image = open_canvas_image(p, max_pixels=max_pixels)
    return CanvasDocument(image, name=p.stem, source_path=p)


def mask_to_image(mask: np.ndarray) -> Image.Image:
    """An 8-bit ``L`` image of ``mask`` (0..1 maps to 0..255, white = masked)."""
    return Image.fromarray(np.rint(np.clip(mask, 0.0, 1.0) * 255.0).astype(np.uint8), "L")


def export_mask_png(mask: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write ``mask`` as an 8-bit grayscale PNG, atomically."""
    with atomic.atomic_path(path) as tmp:
        mask_to_image(mask).save(tmp, format="PNG")


def import_mask(
    path: str | os.PathLike[str],
    shape: tuple[int, int] | None = None,
    *,
    resize: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a mask image of any mode as ``H x W`` float32 in [0, 1] (white = masked).

    EXIF orientation is applied, as for images. With an alpha channel and uniform colour (a
    painted transparent layer) the alpha is the mask; otherwise luminance times alpha. If
    ``shape`` is given and differs, :class:`MaskSizeError` is raised unless ``resize``.
    """
    p = Path(path)
    try:
        # A regular file only, the bomb warning an error, pixels and decoded bytes bounded.
        with open_checked(p, max_pixels=max_pixels) as img:
            img.load()
            mask = _mask_values(ImageOps.exif_transpose(img))
    except ImageRejected as err:
        raise CanvasFileError(f"Cannot read the mask {p.name}: {err}") from None
    except CanvasFileError:
        raise
    except Exception as err:  # noqa: BLE001 - damaged files make decoders raise anything
        raise CanvasFileError(f"Cannot read the mask {p.name}: {err}") from None
    if shape is not None and mask.shape != tuple(shape):
        if not resize:
            raise MaskSizeError(
                f"The mask {p.name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{shape[1]}x{shape[0]}. Choose 'resize the mask' to stretch it to fit, or use a "
                "mask made for this image."
            )
        mask = scale_mask(mask, shape[0], shape[1])
    return mask


def _mask_values(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16"):
        return (np.asarray(img, np.float32) / 65535.0).astype(np.float32)
    if mode in ("I", "F"):
        values = np.nan_to_num(np.asarray(img, np.float64))
        scale = 1.0 if values.max(initial=0) <= 1.0 else 255.0 if values.max() <= 255 else 65535.0
        return np.clip(values / scale, 0, 1).astype(np.float32)
    if mode == "1":
        return np.asarray(img.convert("L"), np.float32) / 255.0
    if "A" in mode or "a" in mode or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), np.float32) / 255.0
        alpha, seen = rgba[..., 3], rgba[..., :3][rgba[..., 3] > 0]
        if seen.size == 0 or (seen.max(axis=0) == seen.min(axis=0)).all():
            return alpha.astype(np.float32)
        gray = np.asarray(img.convert("RGBA").convert("RGB").convert("L"), np.float32) / 255.0
        return (gray * alpha).astype(np.float32)
    return (np.asarray(img.convert("L"), np.float32) / 255.0).astype(np.float32)


def load_mask_into(
    doc: CanvasDocument, path: str | os.PathLike[str], *, resize: bool = False
) -> MaskCommand | None:
    """Replace ``doc``'s mask with the one in ``path``, undoably."""
    return doc.set_mask(import_mask(path, doc.shape, resize=resize), f"Load mask {Path(path).name}")


# -- the document file -------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} cannot be saved in a canvas file")


def _write_zip(path: Path, header_json: str, image_png: bytes, mask: np.ndarray) -> None:
    # Masks are mostly 0 and 1, which deflate squeezes well even at level 1.
    with (
        atomic.atomic_path(path) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
    ):
        zf.writestr(_JSON, header_json)
        zf.writestr(_IMAGE, image_png, compress_type=zipfile.ZIP_STORED)  # PNG is compressed
        with zf.open(_MASK, "w", force_zip64=True) as fh:
            np.save(fh, np.ascontiguousarray(mask, np.float32), allow_pickle=False)


def _encode_png(image: np.ndarray, compress_level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _header(doc: CanvasDocument, extra: dict[str, Any] | None = None) -> str:
    """``document.json``'s text, made now so later edits to the metadata cannot race it."""
    h, w = doc.shape
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "width": w,
        "height": h,
        "name": doc.name,
        "source_path": doc.source_path,
        "metadata": doc.metadata,
        "saved_at": time.time(),
    }
    header.update(extra or {})
    try:
        return json.dumps(header, indent=2, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as err:
        raise CanvasFileError(f"The document's metadata cannot be saved: {err}") from None


def save_document(
    doc: CanvasDocument, path: str | os.PathLike[str], *, compress_level: int = 6
) -> Path:
    """Save ``doc`` (image, exact mask, name, source, metadata) to ``path`` atomically and mark
    its history clean. Returns the path written."""
    p = Path(path)
    doc.end_stroke()
    _write_zip(p, _header(doc), _encode_png(np.asarray(doc.image), compress_level), doc.mask)
    doc.history.mark_clean()
    return p


def _read_header(zf: zipfile.ZipFile, max_pixels: int) -> dict[str, Any]:
    info = zf.getinfo(_JSON)
    if info.file_size > 16 * 1024 * 1024:
        raise ValueError("document.json is implausibly large")
    header = json.loads(zf.read(info).decode("utf-8"))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("not a Studio canvas file")
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"written by a newer Studio (format version {version}); please update")
    w, h = header.get("width"), header.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        raise ValueError("the recorded image size is invalid")
    if w * h > max_pixels:
        raise ValueError(f"{w}x{h} is over the pixel limit")
    return header


def _read_parts(path: Path, max_pixels: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """``(header, image, mask)`` from a canvas file; raises anything on damage."""
    with zipfile.ZipFile(path) as zf:
        header = _read_header(zf, max_pixels)
        w, h = header["width"], header["height"]
        # Check declared sizes before reading, so a hostile zip cannot balloon in memory.
        image_info, mask_info = zf.getinfo(_IMAGE), zf.getinfo(_MASK)
        if image_info.file_size > 2 * w * h * 3 + (1 << 20):
            raise ValueError("image.png is larger than its size allows")
        if mask_info.file_size > w * h * 4 + 4096:
            raise ValueError("mask.npy is larger than its size allows")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(zf.read(image_info)), formats=("PNG",)) as img:
                if img.size != (w, h):
                    raise ValueError(f"image.png is {img.width}x{img.height}, not {w}x{h}")
                img.load()
                image = np.asarray(_to_rgb(img), np.uint8)
        mask = np.load(io.BytesIO(zf.read(mask_info)), allow_pickle=False)
    if mask.dtype != np.float32 or mask.shape != (h, w):
        raise ValueError(f"mask.npy holds {mask.dtype} {mask.shape}, not float32 {(h, w)}")
    if not np.isfinite(mask).all() or mask.min(initial=0) < 0 or mask.max(initial=0) > 1:
        raise ValueError("mask.npy holds values outside 0..1")
    return header, image, mask


def load_document(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> CanvasDocument:
    """Read a ``.studio-canvas`` file; a damaged one raises :class:`CanvasFileError`."""
    p = Path(path)
    try:
        header, image, mask = _read_parts(p, max_pixels)
    except FileNotFoundError:
        raise CanvasFileError(f"{p.name} does not exist") from None
    except Exception as err:  # noqa: BLE001 - a damaged zip, PNG or npy raises many kinds
        raise CanvasFileError(f"{p.name} cannot be opened, it may be damaged: {err}") from None
    metadata = header.get("metadata")
    return CanvasDocument(
        image,
        mask,
        name=str(header.get("name") or p.stem),
        source_path=header.get("source_path") or None,
        metadata=metadata if isinstance(metadata, dict) else {},
    )


# -- autosave and recovery ---------------------------------------------------------------------


def autosave_dir() -> Path:
    return studio_home() / "autosave"


@dataclass(frozen=True)
class CanvasSnapshot:
    """What an autosave writes, taken on the thread that owns the document; write anywhere."""

    image: np.ndarray  # read-only in the document, so shared, not copied
    mask: np.ndarray  # a copy
    header_json: str
    revision: int
    image_png: bytes | None = field(default=None, repr=False)  # already encoded, if unchanged


@dataclass(frozen=True)
class RecoveryInfo:
    """An autosave left behind by a session that did not exit cleanly."""

    path: Path
    doc_id: str
    name: str
    source_path: str | None = None
    saved_at: float | None = None
    size: tuple[int, int] | None = None  # (width, height)
    error: str | None = None  # set when the autosave is damaged

    @property
    def ok(self) -> bool:
        return self.error is None


class Autosaver:
    """Autosaves one document to ``autosave_dir()/<doc_id>.studio-canvas``.

    Call :meth:`maybe_save` from a timer: it writes when the document's revision changed and
    at least ``interval_s`` passed since the last write. To keep the GUI thread free, take
    :meth:`snapshot` there and :meth:`write` it on a worker. :meth:`discard` on a clean exit
    (or after a normal save) deletes the file. While the saver lives, it holds a lock file that
    tells :func:`pending_recoveries` in another process that this autosave is not orphaned; the
    OS drops the lock when the process dies. To keep saving a recovered document over its old
    autosave, pass ``doc_id=info.doc_id``.
    """

    def __init__(
        self,
        *,
        interval_s: float = 30.0,
        doc_id: str | None = None,
        folder: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.doc_id = doc_id or uuid.uuid4().hex
        self.folder = Path(folder) if folder is not None else autosave_dir()
        self._clock = clock
        self._last_time = clock()
        self._last_key: tuple[int, int] | None = None  # (id(doc), revision) last written
        self._png_cache: tuple[np.ndarray, bytes] | None = None
        self._lock: IO[bytes] | None = None

    @property
    def path(self) -> Path:
        return self.folder / f"{self.doc_id}{SUFFIX}"

    @property
    def lock_path(self) -> Path:
        return self.folder / f"{self.doc_id}.lock"

    def due(self, doc: CanvasDocument) -> bool:
        if (id(doc), doc.revision) == self._last_key:
            return False
        if self._last_key is None and doc.revision == 0:
            return False  # never edited: the source file is all there is to recover
        return self._clock() - self._last_time >= self.interval_s

    def snapshot(self, doc: CanvasDocument, *, force: bool = False) -> CanvasSnapshot | None:
        """A snapshot to write, or ``None`` if nothing is due (``force`` skips the checks)."""
        if not force and not self.due(doc):
            return None
        self._last_key, self._last_time = (id(doc), doc.revision), self._clock()
        cache = self._png_cache
        png = cache[1] if cache is not None and cache[0] is doc.image else None
        extra = {"autosave": True, "doc_id": self.doc_id, "revision": doc.revision}
        return CanvasSnapshot(doc.image, doc.mask.copy(), _header(doc, extra), doc.revision, png)

    def write(self, snap: CanvasSnapshot) -> Path:
        """Write a snapshot (fast PNG compression; the image is re-encoded only if it changed)."""
        png = snap.image_png
        if png is None:
            png = _encode_png(np.asarray(snap.image), compress_level=1)
            self._png_cache = (snap.image, png)
        self._hold_lock()
        _write_zip(self.path, snap.header_json, png, snap.mask)
        return self.path

    def maybe_save(self, doc: CanvasDocument, *, force: bool = False) -> bool:
        """Autosave now if due; returns whether a file was written."""
        snap = self.snapshot(doc, force=force)
        if snap is None:
            return False
        self.write(snap)
        return True

    def discard(self) -> None:
        """Delete this autosave (a clean exit, or the document was saved or closed)."""
        self.release()  # first: Windows cannot delete an open file
        for p in (self.path, self.lock_path):
            p.unlink(missing_ok=True)
        self._last_key = None

    def release(self) -> None:
        """Let go of the lock file (the file itself stays until :meth:`discard`)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _hold_lock(self) -> None:
        if self._lock is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.lock_path, "a+b")  # noqa: SIM115 - held open for the saver's lifetime
        if _try_lock(fh):
            self._lock = fh
        else:  # someone is looking at it this instant; we simply try again next time
            fh.close()


def _try_lock(fh: IO[bytes]) -> bool:
    """Take an exclusive, non-blocking lock on ``fh``; the OS releases it if we die."""
    try:
        if os.name == "nt":
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _owned_by_live_process(lock_path: Path) -> bool:
    if not lock_path.exists():
        return False
    try:
        with open(lock_path, "a+b") as fh:
            return not _try_lock(fh)  # closing the file releases our probe lock
    except OSError:
        return False


def pending_recoveries(
    folder: str | os.PathLike[str] | None = None, *, exclude: Iterable[str] = ()
) -> list[RecoveryInfo]:
    """Autosaves left by sessions that crashed, newest first. Damaged ones are listed with
    ``error`` set rather than raising; autosaves of a Studio still running are skipped."""
    base = Path(folder) if folder is not None else autosave_dir()
    skip = set(exclude)
    found: list[RecoveryInfo] = []
    if not base.is_dir():
        return found
    for path in sorted(base.glob(f"*{SUFFIX}")):
        doc_id = path.name[: -len(SUFFIX)]
        if path.name.startswith(".") or doc_id in skip:
            continue  # atomic writes' temp files start with a dot
        if _owned_by_live_process(base / f"{doc_id}.lock"):
            continue
        found.append(_describe(path, doc_id))
    found.sort(key=lambda info: info.saved_at or 0.0, reverse=True)
    return found


def _describe(path: Path, doc_id: str) -> RecoveryInfo:
    try:
        mtime: float | None = path.stat().st_mtime
    except OSError:
        mtime = None
    try:
        with zipfile.ZipFile(path) as zf:
            header = _read_header(zf, max_pixels=DEFAULT_MAX_PIXELS)
            missing = {_IMAGE, _MASK} - set(zf.namelist())
            if missing:
                raise ValueError(f"missing {', '.join(sorted(missing))}")
    except Exception as err:  # noqa: BLE001 - report the damage, never crash the start-up
        return RecoveryInfo(path, doc_id, doc_id, saved_at=mtime, error=f"damaged: {err}")
    saved = header.get("saved_at")
    return RecoveryInfo(
        path,
        doc_id,
        str(header.get("name") or doc_id),
        source_path=header.get("source_path") or None,
        saved_at=float(saved) if isinstance(saved, (int, float)) else mtime,
        size=(header["width"], header["height"]),
    )


def recover(info: RecoveryInfo) -> CanvasDocument:
    """The document an autosave holds (image and mask; not its undo history)."""
    return load_document(info.path)


def discard_recovery(info: RecoveryInfo) -> None:
    """Delete an autosave the user chose not to recover (or has recovered and saved)."""
    info.path.unlink(missing_ok=True)
    info.path.with_name(f"{info.doc_id}.lock").unlink(missing_ok=True)
