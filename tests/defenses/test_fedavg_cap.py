"""The count cap without a detector: a 20x boost is cut to the cap."""

from __future__ import annotations

import numpy as np
import pytest
from updates import build, clustered, judge, make_round, result

from fedlight.defenses.fedavg_cap import cap_counts


def test_cap_counts_caps_at_a_multiple_of_the_median():
    counts = {"0": 2000.0, "1": 100.0, "2": 100.0, "3": 120.0}
    assert cap_counts(counts, 2.0) == {"0": 220.0, "1": 100.0, "2": 100.0, "3": 120.0}
    assert cap_counts(counts, None) == counts


def test_a_boosted_client_gets_at_most_cap_times_the_median_weight():
    models = clustered(5, {0: 10.0})
    examples = [2000.0, 100.0, 100.0, 100.0, 100.0]
    verdict, arrays = judge(
        build("fedavg_cap", cap_examples=2.0), make_round(models, examples)
    )
    assert verdict.weights == {
        "0": 200.0,
        "1": 100.0,
        "2": 100.0,
        "3": 100.0,
        "4": 100.0,
    }
    assert verdict.details["capped"] == ["0"] and verdict.scores is None
    # FedAvg with those weights: the attacker holds 200 / 600 of the average.
    expected = (
        sum(w * m["w"] for w, m in zip([200, 100, 100, 100, 100], models, strict=True))
        / 600
    )
    np.testing.assert_allclose(result(arrays)["w"], expected, rtol=1e-6)


def test_without_a_boost_it_is_fedavg():
    models = clustered(4, {})
    examples = [100.0, 120.0, 90.0, 110.0]
    verdict, arrays = judge(build("fedavg_cap"), make_round(models, examples))
    assert verdict.weights == pytest.approx(dict(zip("0123", examples, strict=True)))
    _, plain = judge(build("none"), make_round(models, examples))
    np.testing.assert_array_equal(result(arrays)["w"], result(plain)["w"])
