"""Shared fixtures: the real config, composed and shrunk for tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("FEDLIGHT_DATA", REPO.parent / "shared" / "data")).resolve()


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The root config with ``overrides``, composed from the installed package."""
    with initialize_config_module(config_module="fedlight.configs", version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


SMOKE = [
    "num_clients=4",
    "num_rounds=2",
    "client.epochs=1",
    "dataset.max_train_samples=400",
    "wandb.mode=disabled",
    "simulation.round_timeout_s=120",
]


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


def with_values(cfg: DictConfig, **values: object) -> DictConfig:
    """A copy of ``cfg`` with dotted keys (``a__b`` for ``a.b``) set."""
    cfg = cfg.copy()
    with open_dict(cfg):
        for key, value in values.items():
            node = cfg
            parts = key.split("__")
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = value
    return cfg
