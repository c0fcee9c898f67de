"""Opening one image safely: allow-listed formats, the decompression-bomb guard, EXIF
orientation, every Pillow mode converted to RGB, and a square crop at the training size.

:func:`open_image` raises only :class:`ImageRejected`, whose ``reason`` is one of
:data:`REASONS`; the folder scanner in :mod:`studio.engine.data` lists skipped files by it.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from studio.core.safefiles import NotRegularFile, kind_of, open_regular

#: Pillow formats we agree to decode. Anything else (PSD, EPS, ICNS, ...) is refused, which
#: keeps rarely-used and less-hardened decoders away from files the user merely dropped in.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
#: File name suffixes (lower case) treated as images when scanning a folder.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"}
)
CAPTION_EXTENSION = ".txt"
DEFAULT_MAX_PIXELS = 64_000_000
WHITE: tuple[int, int, int] = (255, 255, 255)

NOT_REGULAR = "not a regular file"
OUTSIDE = "outside the folder"
#: The exact reasons an image can be rejected with; the UI groups skipped files by them.
REASONS: tuple[str, ...] = (
    "unreadable",
    "truncated",
    "zero bytes",
    "not an image",
    "over the pixel limit",
    NOT_REGULAR,
    OUTSIDE,
)


class ImageRejected(Exception):
    """An image that cannot be used. ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


# -- decoding one image -----------------------------------------------------------------------


def open_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Open, fully decode and return the image at ``path`` as an upright RGB image.

    Transparency is composited onto ``background``; animated images give their first frame.
    Raises :class:`ImageRejected` (and nothing else) when the file cannot be used.
    """
    return _decode(Path(path), max_pixels, background)[0]


def _decode(
    path: Path, max_pixels: int, background: tuple[int, int, int]
) -> tuple[Image.Image, str, str]:
    """Return ``(rgb image, source mode, source format)`` or raise :class:`ImageRejected`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageRejected("unreadable", "the file no longer exists") from None
    except OSError as err:
        raise ImageRejected("unreadable", f"cannot read the file: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageRejected(NOT_REGULAR, kind_of(st.st_mode))
    if st.st_size == 0:
        raise ImageRejected("zero bytes", "the file is empty")
    try:
        # We open the file ourselves so it is closed on every path, including the errors
        # Pillow raises after it has opened the file; never a FIFO or a device.
        with open_regular(path) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt-EXIF chatter and the like
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh, formats=IMAGE_FORMATS) as img:
                _check_pixels(img.size, max_pixels, img.mode)
                mode, fmt = img.mode, img.format or "?"
                img.load()  # decode now, so a truncated file fails here and not in training
                upright = ImageOps.exif_transpose(img)
                return to_rgb(upright, background), mode, fmt
    except ImageRejected:
        raise
    except NotRegularFile as err:
        raise ImageRejected(NOT_REGULAR, err.what) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageRejected("over the pixel limit", str(err)) from None
    except UnidentifiedImageError:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            detail = f"damaged, or not one of {', '.join(IMAGE_FORMATS)}"
            raise ImageRejected("unreadable", detail) from None
        raise ImageRejected("not an image", "not a recognised image format") from None
    except EOFError:
        raise ImageRejected("truncated", "the file ends early") from None
    except OSError as err:
        if "truncat" in str(err).lower():
            raise ImageRejected("truncated", "the file ends early") from None
        raise ImageRejected("unreadable", str(err) or type(err).__name__) from None
    except MemoryError:
        raise ImageRejected("unreadable", "not enough memory to decode it") from None
    except Exception as err:  # noqa: BLE001 - damaged files make decoders raise anything
        raise ImageRejected("unreadable", f"{type(err).__name__}: {err}") from None


def bytes_per_pixel(mode: str) -> int:
    """How many bytes one pixel of a Pillow ``mode`` takes once decoded."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16") or mode in ("LA", "La", "PA"):
        return 2
    if mode in ("RGB", "YCbCr", "LAB", "HSV"):
        return 3
    return 4  # RGBA, RGBa, RGBX, CMYK, 32-bit integer I, float F, and anything unknown


def check_size(img: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise :class:`ImageRejected` ("over the pixel limit") before ``img`` is decoded when it
    has more than ``max_pixels`` pixels (or Pillow's own limit), or would decode to more bytes
    than an RGB image of ``max_pixels`` pixels: a float or 32-bit image the same size takes
    more memory, and converting it more again."""
    _check_pixels(img.size, max_pixels, img.mode)


def _check_pixels(size: tuple[int, int], max_pixels: int, mode: str = "RGB") -> None:
    width, height = size
    pixels = width * height
    if width <= 0 or height <= 0:
        raise ImageRejected("unreadable", f"invalid size {width}x{height}")
    # Pillow's own guard also lives in a warning filter, which is process-wide state; checking
    # its limit here as well keeps the guard when another thread changed the filters.
    bomb_limit = Image.MAX_IMAGE_PIXELS
    limit = min(max_pixels, bomb_limit) if bomb_limit else max_pixels
    if pixels > limit:
        raise ImageRejected(
            "over the pixel limit", f"{width}x{height} is more than {limit:,} pixels"
        )
    decoded, byte_limit = pixels * bytes_per_pixel(mode), 3 * limit
    if decoded > byte_limit:
        raise ImageRejected(
            "over the pixel limit",
            f"{width}x{height} in mode {mode} decodes to {decoded / 1e6:,.1f} MB, more than "
            f"the {byte_limit / 1e6:,.1f} MB an RGB image at the pixel limit takes",
        )


