"""An arithmetic coder in exact integer arithmetic (no floats anywhere), for code streams.

The coder keeps a 32-bit interval ``[low, high]`` and narrows it to each symbol's share of
the current frequency table; the leading bits that ``low`` and ``high`` agree on are written
out, and the "straddling the middle" case is carried as pending bits (Witten, Neal and Cleary
1987; Moffat, Neal and Witten 1998). Frequency totals are at most ``MAX_TOTAL`` (2**16), so
every symbol of a table keeps a non-empty sub-interval whatever the interval's width, and a
stream decodes to exactly the symbols that were encoded.

The probabilities come from a :class:`SymbolModel`: one table per position, chosen from the
symbols before it. :class:`StaticModel` uses one table throughout (the measured code
frequencies); an autoregressive prior over codes can plug in later by answering ``table``
from the symbols decoded so far, with no change to the coder.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

BITS = 32
TOP = (1 << BITS) - 1
HALF = 1 << (BITS - 1)
QUARTER = 1 << (BITS - 2)
MAX_TOTAL = 1 << 16  # a table's total: < QUARTER, so no symbol's sub-interval is empty


class CodingError(ValueError):
    """A table or a stream the coder cannot use (bad frequencies, symbol out of range)."""


@dataclass(frozen=True)
class FrequencyTable:
    """Integer frequencies of symbols ``0 .. size-1``, each at least 1 (every symbol stays
    codable), summing to at most :data:`MAX_TOTAL`. ``cumulative[s]`` is the sum of the
    frequencies below ``s``; ``cumulative[size]`` the total."""

    cumulative: tuple[int, ...]

    def __post_init__(self) -> None:
        cum = self.cumulative
        if len(cum) < 2 or cum[0] != 0:
            raise CodingError("a frequency table needs at least one symbol and starts at 0")
        if any(b <= a for a, b in zip(cum, cum[1:])):
            raise CodingError("every symbol needs a frequency of at least 1")
        if cum[-1] > MAX_TOTAL:
            raise CodingError(f"the frequencies add up to {cum[-1]}, over {MAX_TOTAL}")

    @classmethod
    def from_frequencies(cls, freqs: Sequence[int]) -> FrequencyTable:
        cum = [0]
        for f in freqs:
            cum.append(cum[-1] + int(f))
        return cls(tuple(cum))

    @classmethod
    def from_counts(cls, counts: Sequence[float] | np.ndarray) -> FrequencyTable:
        """Quantise measured ``counts`` (any non-negative numbers) to a table: each symbol
        gets ``1 + floor(share of MAX_TOTAL - size)``, so unseen symbols stay codable and the
        total never passes :data:`MAX_TOTAL`. All zeros give the uniform table."""
        c = np.asarray(counts, dtype=np.float64)
        size = len(c)
        if c.ndim != 1 or size < 1 or size > MAX_TOTAL // 2:
            raise CodingError(f"a table needs 1 to {MAX_TOTAL // 2} symbols, not {c.shape}")
        if not np.isfinite(c).all() or (c < 0).any():
            raise CodingError("symbol counts must be finite and not negative")
        total = float(c.sum())
        spare = MAX_TOTAL - size
        scaled = np.zeros(size, np.int64) if total <= 0 else np.floor(c * (spare / total))
        freqs = 1 + np.minimum(scaled.astype(np.int64), spare)
        while freqs.sum() > MAX_TOTAL:  # float rounding at the edge: take from the largest
            freqs[int(np.argmax(freqs))] -= 1
        return cls.from_frequencies(freqs.tolist())

    @property
    def size(self) -> int:
        return len(self.cumulative) - 1

    @property
    def total(self) -> int:
        return self.cumulative[-1]

    def frequencies(self) -> list[int]:
        cum = self.cumulative
        return [b - a for a, b in zip(cum, cum[1:])]

    def digest(self) -> bytes:
        """8 bytes naming this table (SHA-256 of its frequencies as little-endian uint32)."""
        data = np.asarray(self.frequencies(), dtype="<u4").tobytes()
        return hashlib.sha256(b"studio-freq-v1" + data).digest()[:8]

    def bits(self, symbols: Sequence[int] | np.ndarray) -> float:
        """The ideal code length of ``symbols`` under this table, in bits."""
        f = np.asarray(self.frequencies(), dtype=np.float64)
        s = np.asarray(symbols, dtype=np.int64)
        return float(-np.log2(f[s] / self.total).sum()) if s.size else 0.0


class SymbolModel(Protocol):
    """Where the probabilities come from: the table for position ``position`` given the
    symbols before it (``previous``, the first ``position`` symbols: a list the coder keeps
    growing, to read, not to keep or change). The encoder and the decoder ask the same
    questions in the same order, so any deterministic answer works."""

    def table(self, position: int, previous: Sequence[int]) -> FrequencyTable: ...


@dataclass(frozen=True)
class StaticModel:
    """The same table at every position (the codes' measured frequencies)."""

    fixed: FrequencyTable

    def table(self, position: int, previous: Sequence[int]) -> FrequencyTable:
        return self.fixed


def encode(symbols: Sequence[int] | np.ndarray, model: SymbolModel) -> bytes:
    """Arithmetic-code ``symbols`` with the model's tables; returns the packed bits."""
    seq = [int(s) for s in np.asarray(symbols, dtype=np.int64).ravel()]
    out: list[int] = []
    low, high, pending = 0, TOP, 0
    static = model.fixed if isinstance(model, StaticModel) else None
    previous: list[int] = []
    for i, s in enumerate(seq):
        table = static if static is not None else model.table(i, previous)
        previous.append(s)
        cum = table.cumulative
        if not 0 <= s < len(cum) - 1:
            raise CodingError(f"symbol {s} at position {i} is outside 0..{len(cum) - 2}")
        span = high - low + 1
        total = cum[-1]
        high = low + span * cum[s + 1] // total - 1
        low = low + span * cum[s] // total
        while True:
            if high < HALF:
                out.append(0)
                out.extend([1] * pending)
                pending = 0
            elif low >= HALF:
                out.append(1)
                out.extend([0] * pending)
                pending = 0
                low -= HALF
                high -= HALF
            elif low >= QUARTER and high < HALF + QUARTER:
                pending += 1
                low -= QUARTER
                high -= QUARTER
            else:
                break
            low = 2 * low
            high = 2 * high + 1
    # Two more bits pick a point inside the final interval; the decoder reads zeros after.
    pending += 1
    if low < QUARTER:
        out.append(0)
        out.extend([1] * pending)
    else:
        out.append(1)
        out.extend([0] * pending)
    return np.packbits(np.asarray(out, dtype=np.uint8)).tobytes()


def decode(data: bytes, count: int, model: SymbolModel) -> list[int]:
    """The ``count`` symbols :func:`encode` wrote into ``data`` with the same model.

    Damaged bits decode to other symbols, not to an error: callers check a checksum first.
    """
    if count < 0:
        raise CodingError("a negative symbol count")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()
    bits.extend([0] * BITS)  # the stream ends in implicit zeros
    n_bits = len(bits)
    pos = BITS
    value = 0
    for b in bits[:BITS]:
        value = 2 * value + b
    low, high = 0, TOP
    out: list[int] = []
    static = model.fixed if isinstance(model, StaticModel) else None
    for i in range(count):
        table = static if static is not None else model.table(i, out)
        cum = table.cumulative
        span = high - low + 1
        total = cum[-1]
        scaled = ((value - low + 1) * total - 1) // span
        s = bisect.bisect_right(cum, scaled) - 1
        if not 0 <= s < len(cum) - 1:
            raise CodingError(f"the stream does not decode at position {i}")
        out.append(s)
        high = low + span * cum[s + 1] // total - 1
        low = low + span * cum[s] // total
        while True:
            if high < HALF:
                pass
            elif low >= HALF:
                low -= HALF
                high -= HALF
                value -= HALF
            elif low >= QUARTER and high < HALF + QUARTER:
                low -= QUARTER
                high -= QUARTER
                value -= QUARTER
            else:
                break
            low = 2 * low
            high = 2 * high + 1
            value = 2 * value + (bits[pos] if pos < n_bits else 0)
            pos += 1
    return out
