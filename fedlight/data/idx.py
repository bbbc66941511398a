"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

Reading IDX directly is simpler and stricter than torchvision's readers, which want
their own folder layout and verify checksums that Debian's copies do not match.
Format: a big-endian header ``00 00 <dtype> <ndim>`` then one uint32 per dimension,
then the payload in C order (http://yann.lecun.com/exdb/mnist/).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
# magic number -> number of dimensions; both hold unsigned bytes (dtype code 0x08)
IDX_MAGICS: dict[int, int] = {0x00000803: 3, 0x00000801: 1}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX images (N, rows, cols) or labels (N,) file as a uint8 array.

    Gzip is detected by its magic bytes, not by the name, so a misnamed file still
    reads. Raises ValueError naming the path when the file is corrupt or truncated.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        if raw.read(2) != GZIP_MAGIC:
            raw.seek(0)
            return _parse(raw.read(), path)
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw) as unzipped:
                data = unzipped.read()
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from err
    return _parse(data, path)


def _parse(data: bytes, path: Path) -> np.ndarray:
    """Validate the header against the payload length and shape the payload."""
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in IDX_MAGICS:
        expected = ", ".join(f"0x{m:08x}" for m in IDX_MAGICS)
        raise ValueError(
            f"{path}: bad IDX magic 0x{magic:08x}, expected one of {expected}"
        )
    ndim = IDX_MAGICS[magic]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    shape = tuple(
        int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4)
    )
    expected_len = int(np.prod(shape, dtype=np.int64))
    if len(data) - offset != expected_len:
        raise ValueError(
            f"{path}: payload has {len(data) - offset} bytes, "
            f"header shape {shape} needs {expected_len}"
        )
    # copy: frombuffer over bytes is read-only, callers may modify the array
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape).copy()
