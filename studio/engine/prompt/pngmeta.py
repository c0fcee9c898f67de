"""Generation settings inside PNG files.

Every generated PNG carries its settings twice: the full metadata as JSON in an iTXt chunk
keyed ``studio`` (what :func:`read_png_metadata` reads back), and a human summary in a text
chunk keyed ``parameters``, written as AUTOMATIC1111 writes it
(:mod:`studio.engine.prompt.infotext`)::

    a red fox in the snow
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 7, Size: 512x512, Model: sd15

Reading is safe on any file: the chunks are walked one by one and only the text chunks are
read (never the pixels, never a FIFO), bounded in size and nesting, and never executed; a PNG
written by another tool that has only ``parameters`` is parsed from that text as far as it
goes, and what cannot be restored is listed.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin

from studio.core.atomic import atomic_path
from studio.core.errors import StudioError
from studio.core.safefiles import open_regular, printable
from studio.engine.prompt.infotext import format_infotext, parse_infotext

KEY = "studio"
HUMAN_KEY = "parameters"
MAX_TEXT = 1 << 20  # a settings chunk bigger than 1 MiB is not ours

#: Deepest nesting of lists and objects the settings JSON may have.
MAX_DEPTH = 16
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_MAX_CHUNKS = 200_000  # a PNG with more chunks than this is not read further
_KEYWORD_MAX = 80  # the PNG standard's limit, plus the separator


class PngMetadataError(StudioError):
    """The PNG's settings text is there but cannot be used (too large, too deeply nested)."""


def human_summary(meta: dict[str, Any]) -> str:
    """The ``parameters`` text for ``meta``, as AUTOMATIC1111 writes it (see
    :mod:`studio.engine.prompt.infotext`)."""
    return format_infotext(meta)


def png_bytes(image: np.ndarray, meta: dict[str, Any] | None, compress_level: int = 4) -> bytes:
    """``image`` (H x W x 3 uint8) encoded as PNG with ``meta`` in its text chunks."""
    info = PngImagePlugin.PngInfo()
    if meta is not None:
        info.add_itxt(KEY, json.dumps(meta, sort_keys=True, default=_jsonable), zip=True)
        info.add_text(HUMAN_KEY, human_summary(meta))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        buf, format="PNG", pnginfo=info, compress_level=compress_level
    )
    return buf.getvalue()


def write_png(path: str | os.PathLike[str], image: np.ndarray, meta: dict[str, Any] | None) -> Path:
    """Write ``image`` with ``meta`` to ``path`` atomically (a crash never leaves half a PNG)."""
    data = png_bytes(image, meta)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_png_text(
    source: str | os.PathLike[str] | bytes, keys: tuple[str, ...] = (KEY, HUMAN_KEY)
) -> dict[str, str]:
    """The PNG's text chunks (tEXt, zTXt, iTXt) named in ``keys``, or {} for anything that
    is not a PNG.

    Reads the chunks one by one and skips the image data unread, so a huge image costs no
    memory. A chunk of one of ``keys`` that holds more than :data:`MAX_TEXT` characters
    raises :class:`PngMetadataError`; only a regular file is opened (never a FIFO).
    """
    name = "the PNG" if isinstance(source, (bytes, bytearray)) else printable(Path(source).name)
    try:
        stream: Any = (
            io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open_regular(source)
        )
    except OSError:
        return {}
    with stream:
        try:
            return _text_chunks(stream, set(keys), name)
        except (OSError, ValueError, struct.error, zlib.error):
            return {}


