"""Centered clipping (Karimireddy et al. 2021) on updates with known answers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from updates import build, judge, make_round, result

from fedlight.defenses.centered_clipping import centered_clip

GLOBAL = np.array([1.0, -2.0, 0.5], dtype=np.float32)


def round_of(updates: list[list[float]], server_round: int = 1, examples=None):
    """Clients at ``GLOBAL + update``, with an int buffer riding along."""
    models = [
        {
            "w": (GLOBAL + np.asarray(u, dtype=np.float32)).astype(np.float32),
            "count": np.array(7, dtype=np.int64),
        }
        for u in updates
    ]
    start = {"w": GLOBAL, "count": np.array(3, dtype=np.int64)}
    return make_round(models, examples, start, server_round)


def test_with_an_infinite_tau_one_iteration_is_the_plain_mean():
    updates = [[1.0, 0.0, 2.0], [3.0, -1.0, 0.0], [-1.0, 4.0, 1.0], [9.0, 9.0, 9.0]]
    rnd = round_of(updates, examples=[1.0, 1.0, 1.0, 100.0])  # counts ignored
    verdict, arrays = judge(build("centered_clipping", tau=float("inf")), rnd)
    new = result(arrays)
    np.testing.assert_allclose(new["w"], GLOBAL + np.mean(updates, axis=0), rtol=1e-6)
    assert new["count"] == 3
    assert verdict.weights == pytest.approx({str(i): 0.25 for i in range(4)})
    assert verdict.scores is None and verdict.flagged == []


def test_a_far_outlier_moves_v_by_at_most_tau_over_n_per_iteration():
    # Four clients at the centre, one 1000 away along the first axis; tau 1.
    updates = np.zeros((5, 3))
    updates[4, 0] = 1000.0
    v, _, b, _ = centered_clip(updates, np.zeros(3), tau=1.0, iterations=1)
    np.testing.assert_allclose(v, [0.2, 0.0, 0.0])  # tau / n, not 1000 / 5
    # Two iterations: v <- v / n + tau / n (the centred clients pull v back).
    v, _, b, _ = centered_clip(updates, np.zeros(3), tau=1.0, iterations=2)
    np.testing.assert_allclose(v, [0.2 * (1 / 5 + 1), 0.0, 0.0])
    np.testing.assert_allclose(b @ updates, v)  # the shares reproduce v
    # The outlier carries all of v with a coefficient b_4 = 0.24 / 1000.
    verdict, arrays = judge(
        build("centered_clipping", tau=1.0, iterations=2),
        round_of(updates.tolist()),
    )
    np.testing.assert_allclose(result(arrays)["w"], GLOBAL + v, rtol=1e-6)
    assert verdict.weights["4"] == pytest.approx(b[4] / b.sum())
    assert verdict.weights["4"] < 0.001
    assert verdict.details["clipped"] == ["4"]


def test_a_null_tau_is_the_median_distance_from_the_centre():
    updates = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    verdict, arrays = judge(build("centered_clipping"), round_of(updates))
    assert verdict.details["tau"] == pytest.approx(2.0)
    # Only the third is clipped, to norm 2: v = ([1,0,0] + [0,2,0] + [0,0,2]) / 3.
    np.testing.assert_allclose(
        result(arrays)["w"], GLOBAL + np.array([1.0, 2.0, 2.0]) / 3, rtol=1e-6
    )
    assert verdict.weights == pytest.approx({"0": 3 / 8, "1": 3 / 8, "2": 2 / 8})


def test_the_momentum_is_carried_across_rounds_and_resume():
    first_updates = [[3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    defense = build("centered_clipping", tau=1.0)
    defense.verdict(round_of(first_updates))
    np.testing.assert_allclose(defense.momentum, [2.0 / 3, 0.0, 0.0])
    buffer = io.BytesIO()
    torch.save(defense.state_dict(), buffer)
    buffer.seek(0)
    resumed = build("centered_clipping", tau=1.0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    # Round 2: every client sits at v_0 + 5 on the last axis; clipped around
    # v_0 each moves v by tau = 1 towards them, from v_0, not from 0.
    second = [[2.0 / 3, 0.0, 5.0]] * 3
    _, arrays = judge(resumed, round_of(second, server_round=2))
    np.testing.assert_allclose(
        result(arrays)["w"], GLOBAL + np.array([2.0 / 3, 0.0, 1.0]), rtol=1e-6
    )
    _, fresh = judge(build("centered_clipping", tau=1.0), round_of(second, 2))
    assert not np.allclose(result(fresh)["w"], result(arrays)["w"])
