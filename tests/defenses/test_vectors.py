"""Flat update vectors: the round's models as rows, and back again unchanged."""

from __future__ import annotations

import numpy as np
from updates import clustered, make_round

from fedlight.defenses.vectors import flatten, model_matrix, unflatten, update_matrix


def test_rows_are_the_clients_updates_and_unflatten_inverts_flatten():
    models = clustered(4, {2: 5.0})
    rnd = make_round(models)
    keys, start, updates = update_matrix(rnd)
    assert keys == ["w", "b"]  # the int buffer is not part of the vector
    assert updates.shape == (4, 16) and np.allclose(start, 0.0)
    assert np.allclose(updates[2], flatten(models[2], keys))
    back = unflatten(start + updates[2], rnd.global_numpy, keys)
    assert back["w"].dtype == np.float32 and np.allclose(back["w"], models[2]["w"])
    assert back["count"] is rnd.global_numpy["count"]
    _, rows = model_matrix(rnd)
    assert np.allclose(rows, updates)