def _text_chunks(stream: BinaryIO, keys: set[str], name: str) -> dict[str, str]:
    if stream.read(8) != _SIGNATURE:
        return {}
    found: dict[str, str] = {}
    for _ in range(_MAX_CHUNKS):
        head = stream.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND" or length > 0x7FFFFFFF:
            break
        if kind not in _TEXT_CHUNKS:
            stream.seek(length + 4, io.SEEK_CUR)  # the data and the CRC, never read
            continue
        keyword = stream.read(min(length, _KEYWORD_MAX)).split(b"\0", 1)[0].decode("latin-1")
        if keyword not in keys:
            stream.seek(length - min(length, _KEYWORD_MAX) + 4, io.SEEK_CUR)
            continue
        if length > MAX_TEXT + _KEYWORD_MAX + 1024:  # compressed text is never larger
            raise PngMetadataError(_too_large(name, keyword))
        stream.seek(-min(length, _KEYWORD_MAX), io.SEEK_CUR)
        data = stream.read(length)
        crc = stream.read(4)
        if len(data) < length or len(crc) < 4:
            break
        if zlib.crc32(kind + data) & 0xFFFFFFFF != struct.unpack(">I", crc)[0]:
            continue  # a damaged chunk: as if it were not there
        try:
            text = _chunk_text(kind, data)
        except _TooLarge:
            raise PngMetadataError(_too_large(name, keyword)) from None
        if text is not None:
            found.setdefault(keyword, text)
    return found


def _too_large(name: str, keyword: str) -> str:
    return (
        f"The '{keyword}' settings in {name} are larger than {MAX_TEXT // 2**20} MiB, far more "
        "than generation settings take; they were not read."
    )


def _chunk_text(kind: bytes, data: bytes) -> str | None:
    """The text of a tEXt, zTXt or iTXt chunk (keyword included in ``data``), or None."""
    _, _, rest = data.partition(b"\0")
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        return _inflate(rest[1:], "latin-1") if rest[:1] == b"\0" else None
    # iTXt: compression flag, method, language tag \0, translated keyword \0, text
    if len(rest) < 2:
        return None
    flag, method, rest = rest[0], rest[1], rest[2:]
    parts = rest.split(b"\0", 2)
    if len(parts) < 3:
        return None
    body = parts[2]
    if flag == 0:
        return body.decode("utf-8", errors="replace")
    return _inflate(body, "utf-8") if method == 0 else None


class _TooLarge(Exception):
    """A text chunk that inflates to more than :data:`MAX_TEXT` bytes."""


def _inflate(data: bytes, encoding: str) -> str:
    """Decompress at most :data:`MAX_TEXT` bytes (a zlib bomb stops there: :class:`_TooLarge`)."""
    inflater = zlib.decompressobj()
    raw = inflater.decompress(data, MAX_TEXT + 1)
    if len(raw) > MAX_TEXT or inflater.unconsumed_tail:
        raise _TooLarge
    return raw.decode(encoding, errors="replace")


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            stack.extend((child, depth + 1) for child in item)
    return deepest


def read_png_metadata(source: str | os.PathLike[str] | bytes) -> dict[str, Any] | None:
    """The settings a PNG was generated with, or None when it carries none.

    Studio's own JSON comes back exactly as written; a PNG from another tool with only a
    ``parameters`` text (AUTOMATIC1111's infotext) gives what that text holds with
    ``"source": "parameters"`` and, for what cannot be restored here, ``"unrestored"``.
    Settings too large or too deeply nested raise :class:`PngMetadataError`; the pixels are
    never decoded.
    """
    text = read_png_text(source)
    raw = text.get(KEY)
    if raw is not None:
        try:
            meta = json.loads(raw)
        except RecursionError:
            meta = None
            nested = True
        except ValueError:
            meta, nested = None, False
        else:
            nested = _depth(meta) > MAX_DEPTH
        if nested:
            name = "the PNG" if isinstance(source, (bytes, bytearray)) else Path(source).name
            raise PngMetadataError(
                f"The settings in {printable(name)} are nested more than {MAX_DEPTH} levels "
                "deep, which generation settings never are; they were not read."
            )
        if isinstance(meta, dict):
            return meta
    if HUMAN_KEY in text:
        return parse_infotext(text[HUMAN_KEY])
    return None


#: The older names of the infotext functions.
parse_parameters = parse_infotext
