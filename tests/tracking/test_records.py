"""The .wandb framing reader on hand-built files: whole records, records split
across 32 KiB blocks, block padding, and a torn tail."""

from __future__ import annotations

import struct
import zlib

import pytest

from fedlight.tracking.records import (
    BLOCK_SIZE,
    FIRST,
    FULL,
    HEADER,
    LAST,
    MIDDLE,
    RecordFileError,
    iter_record_bytes,
)


def chunk(kind: int, data: bytes) -> bytes:
    crc = zlib.crc32(bytes([kind]) + data)
    return struct.pack("<IHB", crc, len(data), kind) + data


def write_log(records: list[bytes]) -> bytes:
    """A writer for the format, as the reader's docstring states it."""
    out = bytearray(HEADER)
    for record in records:
        rest, first = record, True
        while True:
            left = BLOCK_SIZE - len(out) % BLOCK_SIZE
            if left < 7:
                out += b"\0" * left
                left = BLOCK_SIZE
            piece, rest = rest[: left - 7], rest[left - 7 :]
            if first and not rest:
                kind = FULL
            elif first:
                kind = FIRST
            elif rest:
                kind = MIDDLE
            else:
                kind = LAST
            out += chunk(kind, piece)
            first = False
            if not rest:
                break
    return bytes(out)


def test_whole_records_come_back_in_order():
    records = [b"a", b"bb" * 10, b""]
    assert list(iter_record_bytes(write_log(records))) == records


def test_a_record_spanning_three_blocks_is_joined():
    big = bytes(range(256)) * 300  # 76,800 bytes: first, middle, last
    records = [b"x" * 100, big, b"after"]
    data = write_log(records)
    assert len(data) > 2 * BLOCK_SIZE
    assert list(iter_record_bytes(data)) == records


def test_block_tail_padding_is_skipped():
    # fill the first block up to 3 bytes before its end: those are padding
    first = b"p" * (BLOCK_SIZE - len(HEADER) - 7 - 3)
    data = write_log([first, b"next"])
    assert data[BLOCK_SIZE - 3 : BLOCK_SIZE] == b"\0\0\0"
    assert list(iter_record_bytes(data)) == [first, b"next"]


def test_a_torn_or_corrupt_tail_ends_the_records_read_so_far():
    data = write_log([b"one", b"two", b"three"])
    assert list(iter_record_bytes(data[:-2])) == [b"one", b"two"]
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    assert list(iter_record_bytes(bytes(flipped))) == [b"one", b"two"]


def test_a_file_without_the_header_is_refused():
    with pytest.raises(RecordFileError):
        list(iter_record_bytes(b"not a wandb file"))
