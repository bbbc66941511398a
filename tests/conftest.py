"""Shared fixtures: the real config, composed and shrunk for tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from support import DATA_ROOT, SMOKE, compose_config

# Ray warns on every init unless this is set (see STACK.md).
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@pytest.fixture
def data_root() -> Path:
    if not (DATA_ROOT / "mnist").is_dir():
        pytest.skip(f"no data under {DATA_ROOT}; set FEDLIGHT_DATA")
    return DATA_ROOT


@pytest.fixture
def smoke_cfg(data_root: Path) -> DictConfig:
    """4 clients, 2 rounds, 1 epoch on 400 MNIST images, W&B off."""
    cfg = compose_config([*SMOKE, f"dataset.root={data_root}"])
    return cfg


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    """A short private Ray temp dir (Unix socket paths must stay < 108 chars)."""
    path = tempfile.mkdtemp(prefix="flray-")
    yield path
    shutil.rmtree(path, ignore_errors=True)
