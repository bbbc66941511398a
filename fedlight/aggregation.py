"""Aggregation arithmetic the server and the reference loop share.

:func:`fedavg` is Flower's FedAvg order of operations on plain arrays, so the
server applies a defence's weights itself and still matches Flower bit for bit;
:func:`rank_shares` says how much of a coordinate-wise rule's result (median,
trimmed mean) came from each client, for ``attacker_weight``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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


def _shares(
    states: Sequence[Arrays], pick: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Each client's share of the values a coordinate-wise rule uses: ``pick``
    maps stacked ``(clients, coords)`` values to the ``(used, coords)`` client
    indices it averages; counted over every float coordinate, summing to 1."""
    n = len(states)
    counts = np.zeros(n)
    used = 0
    for key, first in states[0].items():
        if np.asarray(first).dtype.kind != "f":
            continue
        chosen = pick(np.stack([np.asarray(s[key]).ravel() for s in states]))
        counts += np.bincount(chosen.ravel(), minlength=n)
        used += chosen.size
    return counts / max(used, 1)


def rank_shares(states: Sequence[Arrays], low: int, high: int) -> np.ndarray:
    """Each client's share of a rule that averages, per coordinate, the values
    ranked ``low`` to ``high - 1`` (0-based) among the clients.

    The median of n values uses ranks ``(n-1)//2 .. n//2``; a trimmed mean
    cutting k per tail uses ``k .. n-k-1``.
    """
    n = len(states)
    if not 0 <= low < high <= n:
        raise ValueError(f"ranks [{low}, {high}) do not fit {n} clients")
    return _shares(
        states, lambda values: np.argsort(values, axis=0, kind="stable")[low:high]
    )


def closest_shares(states: Sequence[Arrays], beta: int) -> np.ndarray:
    """Each client's share of a rule that averages, per coordinate, the ``beta``
    values closest to the clients' median (Bulyan's second stage)."""

    def closest(values: np.ndarray) -> np.ndarray:
        distance = np.abs(values - np.median(values, axis=0))
        return np.argsort(distance, axis=0, kind="stable")[:beta]

    return _shares(states, closest)
