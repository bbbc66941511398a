"""Helpers shared by the tests: the real config, composed and shrunk."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(
    os.environ.get("FEDLIGHT_DATA", REPO.parent / "shared" / "data")
).resolve()

SMOKE = [
    "num_clients=4",
    "num_rounds=2",
    "client.epochs=1",
    "dataset.max_train_samples=400",
    "wandb.mode=disabled",
    "simulation.round_timeout_s=120",
]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The root config with ``overrides``, composed from the installed package."""
    with initialize_config_module(config_module="fedlight.configs", version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])
