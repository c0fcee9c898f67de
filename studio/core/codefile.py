"""The compressed-image file (``.svq``) and the tiling of an image into model-sized squares.

Layout (little-endian):

======  =====================================================================
bytes   field
======  =====================================================================
4       magic ``\\x89SVQ`` (the high bit catches a text-mode transfer)
1       version (1)
16      the run's weights: the first 16 bytes of their SHA-256
8       the frequency table's id (:meth:`FrequencyTable.digest`)
4 + 4   the image's width and height in pixels
2       the tile side in pixels (the run's resolution)
2 + 2   codes per tile: rows, columns
2 + 2   tiles across, tiles down (``ceil(width / tile)``, ``ceil(height / tile)``)
4       codebook size
1       colour channels (1 or 3)
4       length of the coded bits in bytes
n       the coded bits: every tile's codes, tiles row by row, codes row by row
4       CRC-32 of everything above
======  =====================================================================

:func:`parse` checks all of it before anything is decoded, so a damaged, truncated or foreign
file is a :class:`CodeFileError` with a sentence saying which, never a crash or a wrong image.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from studio.core.errors import StudioError

MAGIC = b"\x89SVQ"
VERSION = 1
SUFFIX = ".svq"
_HEAD = struct.Struct("<4sB16s8sIIHHHHHIBI")
_CRC = struct.Struct("<I")
MAX_PIXELS = 64_000_000  # as the image loader's limit: a hostile header cannot ask for more


class CodeFileError(StudioError):
    """A compressed file that cannot be decoded, with the reason in words."""


@dataclass(frozen=True)
class CodeFile:
    """One compressed image: what it was made with, its size and tiling, and its coded bits."""

    weights: bytes  # 16 bytes
    table: bytes  # 8 bytes
    width: int
    height: int
    tile: int
    grid: tuple[int, int]  # codes per tile: rows, columns
    codebook_size: int
    channels: int
    payload: bytes

    @property
    def tiles(self) -> tuple[int, int]:
        """Tiles (down, across)."""
        return tiles_for(self.height, self.width, self.tile)

    @property
    def symbols(self) -> int:
        down, across = self.tiles
        return down * across * self.grid[0] * self.grid[1]

    def pack(self) -> bytes:
        down, across = self.tiles
        head = _HEAD.pack(
            MAGIC,
            VERSION,
            self.weights,
            self.table,
            self.width,
            self.height,
            self.tile,
            self.grid[0],
            self.grid[1],
            across,
            down,
            self.codebook_size,
            self.channels,
            len(self.payload),
        )
        body = head + self.payload
        return body + _CRC.pack(zlib.crc32(body))


def tiles_for(height: int, width: int, tile: int) -> tuple[int, int]:
    """How many ``tile`` squares cover an image: (down, across)."""
    return math.ceil(height / tile), math.ceil(width / tile)


def parse(data: bytes, name: str = "the file") -> CodeFile:
    """Read a compressed file's bytes, checking magic, version, length, checksum and that the
    header's numbers agree with each other."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise CodeFileError(f"{name} is not a Studio compressed image (no SVQ signature).")
    if len(data) < _HEAD.size + _CRC.size:
        raise CodeFileError(f"{name} is truncated: it ends inside its header.")
    fields = _HEAD.unpack_from(data)
    (_, version, weights, table, width, height, tile, rows, cols, across, down) = fields[:11]
    codebook, channels, length = fields[11:]
    if version != VERSION:
        raise CodeFileError(
            f"{name} is a version {version} compressed image; this Studio reads version "
            f"{VERSION}. Decompress it with the Studio that made it."
        )
    end = _HEAD.size + length
    if len(data) < end + _CRC.size:
        raise CodeFileError(
            f"{name} is truncated: {len(data)} bytes of the {end + _CRC.size} its header announces."
        )
    if len(data) > end + _CRC.size:
        raise CodeFileError(f"{name} has {len(data) - end - _CRC.size} bytes past its end.")
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(data[:end]) != crc:
        raise CodeFileError(f"{name} is damaged: its checksum does not match its contents.")
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise CodeFileError(f"{name} says the image is {width} x {height} pixels, refused.")
    if tile < 1 or rows < 1 or cols < 1 or codebook < 1 or channels not in (1, 3):
        raise CodeFileError(f"{name} has an impossible tiling or codebook in its header.")
    if (down, across) != tiles_for(height, width, tile):
        raise CodeFileError(f"{name}'s tile counts do not fit its image size.")
    return CodeFile(
        weights,
        table,
        width,
        height,
        tile,
        (rows, cols),
        codebook,
        channels,
        bytes(data[_HEAD.size : end]),
    )


# -- tiling ----------------------------------------------------------------------------------


def split_tiles(image: np.ndarray, tile: int) -> np.ndarray:
    """An H x W x C image -> N x tile x tile x C squares, row by row; the right and bottom
    edges are padded by repeating the last column and row (no seam of black)."""
    if image.ndim != 3 or tile < 1:
        raise ValueError(f"expected an H x W x C image and a positive tile, not {image.shape}")
    h, w, c = image.shape
    down, across = tiles_for(h, w, tile)
    padded = np.pad(image, ((0, down * tile - h), (0, across * tile - w), (0, 0)), mode="edge")
    blocks = padded.reshape(down, tile, across, tile, c).swapaxes(1, 2)
    return np.ascontiguousarray(blocks.reshape(down * across, tile, tile, c))


def join_tiles(tiles: np.ndarray, height: int, width: int) -> np.ndarray:
    """The inverse of :func:`split_tiles`: N x t x t x C squares -> the height x width image."""
    n, tile, _, c = tiles.shape
    down, across = tiles_for(height, width, tile)
    if n != down * across:
        raise ValueError(f"{n} tiles do not make a {width} x {height} image of {tile}px tiles")
    full = tiles.reshape(down, across, tile, tile, c).swapaxes(1, 2)
    return np.ascontiguousarray(full.reshape(down * tile, across * tile, c)[:height, :width])
