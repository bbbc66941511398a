"""RLR (Ozdayi et al. 2021) on hand-built updates whose sign votes are known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from updates import CTX, build, judge, make_round, result

from fedlight.defenses.rlr import RLRParams, robust_lr
from fedlight.defenses.vectors import learned_mask
from fedlight.params import ConfigError, RunFacts, build_params

# Five clients' updates on four coordinates:
#   0: all five positive         |sum of signs| = 5, mean 3
#   1: three up, two down        |sum of signs| = 1, mean 0.4
#   2: four up, one far down     |sum of signs| = 3, mean -1
#   3: nobody moves              |sum of signs| = 0, mean 0
UPDATES = np.array(
    [
        [1.0, 2.0, 1.0, 0.0],
        [2.0, 1.0, 1.0, 0.0],
        [3.0, 1.0, 1.0, 0.0],
        [4.0, -1.0, 1.0, 0.0],
        [5.0, -1.0, -9.0, 0.0],
    ]
)
GLOBAL = np.full(4, 10.0, dtype=np.float32)


def five_clients(examples: list[float] | None = None):
    models = [
        {"w": (GLOBAL + u).astype(np.float32), "count": np.array(7, dtype=np.int64)}
        for u in UPDATES
    ]
    start = {"w": GLOBAL, "count": np.array(3, dtype=np.int64)}
    return make_round(models, examples, global_model=start)


def test_the_learning_rate_flips_where_fewer_than_theta_signs_agree():
    lr = robust_lr(UPDATES, theta=2, eta=1.0)
    np.testing.assert_array_equal(lr, [1.0, -1.0, 1.0, -1.0])
    np.testing.assert_array_equal(robust_lr(UPDATES, 4, 0.5), [0.5, -0.5, -0.5, -0.5])


def test_theta_2_flips_the_coordinate_of_one_net_vote_and_the_model_follows():
    # Coordinate 1 (one net vote) moves against the mean, 0 and 2 by the
    # plain mean, the silent 3 stays.
    verdict, arrays = judge(build("rlr", theta=2), five_clients())
    new = result(arrays)
    np.testing.assert_allclose(new["w"], [13.0, 9.6, 9.0, 10.0], rtol=1e-6)
    assert verdict.details == {"theta": 2, "flipped": 0.5}
    assert new["count"] == 3  # the global model's int buffer, unchanged
    assert verdict.scores is None and verdict.flagged == []
    assert verdict.weights == pytest.approx({str(i): 0.2 for i in range(5)})


def test_a_higher_theta_flips_the_coordinate_of_three_net_votes():
    _, arrays = judge(build("rlr", theta=4), five_clients())
    np.testing.assert_allclose(result(arrays)["w"], [13.0, 9.6, 11.0, 10.0])


@pytest.mark.parametrize(("attackers", "theta"), [(1, 4), (2, 4), (4, 8), (5, 10)])
def test_default_theta_is_the_authors_setting(attackers, theta):
    # The authors ran theta 4 with 1 corrupt agent of 10 and 8 with 4 of 40:
    # max(4, 2 f). The five-client round caps it at its 5 replies.
    rlr = build("rlr", replace(CTX, max_attackers=attackers))
    assert rlr.theta() == theta
    verdict, _ = judge(rlr, five_clients())
    assert verdict.details["theta"] == min(theta, 5)


def test_the_average_weighs_reported_counts_but_the_vote_does_not():
    # Client 4 reports four times the others: half the average, still one vote.
    rnd = five_clients([100.0, 100.0, 100.0, 100.0, 400.0])
    weighted, w_arrays = judge(build("rlr", theta=2, server_lr=0.5), rnd)
    mean = np.array([1 / 8] * 4 + [1 / 2]) @ UPDATES  # [3.75, -0.125, -4, 0]
    np.testing.assert_allclose(
        result(w_arrays)["w"], GLOBAL + 0.5 * np.array([1, -1, 1, -1]) * mean
    )
    assert weighted.weights["4"] == pytest.approx(0.5)
    equal, e_arrays = judge(build("rlr", theta=2, weighted=False), rnd)
    np.testing.assert_allclose(result(e_arrays)["w"], [13.0, 9.6, 9.0, 10.0])
    assert equal.weights["4"] == pytest.approx(0.2)


def test_running_statistics_are_averaged_not_voted():
    arrays = {"bn.weight": np.zeros(2), "bn.running_var": np.ones(3)}
    keys = list(arrays)
    np.testing.assert_array_equal(
        learned_mask(arrays, keys), [True, True, False, False, False]
    )
    # Two clients disagree on the variance: FedAvg, where a vote would flip it.
    models = [
        {"bn.weight": np.array([1.0, 1.0], np.float32), "bn.running_var": v}
        for v in (np.full(3, 1.5, np.float32), np.full(3, 0.7, np.float32))
    ]
    start = {
        "bn.weight": np.zeros(2, np.float32),
        "bn.running_var": np.ones(3, np.float32),
    }
    _, out = judge(build("rlr"), make_round(models, global_model=start))
    np.testing.assert_allclose(result(out)["bn.running_var"], np.full(3, 1.1))
    np.testing.assert_allclose(result(out)["bn.weight"], [1.0, 1.0])


def test_theta_above_the_round_is_refused():
    facts = RunFacts(num_clients=20, clients_per_round=10)
    build_params(RLRParams, {"theta": 10}, key="defense", owner="rlr", facts=facts)
    with pytest.raises(ConfigError, match=r"defense.theta=11 is not allowed"):
        build_params(RLRParams, {"theta": 11}, key="defense", owner="rlr", facts=facts)


def test_a_round_with_fewer_replies_than_theta_asks_for_unanimity():
    # theta 4 of a 5-client run, but only clients 0 and 1 replied: their two
    # signs agree on coordinates 0-2 (kept; the silent 3 does not move); theta
    # 4 itself would flip every coordinate, two signs never reach it.
    models = [{"w": (GLOBAL + u).astype(np.float32)} for u in UPDATES[:2]]
    rnd = make_round(models, global_model={"w": GLOBAL})
    verdict, arrays = judge(build("rlr", theta=4), rnd)
    assert verdict.details["theta"] == 2
    mean = UPDATES[:2].mean(axis=0)
    np.testing.assert_allclose(
        result(arrays)["w"], GLOBAL + np.array([1, 1, 1, -1]) * mean, rtol=1e-6
    )
