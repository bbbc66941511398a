"""read_idx on hand-made, real and corrupt IDX files."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedlight.data.idx import read_idx
from support import MNIST_TEST_COUNTS, MNIST_TRAIN_COUNTS

IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
LABELS = np.array([7, 0, 9], dtype=np.uint8)
WriteIdx = Callable[..., Path]


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("array", [IMAGES, LABELS], ids=["images", "labels"])
def test_round_trip(
    write_idx: WriteIdx, tmp_path: Path, array: np.ndarray, gz: bool
) -> None:
    path = write_idx(tmp_path / ("x.gz" if gz else "x"), array)

    out = read_idx(path)

    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable  # callers may modify it in place


def test_gzip_detected_by_magic_not_name(write_idx: WriteIdx, tmp_path: Path) -> None:
    packed = write_idx(tmp_path / "images-idx3-ubyte", IMAGES, gz=True)
    plain = write_idx(tmp_path / "labels.gz", LABELS, gz=False)

    np.testing.assert_array_equal(read_idx(packed), IMAGES)
    np.testing.assert_array_equal(read_idx(str(plain)), LABELS)


def test_real_mnist(data_root: Path) -> None:
    """The offline folder holds full MNIST: 60,000 train + 10,000 test images."""
    images = read_idx(data_root / "mnist" / "train-images-idx3-ubyte.gz")
    labels = read_idx(data_root / "mnist" / "train-labels-idx1-ubyte.gz")
    test_labels = read_idx(data_root / "mnist" / "t10k-labels-idx1-ubyte.gz")

    assert images.shape == (60000, 28, 28)
    assert labels.shape == (60000,)
    assert np.bincount(labels).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(test_labels).tolist() == MNIST_TEST_COUNTS
    assert images.min() == 0 and images.max() == 255


def _corrupt_cases(good: bytes) -> dict[str, bytes]:
    return {
        "empty": b"",
        "short-header": good[:10],
        "bad-magic": (0x00000804).to_bytes(4, "big") + good[4:],
        "float-dtype": (0x00000D03).to_bytes(4, "big") + good[4:],
        "truncated-payload": good[:-1],
        "trailing-bytes": good + b"\x00",
        "truncated-gzip": gzip.compress(good)[:-12],
        "garbage-after-gzip-magic": b"\x1f\x8b" + b"\x00" * 30,
        "bad-gzip-crc": gzip.compress(good)[:-8] + b"\x00" * 8,
    }


@pytest.mark.parametrize("case", list(_corrupt_cases(b"x" * 40)))
def test_corrupt_file_raises_value_error_with_path(
    tmp_path: Path, idx_bytes: Callable[[np.ndarray], bytes], case: str
) -> None:
    path = tmp_path / f"{case}.gz"
    path.write_bytes(_corrupt_cases(idx_bytes(IMAGES))[case])

    with pytest.raises(ValueError, match=case):
        read_idx(path)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")
