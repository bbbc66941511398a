"""Aggregation arithmetic the server and the reference loop share.

:func:`fedavg` is Flower's FedAvg order of operations on plain arrays, so the
server applies a defence's weights itself and still matches Flower bit for bit;
:func:`rank_shares` says how much of a coordinate-wise rule's result (median,
trimmed mean) came from each client, for ``attacker_weight``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]


def fedavg(states: Sequence[Arrays], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """The weighted average of ``states`` as Flower's ``aggregate_arrayrecords``:
    each state scaled by ``w / sum(weights)`` and summed in list order.

    States with weight 0 are skipped (an excluded update never enters the sum,
    so a non-finite one cannot poison it).
    """
    pairs = [(s, w) for s, w in zip(states, weights, strict=True) if w > 0]
    if not pairs:
        raise ValueError("fedavg needs at least one positive weight")
    total_weight = sum(w for _, w in pairs)
    total: dict[str, np.ndarray] = {}
    for state, w in pairs:
        factor = w / total_weight
        for key, value in state.items():
            if key not in total:
                total[key] = np.asarray(value) * factor
            else:
                total[key] += np.asarray(value) * factor
    return {k: np.asarray(v) for k, v in total.items()}


def rank_shares(states: Sequence[Arrays], low: int, high: int) -> np.ndarray:
    """Each client's share of a rule that averages, per coordinate, the values
    ranked ``low`` to ``high - 1`` (0-based) among the clients.

    The median of n values uses ranks ``(n-1)//2 .. n//2``; a trimmed mean
    cutting k per tail uses ``k .. n-k-1``. Returns ``(clients,)`` shares that
    sum to 1: the fraction of the rule's inputs, over every float coordinate,
    that came from each client.
    """
    n = len(states)
    if not 0 <= low < high <= n:
        raise ValueError(f"ranks [{low}, {high}) do not fit {n} clients")
    counts = np.zeros(n)
    coords = 0
    for key, first in states[0].items():
        if np.asarray(first).dtype.kind != "f":
            continue
        stacked = np.stack([np.asarray(s[key]).ravel() for s in states])
        order = np.argsort(stacked, axis=0, kind="stable")[low:high]
        counts += np.bincount(order.ravel(), minlength=n)
        coords += stacked.shape[1]
    return counts / max(coords * (high - low), 1)


def closest_shares(states: Sequence[Arrays], beta: int) -> np.ndarray:
    """Each client's share of a rule that averages, per coordinate, the ``beta``
    values closest to the clients' median (Bulyan's second stage)."""
    n = len(states)
    counts = np.zeros(n)
    coords = 0
    for key, first in states[0].items():
        if np.asarray(first).dtype.kind != "f":
            continue
        stacked = np.stack([np.asarray(s[key]).ravel() for s in states])
        distance = np.abs(stacked - np.median(stacked, axis=0))
        order = np.argsort(distance, axis=0, kind="stable")[:beta]
        counts += np.bincount(order.ravel(), minlength=n)
        coords += stacked.shape[1]
    return counts / max(coords * beta, 1)
