"""Fixtures for the data tests: the real offline data root and tiny IDX files.

Every test runs isolated from this machine's data sources: no $FEDLIGHT_DATA, an
empty Debian folder, and a hub endpoint on a closed local port, so a test that
forgets to disable the hub fails fast instead of waiting on the network.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedlight.data import sources

REPO_ROOT = Path(__file__).resolve().parents[2]
# Read before the isolation fixture below removes the variable.
REAL_DATA_ROOT = Path(
    os.environ.get(sources.ROOT_ENV_VAR) or REPO_ROOT.parent / "shared" / "data"
)
CLOSED_ENDPOINT = "http://127.0.0.1:9"  # discard port: connection refused at once

WriteIdx = Callable[..., Path]


@pytest.fixture(autouse=True)
def isolated_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(sources.ROOT_ENV_VAR, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_ENDPOINT)
    monkeypatch.setattr(sources, "DEBIAN_DATA_DIR", tmp_path / "no-debian")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real offline datasets ($FEDLIGHT_DATA, else ../shared/data)."""
    if not (REAL_DATA_ROOT / "mnist").is_dir():
        pytest.skip(f"no offline data at {REAL_DATA_ROOT}; set {sources.ROOT_ENV_VAR}")
    return REAL_DATA_ROOT


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array of 1 or 3 dimensions."""
    magic = {1: 0x00000801, 3: 0x00000803}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def idx_bytes() -> Callable[[np.ndarray], bytes]:
    """Encode a uint8 array of 1 or 3 dimensions as IDX bytes (uncompressed)."""
    return _idx_bytes


@pytest.fixture
def write_idx() -> WriteIdx:
    """Write ``array`` as IDX to ``path``, gzip-compressed when ``gz``."""

    def write(path: Path, array: np.ndarray, gz: bool | None = None) -> Path:
        data = _idx_bytes(array)
        if gz if gz is not None else path.suffix == ".gz":
            data = gzip.compress(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return write


@pytest.fixture
def make_root(write_idx: WriteIdx, tmp_path: Path) -> Callable[..., Path]:
    """Build a data root holding tiny (28x28) IDX files for one dataset folder.

    Train and test get ``n_train``/``n_test`` random images with labels
    ``i % 10``; ``gz`` picks compressed or unpacked files; ``skip`` leaves out
    the named file stems.
    """

    def make(
        folder: str = "mnist",
        n_train: int = 20,
        n_test: int = 10,
        gz: bool = True,
        skip: tuple[str, ...] = (),
        root: Path | None = None,
    ) -> Path:
        root = root or tmp_path / "root"
        rng = np.random.default_rng(0)
        arrays = {
            "train-images-idx3-ubyte": rng.integers(
                0, 256, (n_train, 28, 28), dtype=np.uint8
            ),
            "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(
                0, 256, (n_test, 28, 28), dtype=np.uint8
            ),
            "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
        }
        for stem, array in arrays.items():
            if stem not in skip:
                name = f"{stem}.gz" if gz else stem
                write_idx(root / folder / name, array, gz=gz)
        return root

    return make
