"""The arithmetic coder round-trips any symbol stream exactly, close to its ideal length; the
tiles of an image of any size reassemble it; the file header refuses damage."""

from __future__ import annotations

import numpy as np
import pytest

from studio.core import codefile
from studio.core.codefile import CodeFile, CodeFileError, join_tiles, parse, split_tiles
from studio.core.rangecoder import (
    MAX_TOTAL,
    CodingError,
    FrequencyTable,
    StaticModel,
    decode,
    encode,
)


def roundtrip(symbols, model):
    data = encode(symbols, model)
    assert decode(data, len(symbols), model) == [int(s) for s in symbols]
    return data


@pytest.mark.parametrize("size", [1, 2, 3, 16, 256, 8192])
def test_random_streams_round_trip_near_their_ideal_length(size):
    rng = np.random.default_rng(size)
    table = FrequencyTable.from_counts(rng.pareto(1.0, size) * 100)  # skewed
    p = np.asarray(table.frequencies()) / table.total
    symbols = rng.choice(size, size=3000, p=p)
    data = roundtrip(symbols, StaticModel(table))
    ideal = table.bits(symbols)
    assert len(data) * 8 <= ideal + 16  # within two bytes of the entropy bound


def test_extreme_tables_round_trip():
    # One symbol takes almost everything; the rare ones still code exactly.
    table = FrequencyTable.from_frequencies([MAX_TOTAL - 3, 1, 1, 1])
    rng = np.random.default_rng(0)
    symbols = np.where(rng.random(5000) < 0.01, rng.integers(1, 4, 5000), 0)
    data = roundtrip(symbols, StaticModel(table))
    assert len(data) < 200
    # Only the rarest symbol, all the time: long but exact.
    roundtrip([3] * 300, StaticModel(table))
    # A single-symbol alphabet costs (almost) nothing.
    single = FrequencyTable.from_counts([7])
    assert len(roundtrip([0] * 10_000, StaticModel(single))) <= 1
    # Nothing at all.
    assert decode(encode([], StaticModel(table)), 0, StaticModel(table)) == []


def test_a_per_position_model_plugs_in():
    """An autoregressive model: each table depends on the symbol before (a Markov chain)."""
    tables = [FrequencyTable.from_counts([(i == j) * 50 + 1 for j in range(5)]) for i in range(5)]
    asked = []

    class Markov:
        def table(self, position, previous):
            asked.append((position, len(previous)))
            return tables[previous[-1]] if previous else tables[0]

    rng = np.random.default_rng(1)
    symbols = [0]
    for _ in range(999):
        symbols.append(symbols[-1] if rng.random() < 0.9 else int(rng.integers(5)))
    data = roundtrip(symbols, Markov())
    assert all(pos == n for pos, n in asked)  # previous holds exactly the symbols before
    static = encode(symbols, StaticModel(FrequencyTable.from_counts(np.bincount(symbols))))
    assert len(data) < len(static)  # the context pays


def test_tables_from_counts_keep_every_symbol_codable():
    for counts in ([0, 0, 0], [1e12, 0, 1], list(range(1000)), [3] * 32768):
        table = FrequencyTable.from_counts(counts)
        assert min(table.frequencies()) >= 1 and table.total <= MAX_TOTAL
    assert (
        FrequencyTable.from_counts([1, 2]).digest() != FrequencyTable.from_counts([2, 1]).digest()
    )
    for bad in ([], [-1, 2], [float("nan")], [1] * 40000):
        with pytest.raises(CodingError):
            FrequencyTable.from_counts(bad)
    with pytest.raises(CodingError):
        FrequencyTable.from_frequencies([1, 0, 1])
    with pytest.raises(CodingError):
        encode([0, 4], StaticModel(FrequencyTable.from_counts([1, 1, 1])))


@pytest.mark.parametrize("shape", [(1, 1, 3), (16, 16, 3), (17, 33, 3), (5, 40, 1)])
def test_tiles_reassemble_any_size(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    tiles = split_tiles(image, 16)
    down, across = codefile.tiles_for(shape[0], shape[1], 16)
    assert tiles.shape == (down * across, 16, 16, shape[2])
    assert np.array_equal(join_tiles(tiles, shape[0], shape[1]), image)
    # The padding repeats the last row and column.
    last = tiles[-1]
    h_in, w_in = shape[0] - (down - 1) * 16, shape[1] - (across - 1) * 16
    assert (last[h_in:, :w_in] == last[h_in - 1 : h_in, :w_in]).all()
    assert (last[:, w_in:] == last[:, w_in - 1 : w_in]).all()


def _file(**kw):
    fields = dict(
        weights=b"w" * 16, table=b"t" * 8, width=37, height=23, tile=16, grid=(8, 8),
        codebook_size=16, channels=3, payload=bytes(range(40)),
    )  # fmt: skip
    fields.update(kw)
    return CodeFile(**fields)


def test_the_header_round_trips_and_refuses_damage():
    data = _file().pack()
    assert parse(data) == _file()
    assert _file().tiles == (2, 3) and _file().symbols == 6 * 64
    cases = {
        "not a Studio compressed": b"PK\x03\x04" + data[4:],
        "truncated": data[:-5],
        "ends inside its header": data[:10],
        "past its end": data + b"\0",
    }
    for i in range(len(data)):  # every single flipped byte is caught
        broken = bytearray(data)
        broken[i] ^= 0x40
        with pytest.raises(CodeFileError):
            parse(bytes(broken))
    for words, broken in cases.items():
        with pytest.raises(CodeFileError, match=words):
            parse(broken)
    with pytest.raises(CodeFileError, match="not a Studio"):
        parse(b"")


def test_a_well_formed_but_hostile_header_is_refused():
    """The checksum is right, the numbers are not: refused before anything is allocated."""
    with pytest.raises(CodeFileError, match="refused"):
        parse(_file(width=60000, height=60000).pack())
    with pytest.raises(CodeFileError, match="impossible"):
        parse(_file(channels=2).pack())
    future = bytearray(_file().pack())
    future[4] = 9
    import zlib

    future[-4:] = zlib.crc32(bytes(future[:-4])).to_bytes(4, "little")
    with pytest.raises(CodeFileError, match="version 9"):
        parse(bytes(future))
