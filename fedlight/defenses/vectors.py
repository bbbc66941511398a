"""Client models as flat vectors, for defences that work on whole updates.

Most defences of the literature (FLAME, FoolsGold, DnC, FLDetector, centered
clipping, RFA) see a client as one vector: its update ``w_i - global`` over every
float weight. Integer buffers (BatchNorm's ``num_batches_tracked``) are not part
of it and pass through unchanged when a vector becomes a model again.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedlight.defenses.base import RoundInput

Arrays = Mapping[str, np.ndarray]
RUNNING_STATS = ("running_mean", "running_var")


def float_keys(arrays: Arrays) -> list[str]:
    """The keys of the float arrays, in the model's order."""
    return [k for k, v in arrays.items() if np.asarray(v).dtype.kind == "f"]


def flatten(arrays: Arrays, keys: list[str]) -> np.ndarray:
    """``arrays[keys]`` concatenated into one float64 vector."""
    return np.concatenate(
        [np.asarray(arrays[k], dtype=np.float64).ravel() for k in keys]
    )


def unflatten(
    vector: np.ndarray, like: Arrays, keys: list[str]
) -> dict[str, np.ndarray]:
    """``like`` with its ``keys`` arrays read from ``vector`` (in ``like``'s
    shapes and dtypes); every other array of ``like`` unchanged."""
    out = dict(like)
    start = 0
    for key in keys:
        ref = np.asarray(like[key])
        stop = start + ref.size
        out[key] = vector[start:stop].reshape(ref.shape).astype(ref.dtype)
        start = stop
    if start != vector.size:
        raise ValueError(f"vector has {vector.size} values, the keys hold {start}")
    return out


def model_matrix(rnd: RoundInput) -> tuple[list[str], np.ndarray]:
    """The float keys and the clients' models, one row per update (rnd order)."""
    keys = float_keys(rnd.global_numpy)
    return keys, np.stack([flatten(u.numpy, keys) for u in rnd.updates])


def update_matrix(rnd: RoundInput) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The float keys, the global model as a vector, and the clients' updates
    ``w_i - global`` one row per update (rnd order)."""
    keys, models = model_matrix(rnd)
    start = flatten(rnd.global_numpy, keys)
    return keys, start, models - start


def learned_mask(arrays: Arrays, keys: list[str]) -> np.ndarray:
    """Which coordinates of the flat vector over ``keys`` are learned weights
    (False for BatchNorm's running statistics, which no gradient trains)."""
    return np.concatenate(
        [
            np.full(np.asarray(arrays[k]).size, not k.endswith(RUNNING_STATS))
            for k in keys
        ]
    ).astype(bool)


def average_shares(counts: np.ndarray, weighted: bool) -> np.ndarray:
    """Each client's share of the average: its count share, or 1/n."""
    if weighted:
        return counts / counts.sum()
    return np.full(len(counts), 1.0 / len(counts))
