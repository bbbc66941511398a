"""The framing of wandb's ``.wandb`` transaction log, read without wandb's service.

wandb 0.31 writes each run as a LevelDB-log-style file: a 7-byte header
(``:W&B``, magic ``0xBEE1``, version 0), then 32 KiB blocks of chunks. A chunk
is ``crc32 (4, little-endian) | length (2) | type (1) | data``; the CRC is
zlib's CRC-32 over the type byte and the data. Type 1 holds a whole record,
types 2, 3 and 4 the first, middle and last piece of one that spans blocks, and
a block's tail shorter than a chunk header is zero padding. Each record is a
serialized ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")  # crc, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class RecordFileError(ValueError):
    """The file is not a ``.wandb`` transaction log."""


def iter_record_bytes(data: bytes) -> Iterator[bytes]:
    """Yield each record's bytes; stop at a torn or corrupt tail.

    A run that is still going, or was killed, may end in a half-written chunk:
    everything before it is still good, so the reader stops there quietly.
    """
    if not data.startswith(HEADER):
        raise RecordFileError("not a wandb transaction log (bad header)")
    pos, pieces = len(HEADER), []
    while pos + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            pos += left_in_block  # zero padding at a block's end
            continue
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        start, end = pos + CHUNK_HEADER.size, pos + CHUNK_HEADER.size + length
        if kind == 0 and length == 0:  # preallocated, never written
            return
        chunk = data[start:end]
        if end > len(data) or zlib.crc32(bytes([kind]) + chunk) != crc:
            return
        pos = end
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pieces = [chunk]
        elif kind == MIDDLE and pieces:
            pieces.append(chunk)
        elif kind == LAST and pieces:
            yield b"".join([*pieces, chunk])
            pieces = []


def read_records(path: str | Path) -> Iterator[object]:
    """Yield the ``Record`` protobufs stored in the ``.wandb`` file at ``path``."""
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in iter_record_bytes(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        yield record
