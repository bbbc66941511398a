"""RFA (Pillutla et al. 2022) on constructed models with known geometric medians."""

from __future__ import annotations

import numpy as np
import pytest
from updates import build, judge, make_round, result

from fedlight.defenses.rfa import weiszfeld_weights


def test_weiszfeld_finds_the_median_of_points_on_a_line():
    # In one dimension the geometric median is the median: 1, not the mean 11/3.
    points = np.array([[0.0], [1.0], [10.0]])
    weights, _ = weiszfeld_weights(points, np.ones(3), max_iter=200, nu=1e-9, ftol=0)
    assert (weights / weights.sum()) @ points == pytest.approx([1.0], abs=1e-4)


def test_weiszfeld_finds_the_centre_of_a_symmetric_configuration():
    # Three points of an equilateral triangle and its centre: the centre.
    angles = np.deg2rad([90, 210, 330])
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points = np.vstack([points, [[0.0, 0.0]]]) + 5.0
    weights, _ = weiszfeld_weights(points, np.ones(4), max_iter=200, nu=1e-9, ftol=0)
    assert (weights / weights.sum()) @ points == pytest.approx([5.0, 5.0], abs=1e-4)


def _cluster_and_outlier() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    models = [
        {"w": (1.0 + 0.01 * rng.standard_normal(8)).astype(np.float32)}
        for _ in range(6)
    ]
    models[0] = {"w": np.full(8, 50.0, dtype=np.float32)}  # the attacker
    return models


def test_a_far_client_barely_moves_the_global_model():
    models = _cluster_and_outlier()
    rnd = make_round(models, examples=[100.0] * 6)
    verdict, arrays = judge(build("rfa", max_iter=50), rnd)
    new = result(arrays)["w"]
    assert np.abs(new - 1.0).max() < 0.05  # FedAvg would give about 9
    # The weights are what FedAvg used: the attacker's share is tiny.
    shares = np.array([verdict.weights[str(i)] for i in range(6)])
    expected = (shares / shares.sum()) @ np.stack([m["w"] for m in models])
    np.testing.assert_allclose(new, expected, rtol=1e-5)
    assert shares[0] / shares.sum() < 0.01
    assert verdict.scores is None and verdict.flagged == []


def test_a_count_boost_above_half_the_mass_wins_unless_unweighted():
    # The weighted geometric median of a point holding 80% of the weight is
    # that point: with the paper's count weights a 20x boost takes over.
    models = _cluster_and_outlier()
    rnd = make_round(models, examples=[2000.0] + [100.0] * 5)
    _, weighted = judge(build("rfa", max_iter=50), rnd)
    _, equal = judge(build("rfa", max_iter=50, weighted=False), rnd)
    assert result(weighted)["w"] == pytest.approx(np.full(8, 50.0), abs=0.01)
    assert np.abs(result(equal)["w"] - 1.0).max() < 0.05


def test_equal_weights_ignore_the_reported_counts():
    models = [{"w": np.array([v], dtype=np.float32)} for v in (0.0, 1.0, 2.0)]
    weighted = build("rfa", max_iter=1).verdict(make_round(models, [1.0, 1.0, 100.0]))
    equal = build("rfa", max_iter=1, weighted=False).verdict(
        make_round(models, [1.0, 1.0, 100.0])
    )
    assert weighted.weights["2"] > weighted.weights["0"]
    assert equal.weights["2"] == pytest.approx(equal.weights["0"])
