"""A small TensorBoard event-file writer: scalars only, no tensorboard or protobuf import.

Importing ``torch.utils.tensorboard`` costs ~180 ms, most of it holding the GIL, which froze the
GUI thread at the start of every run. An event file is simple enough to write by hand:

- a sequence of TFRecords: ``uint64 length | uint32 masked crc32c(length) | data | uint32 masked
  crc32c(data)``, all little-endian;
- each record's data is a serialized ``tensorboard.Event`` protobuf. The field numbers below
  come from tensorboard's ``event.proto`` / ``summary.proto`` (checked against the descriptors of
  tensorboard 2.21): Event{1 wall_time double, 2 step int64, and one of 3 file_version
  string, 5 summary, 7 session_log}; Summary{1 repeated value}; Summary.Value{1 tag string, 2 simple_value float};
  SessionLog{1 status enum, START = 1}.

The reader is tensorboard itself (tests read files back with its ``EventAccumulator``).
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

FILE_VERSION = "brain.Event:2"
PREFIX = "events.out.tfevents."
SESSION_START = 1  # SessionLog.SessionStatus.START
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_U32 = 0xFFFF_FFFF
_uid = itertools.count()  # the last part of a file name: unique within this process


# --- CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, table-driven ---------------------------


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _table()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (``crc32c(b"123456789") == 0xE3069283``)."""
    crc = _U32
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
    """The CRC as TFRecord stores it: rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & _U32


def record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


# --- protobuf encoding, just the wire types these messages use -------------------------------------


def _varint(value: int) -> bytes:
    value &= _U64  # negative int64 values are ten-byte two's complement varints
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _float32(value: float) -> bytes:
    try:
        return struct.pack("<f", value)
    except OverflowError:  # beyond float32's range: what protobuf's float field would hold
        return struct.pack("<f", math.copysign(math.inf, value))


def scalar_value(tag: str, value: float) -> bytes:
    """A ``Summary.Value`` with ``tag`` and ``simple_value``."""
    return _bytes_field(1, tag.encode("utf-8")) + _key(2, 5) + _float32(float(value))


def event(
    wall_time: float,
    step: int = 0,
    *,
    file_version: str | None = None,
    values: Iterable[bytes] = (),
    session_status: int | None = None,
) -> bytes:
    """A serialized ``Event``; ``values`` are :func:`scalar_value` encodings for its summary.

    ``file_version``, ``values`` and ``session_status`` are one ``oneof`` in ``event.proto``: an
    event carries at most one of them (a reader keeps only the last).
    """
    values = list(values)
    if (file_version is not None) + bool(values) + (session_status is not None) > 1:
        raise ValueError("an event holds one of file_version, values or session_status")
    out = _key(1, 1) + struct.pack("<d", float(wall_time))
    if step:
        out += _key(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode("utf-8"))
    if values:
        out += _bytes_field(5, b"".join(_bytes_field(1, value) for value in values))
    if session_status is not None:
        out += _bytes_field(7, _key(1, 0) + _varint(session_status))
    return out


# --- the file -------------------------------------------------------------------------------------


class EventFileWriter:
    """One ``events.out.tfevents.*`` file in ``folder``, appended to in whole batches.

    The file opens with the ``file_version`` event; ``purge_step`` (a resumed run) adds a
    ``SessionLog.START`` event at that step, which makes TensorBoard drop the events the earlier
    files logged at or after it, as ``SummaryWriter(purge_step=...)`` does.
    """

    def __init__(self, folder: str | os.PathLike[str], purge_step: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / self._file_name()
        self._file: BinaryIO | None = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        now = time.time()
        head = [event(now, file_version=FILE_VERSION)]
        if purge_step is not None:
            head.append(event(now, purge_step, session_status=SESSION_START))
        try:
            self.write(head)
        except BaseException:
            self.close()
            raise

    def _file_name(self) -> str:
        # TensorBoard reads a folder's files in name order and never goes back to an earlier
        # one, so the new file must sort after every file already there (a resume started
        # within the same second as the previous writer, or from another process).
        stamp = int(time.time())
        for old in self.folder.glob(PREFIX + "*"):
            part = old.name[len(PREFIX) :].split(".", 1)[0]
            if part.isdigit():
                stamp = max(stamp, int(part) + 1)
        return f"{PREFIX}{stamp:010d}.{socket.gethostname()}.{os.getpid()}.{next(_uid)}"

    def write(self, events: Iterable[bytes]) -> None:
        """Append ``events`` (serialized) as one write, then flush to the OS."""
        if self._file is None:
            raise ValueError(f"the event file {self.path} is closed")
        data = b"".join(record(e) for e in events)
        if data:
            self._file.write(data)
            self._file.flush()

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
