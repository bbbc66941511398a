"""Median, trimmed mean and Bulyan on arrays whose result is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg
from updates import CTX, clustered, make_replies, result

from fedlight.defenses import Bulyan, Median, TrimmedMean
from fedlight.defenses.bulyan import feasible_num_malicious
from fedlight.defenses.trimmed_mean import beta_for

VALUES = [1.0, 2.0, 3.0, 4.0, 100.0]  # one client per value


def constant_models(values: list[float]) -> list[dict[str, np.ndarray]]:
    return [
        {"w": np.full((2, 2), v, dtype=np.float32), "n": np.array(3, dtype=np.int64)}
        for v in values
    ]


def test_median_of_known_arrays():
    strategy = Median(FedAvg(), CTX)
    arrays, _ = strategy.aggregate_train(1, make_replies(constant_models(VALUES)))
    out = result(arrays)
    np.testing.assert_array_equal(out["w"], np.full((2, 2), 3.0))
    # the rule returns float64 for the int buffer; fedlight.server.run_round
    # casts every aggregate back to the model's dtypes (test_reliability.py)
    assert out["w"].dtype == np.float32
    report = strategy.last_report
    assert report.confidence is None and report.flagged == []


def test_median_ignores_a_boosted_example_count():
    replies = make_replies(constant_models(VALUES), examples=[1, 1, 1, 1, 1e6])
    arrays, _ = Median(FedAvg(), CTX).aggregate_train(1, replies)
    assert float(result(arrays)["w"][0, 0]) == 3.0


def test_trimmed_mean_cuts_f_per_tail_by_default():
    # f = 1: drop 1.0 and 100.0, average 2, 3, 4.
    strategy = TrimmedMean(FedAvg(), CTX)
    arrays, _ = strategy.aggregate_train(1, make_replies(constant_models(VALUES)))
    np.testing.assert_allclose(result(arrays)["w"], 3.0)
    assert strategy.last_report.details["cut_per_tail"] == 1
    assert strategy.last_report.confidence is None


def test_trimmed_mean_with_explicit_beta_zero_is_the_mean():
    strategy = TrimmedMean(FedAvg(), CTX, beta=0.0)
    arrays, _ = strategy.aggregate_train(1, make_replies(constant_models(VALUES)))
    np.testing.assert_allclose(result(arrays)["w"], np.mean(VALUES), rtol=1e-6)


@pytest.mark.parametrize(
    ("f", "n", "cut"), [(1, 5, 1), (3, 30, 3), (3, 4, 1), (0, 4, 0)]
)
def test_beta_for_cuts_exactly_f(f, n, cut):
    beta = beta_for(f, n)
    assert 0.0 <= beta < 0.5 and int(beta * n) == cut


def test_bulyan_excludes_the_far_client_and_averages_near_the_median():
    # n = 7 = 4f + 3 with f = 1: Multi-Krum keeps n - 2f = 5, then beta = 3.
    replies = make_replies(clustered(7, {3: 50.0}))
    strategy = Bulyan(FedAvg(), CTX)
    arrays, _ = strategy.aggregate_train(1, replies)
    report = strategy.last_report
    assert "3" in report.flagged and len(report.flagged) == 2
    assert len(report.details["selected"]) == 5
    assert report.confidence["3"] == 1.0
    out = result(arrays)
    assert np.all(np.abs(out["w"] - 1.0) < 0.05)


def test_bulyan_lowers_f_when_too_few_replies():
    assert feasible_num_malicious(1, 7) == 1
    assert feasible_num_malicious(2, 7) == 1
    assert feasible_num_malicious(1, 4) == 0
    strategy = Bulyan(FedAvg(), CTX)
    arrays, _ = strategy.aggregate_train(1, make_replies(clustered(4, {})))
    assert arrays is not None
    assert strategy.last_report.details["num_malicious_nodes"] == 0
    assert strategy.last_report.flagged == []