@contextmanager
def open_checked(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: tuple[str, ...] = IMAGE_FORMATS,
) -> Iterator[Image.Image]:
    """Open ``path`` lazily (nothing decoded yet) for a caller that decodes it itself: only a
    regular file, only ``formats``, with Pillow's decompression-bomb warning an error and the
    size checked by :func:`check_size`. Raises :class:`ImageRejected` for all of that and
    lets the caller's own decoding errors through."""
    try:
        fh = open_regular(path)
    except NotRegularFile as err:
        raise ImageRejected(NOT_REGULAR, err.what) from None
    except OSError as err:
        raise ImageRejected("unreadable", f"cannot read the file: {err.strerror or err}") from None
    with fh, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fh, formats=formats)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageRejected("over the pixel limit", str(err)) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise ImageRejected("unreadable", str(err) or type(err).__name__) from None
        with img:
            check_size(img, max_pixels)
            yield img


def to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Convert ``img`` of any Pillow mode to RGB, compositing transparency onto ``background``.

    High bit depths are scaled down, never clipped: 16-bit ``I;16*`` keeps its top byte, 32-bit
    ``I`` and float ``F`` are mapped by their actual value range.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = Image.fromarray(_deep_to_uint8(img))
        return gray.convert("RGB")
    if mode == "LAB":
        return _lab_to_rgb(img)
    if mode == "La":  # premultiplied; Pillow only converts it to LA
        img, mode = img.convert("LA"), "LA"
    if mode in ("RGBA", "RGBa", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    # L, P, CMYK, YCbCr, HSV, RGBX: Pillow's own conversions are right for these.
    return img.convert("RGB")


_CHUNK_PIXELS = 1 << 16  # deep images convert this many pixels at a time


def _deep_to_uint8(img: Image.Image) -> np.ndarray:
    """Map a 16-bit, 32-bit or float gray image to uint8 without clipping the highlights.

    Works through the image a band of rows at a time, so the conversion needs little memory
    beyond the decoded image and the uint8 result (whole-image float64 copies would need
    twice the decoded size each).
    """
    width, height = img.size
    out = np.empty((height, width), np.uint8)
    if out.size == 0:
        return out
    rows = max(1, _CHUNK_PIXELS // width)
    chunks = [slice(i, min(i + rows, height)) for i in range(0, height, rows)]

    def band(part: slice) -> np.ndarray:
        return np.asarray(img.crop((0, part.start, width, part.stop)))

    is_float = img.mode == "F"
    if img.mode.startswith("I;16"):
        for part in chunks:
            out[part] = band(part).astype(np.uint16) >> 8
        return out

    def values(part: slice) -> np.ndarray:
        v = band(part).astype(np.float64)  # int32 values are exact in float64
        return np.nan_to_num(v, copy=False, nan=0.0, posinf=0.0, neginf=0.0) if is_float else v

    lo, hi = np.inf, -np.inf
    for part in chunks:
        v = values(part)
        lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if is_float and lo >= 0.0 and hi <= 1.0:  # the usual float convention
        scale, offset = 255.0, 0.0
    elif lo >= 0.0 and hi <= 255.0:
        scale, offset = 1.0, 0.0
    elif not is_float and lo >= 0.0 and hi <= 65535.0:
        scale, offset = -1.0, 0.0  # 16-bit data in a 32-bit container: the top byte
    elif hi <= lo:
        out[...] = 0
        return out
    else:
        scale, offset = 255.0 / (hi - lo), lo
    for part in chunks:
        v = values(part)
        if scale < 0:
            out[part] = v.astype(np.int64) >> 8
        else:
            if offset:
                v -= offset
            v *= scale
            out[part] = np.rint(v, out=v)
    return out


_LAB_TRANSFORM: object | None = None


def _lab_to_rgb(img: Image.Image) -> Image.Image:
    """CIELAB to sRGB through littlecms; Pillow's plain convert() only where it is missing."""
    global _LAB_TRANSFORM
    try:
        from PIL import ImageCms

        if _LAB_TRANSFORM is None:
            _LAB_TRANSFORM = ImageCms.buildTransform(
                ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
            )
        out = ImageCms.applyTransform(img, _LAB_TRANSFORM)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - no littlecms, or it refused this image
        out = None
    return out if out is not None else img.convert("RGB")


def fit_square(img: Image.Image, resolution: int) -> np.ndarray:
    """Scale the shorter side of ``img`` to ``resolution`` and crop the centre square.

    Returns a ``resolution x resolution x 3`` uint8 array. ``img`` should be RGB (as
    :func:`open_image` returns); other modes go through :func:`to_rgb` first.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, not {resolution}")
    if img.mode != "RGB":
        img = to_rgb(img)
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    # Resizing only the centre box is the same as resize-then-crop, without scaling the
    # pixels that would be cropped away.
    out = img.resize(
        (resolution, resolution),
        Image.Resampling.LANCZOS,
        box=(left, top, left + side, top + side),
        reducing_gap=3.0 if side > 3 * resolution else None,
    )
    return np.asarray(out, dtype=np.uint8).copy()


# -- scanning a folder ------------------------------------------------------------------------
