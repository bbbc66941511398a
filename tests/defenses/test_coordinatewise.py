"""Median, trimmed mean and Bulyan on arrays whose result is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp.strategy.multikrum import select_multikrum
from updates import build, clustered, judge, make_replies, make_round, result

from fedlight.defenses.bulyan import (
    feasible_num_malicious,
    flower_bulyan,
    recursive_krum,
    recursive_krum_loop,
)
from fedlight.defenses.trimmed_mean import beta_for

VALUES = [1.0, 2.0, 3.0, 4.0, 100.0]  # one client per value


def constant_models(values: list[float]) -> list[dict[str, np.ndarray]]:
    return [
        {"w": np.full((2, 2), v, dtype=np.float32), "n": np.array(3, dtype=np.int64)}
        for v in values
    ]


def shares(*values: float) -> dict[str, float]:
    """Expected weights, client ``i`` getting ``values[i]``."""
    return {str(i): v for i, v in enumerate(values)}


def test_median_of_known_arrays():
    defense = build("median")
    verdict, arrays = judge(defense, make_round(constant_models(VALUES)))
    out = result(arrays)
    np.testing.assert_array_equal(out["w"], np.full((2, 2), 3.0))
    # the rule returns float64 for the int buffer; fedlight.server.run_round
    # casts every aggregate back to the model's dtypes (test_reliability.py)
    assert out["w"].dtype == np.float32
    assert verdict.scores is None and verdict.flagged == []
    # the rule's own model, and every coordinate's median is client 2's value
    assert arrays is verdict.model
    assert verdict.weights == shares(0.0, 0.0, 1.0, 0.0, 0.0)


def test_median_ignores_a_boosted_example_count():
    rnd = make_round(constant_models(VALUES), examples=[1, 1, 1, 1, 1e6])
    verdict, arrays = judge(build("median"), rnd)
    assert float(result(arrays)["w"][0, 0]) == 3.0
    assert verdict.weights["4"] == 0.0  # the boosted far client has no share
    assert verdict.weights == shares(0.0, 0.0, 1.0, 0.0, 0.0)


def test_trimmed_mean_cuts_f_per_tail_by_default():
    # f = 1: drop 1.0 and 100.0, average 2, 3, 4.
    verdict, arrays = judge(build("trimmed_mean"), make_round(constant_models(VALUES)))
    np.testing.assert_allclose(result(arrays)["w"], 3.0)
    assert verdict.details["cut_per_tail"] == 1
    assert verdict.scores is None and verdict.flagged == []
    assert verdict.weights == pytest.approx(shares(0.0, 1 / 3, 1 / 3, 1 / 3, 0.0))
    assert sum(verdict.weights.values()) == pytest.approx(1.0)


def test_trimmed_mean_with_explicit_beta_zero_is_the_mean():
    defense = build("trimmed_mean", beta=0.0)
    verdict, arrays = judge(defense, make_round(constant_models(VALUES)))
    np.testing.assert_allclose(result(arrays)["w"], np.mean(VALUES), rtol=1e-6)
    assert verdict.details["cut_per_tail"] == 0
    assert verdict.weights == pytest.approx(shares(*[0.2] * 5))


@pytest.mark.parametrize(
    ("f", "n", "cut"), [(1, 5, 1), (3, 30, 3), (3, 4, 1), (0, 4, 0)]
)
def test_beta_for_cuts_exactly_f(f, n, cut):
    beta = beta_for(f, n)
    assert 0.0 <= beta < 0.5 and int(beta * n) == cut


def test_bulyan_excludes_the_far_client_and_averages_near_the_median():
    # n = 7 = 4f + 3 with f = 1: Multi-Krum keeps n - 2f = 5, then beta = 3.
    verdict, arrays = judge(build("bulyan"), make_round(clustered(7, {3: 50.0})))
    assert "3" in verdict.flagged and len(verdict.flagged) == 2
    assert len(verdict.details["selected"]) == 5
    assert verdict.details["num_malicious_nodes"] == 1
    assert verdict.scores["3"] == 1.0
    out = result(arrays)
    assert np.all(np.abs(out["w"] - 1.0) < 0.05)
    # the flagged have no share of the model; the kept ones' shares sum to 1
    assert all(verdict.weights[c] == 0.0 for c in verdict.flagged)
    kept = verdict.details["selected"]
    assert all(verdict.weights[c] >= 0.0 for c in kept)
    assert sum(verdict.weights[c] for c in kept) == pytest.approx(1.0)
    assert set(verdict.weights) == {str(i) for i in range(7)}


def _picked(contents: list, chosen: list) -> list[int]:
    return [next(i for i, c in enumerate(contents) if c is x) for x in chosen]


def test_bulyans_selection_is_krum_applied_recursively():
    # 1-D clients, n = 7, f = 1, theta = 5. Krum's score: the sum of squared
    # distances to the k = n - f - 2 nearest others. Once over all seven
    # (k = 4): 1 -> 310, 2 -> 255, 8 -> 135, 9 -> 150, 15 -> 201, 19 -> 273,
    # 25 -> 681, so one-shot Multi-Krum keeps 2, 8, 9, 15, 19. Recursively:
    # 8 wins; then (k = 3) 9 with 149; then (k = 2) 19 with 52; then (k = 1)
    # 1 and 2 tie at 1 and the first in order wins, as in Flower's argsort;
    # then 15 and 25 tie at 100: 15. So the paper's rule keeps 1, not 2.
    values = [1.0, 2.0, 8.0, 9.0, 15.0, 19.0, 25.0]
    models = [{"w": np.array([v], dtype=np.float32)} for v in values]
    contents = [m.content for m in make_replies(models)]
    assert _picked(contents, recursive_krum(contents, 1, 5)) == [2, 3, 5, 0, 4]
    assert sorted(_picked(contents, select_multikrum(contents, 1, 5))) == [
        1,
        2,
        3,
        4,
        5,
    ]


@pytest.mark.parametrize("seed", range(6))
def test_recursive_krum_equals_flowers_krum_repeated(seed):
    # the one-distance-matrix version against the oracle that calls Flower's
    # Krum on the clients left, on random models of several sizes
    rng = np.random.default_rng(seed)
    n, f = int(rng.integers(5, 14)), int(rng.integers(0, 3))
    models = [
        {"w": rng.standard_normal((3, 4)).astype(np.float32) * rng.uniform(0.5, 3)}
        for _ in range(n)
    ]
    contents = [m.content for m in make_replies(models)]
    theta = max(1, n - 2 * f)
    fast = _picked(contents, recursive_krum(contents, f, theta))
    assert fast == _picked(contents, recursive_krum_loop(contents, f, theta))
    assert len(set(fast)) == theta


def test_bulyan_keeps_flowers_one_shot_selection_on_request():
    models = clustered(7, {3: 50.0})
    for selection in ("recursive", "multikrum"):
        verdict, _ = judge(build("bulyan", selection=selection), make_round(models))
        assert "3" in verdict.flagged and len(verdict.details["selected"]) == 5


def test_bulyan_lowers_f_when_too_few_replies():
    assert feasible_num_malicious(1, 7) == 1
    assert feasible_num_malicious(2, 7) == 1
    assert feasible_num_malicious(1, 4) == 0
    verdict, arrays = judge(build("bulyan"), make_round(clustered(4, {})))
    assert arrays is not None
    assert verdict.details["num_malicious_nodes"] == 0
    assert verdict.flagged == []
    # f = 0: every client kept and beta = n, so each has an equal share
    assert verdict.weights == pytest.approx(shares(0.25, 0.25, 0.25, 0.25))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("selection", ["recursive", "multikrum"])
def test_bulyan_equals_flowers_bulyan_strategy_bit_for_bit(seed, selection):
    # the direct second stage against Flower's whole Bulyan.aggregate_train, on
    # random models with an int buffer, n from 7 to 14, f up to what n allows
    rng = np.random.default_rng(seed)
    n = int(rng.integers(7, 15))
    f = feasible_num_malicious(int(rng.integers(0, 3)), n)
    models = [
        {
            "w": rng.standard_normal((3, 4)).astype(np.float32) * rng.uniform(0.5, 3),
            "b": rng.standard_normal(5).astype(np.float32),
            "n": np.array(int(rng.integers(0, 9)), dtype=np.int64),
        }
        for _ in range(n)
    ]
    defense = build("bulyan", num_malicious_nodes=f, selection=selection)
    verdict, _ = judge(defense, make_round(models))
    oracle, kept = flower_bulyan(make_replies(models), f, selection)
    assert verdict.details["num_malicious_nodes"] == f
    assert sorted(int(c) for c in verdict.details["selected"]) == sorted(kept)
    fast = result(verdict.model)
    slow = result(oracle)
    assert fast.keys() == slow.keys()
    for key in fast:
        assert fast[key].dtype == slow[key].dtype
        np.testing.assert_array_equal(fast[key], slow[key])
