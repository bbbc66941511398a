"""Helpers shared by the tests: the real config, composed and shrunk."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from fedlight import registry

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(
    os.environ.get("FEDLIGHT_DATA", REPO.parent / "shared" / "data")
).resolve()

# Published per-class counts of full MNIST, the data under DATA_ROOT/mnist (see
# ../shared/data/README.md): 60,000 train + 10,000 test images.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# The 10,000-image subset shipped in fedlight/data/embedded/mnist (the default when
# no data is configured): an 80/20 per-class split, 7,996 train + 2,004 test.
EMBEDDED_MNIST_TRAIN_COUNTS = [800, 901, 792, 825, 784, 690, 811, 856, 755, 782]
EMBEDDED_MNIST_TEST_COUNTS = [201, 226, 199, 207, 196, 173, 203, 214, 189, 196]

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
    return registry.compose_config(overrides or [])
