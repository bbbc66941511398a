"""A tiny in-memory federation for attack tests: a data bundle as the Ray
object store holds it, and the client spec that trains on it."""

from __future__ import annotations

import numpy as np
import torch

from fedlight.attacks import Attack
from fedlight.client import ClientSpec


def bundle(num_clients: int = 2, per_client: int = 64, seed: int = 0) -> dict:
    """Random 1x32x32 images with labels 0-9, split evenly."""
    rng = np.random.default_rng(seed)
    n = num_clients * per_client
    return {
        "train_x": rng.standard_normal((n, 1, 32, 32)).astype(np.float32),
        "train_y": rng.integers(0, 10, n).astype(np.int64),
        "partitions": [
            np.arange(i * per_client, (i + 1) * per_client) for i in range(num_clients)
        ],
        "pixel_max": 2.0,
    }


def spec(attack: Attack, epochs: int = 1, **kw: object) -> ClientSpec:
    """A ConvNet client of :func:`bundle` under ``attack``."""
    return ClientSpec(
        data=bundle(),
        model="convnet",
        num_classes=10,
        in_channels=1,
        attack=attack,
        epochs=epochs,
        batch_size=16,
        **kw,
    )


def update_norm(global_state: dict, state: dict) -> float:
    """L2 norm of ``state - global_state`` over the float arrays."""
    return float(
        torch.sqrt(
            sum(
                (state[k] - global_state[k]).pow(2).sum()
                for k in state
                if state[k].is_floating_point()
            )
        )
    )
