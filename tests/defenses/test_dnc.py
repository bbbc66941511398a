"""Divide-and-Conquer (Shejwalkar & Houmansadr 2021) on constructed updates:
the scores are the squared projections on the top singular direction, an
offset client goes in every iteration, the good set is the intersection."""

from __future__ import annotations

import numpy as np
import pytest
from updates import build, judge, make_round, result

from fedlight.defenses.dnc import DnCParams, dnc_kept, outlier_scores
from fedlight.params import ConfigError, RunFacts, build_params


def test_the_scores_are_squared_projections_on_the_top_direction():
    # One coordinate: mu = 0.75, v = +-1, so s = (g - 0.75)^2.
    sub = np.array([[0.0], [0.0], [0.0], [3.0]])
    np.testing.assert_allclose(
        outlier_scores(sub), [0.5625, 0.5625, 0.5625, 5.0625], rtol=1e-12
    )
    # Spread only along (1, 1): the scores are the squared distances along it.
    sub = np.array([[1.0, 1.0], [-1.0, -1.0], [2.0, 2.0], [-2.0, -2.0]])
    np.testing.assert_allclose(outlier_scores(sub), [2.0, 2.0, 8.0, 8.0])


def _offset_round(n: int = 10, dim: int = 200, bad: int = 3, seed: int = 0):
    """Models near 1 (noise 0.01) around a zero global model; client ``bad``
    is offset by 0.5 along one random unit direction times sqrt(dim)."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    models = []
    for cid in range(n):
        w = 1.0 + 0.01 * rng.standard_normal(dim)
        if cid == bad:
            w += 0.5 * np.sqrt(dim) * direction
        models.append({"w": w.astype(np.float32), "n": np.array(5, dtype=np.int64)})
    return models


def test_an_offset_client_is_removed_in_every_iteration():
    models = _offset_round()
    rnd = make_round(models, examples=[100.0] * 3 + [2000.0] + [100.0] * 6)
    verdict, arrays = judge(build("dnc", subsample_dim=50), rnd)
    assert verdict.details["subsample_dim"] == 50
    assert verdict.details["removed_per_iteration"] == [["3"]] * 5
    assert verdict.flagged == ["3"]
    assert verdict.scores == {str(i): float(i == 3) for i in range(10)}
    assert verdict.weights == {str(i): float(i != 3) for i in range(10)}
    # The mean of the kept models: the boosted count does not matter.
    kept = np.stack([m["w"] for i, m in enumerate(models) if i != 3])
    np.testing.assert_allclose(result(arrays)["w"], kept.mean(axis=0), rtol=1e-6)


def test_weighted_uses_the_reported_counts():
    rnd = make_round(_offset_round(), examples=[100.0 + i for i in range(10)])
    verdict = build("dnc", weighted=True).verdict(rnd)
    assert verdict.weights == {str(i): 0.0 if i == 3 else 100.0 + i for i in range(10)}


def test_with_no_attackers_assumed_nobody_is_removed():
    rnd = make_round(_offset_round())
    verdict, _ = judge(build("dnc", num_malicious_nodes=0), rnd)
    assert verdict.flagged == [] and set(verdict.weights.values()) == {1.0}
    assert verdict.details["removed_per_iteration"] == [[]] * 5


def test_the_good_set_is_the_intersection_over_iterations():
    # Client 0 sticks out on coordinates 0-1, client 1 on 2-3. Each iteration
    # removes m = 1 client, a different one; neither is kept in both.
    rng = np.random.default_rng(0)
    updates = 0.01 * rng.standard_normal((6, 4))
    updates[0, :2] += 5.0
    updates[1, 2:] += 5.0
    kept, removed = dnc_kept(updates, [np.array([0, 1]), np.array([2, 3])], 5)
    assert removed == [[0], [1]]
    np.testing.assert_array_equal(kept, [False, False, True, True, True, True])


def test_filter_frac_scales_the_removals_per_iteration():
    defense = build("dnc", num_malicious_nodes=2, filter_frac=1.5)
    assert defense.num_keep(20) == 17  # ceil(1.5 * 2) = 3 removed
    assert build("dnc", num_malicious_nodes=3, filter_frac=0.1).num_keep(30) == 29


def test_the_default_bound_is_the_servers_and_too_many_are_refused():
    assert build("dnc").num_malicious == 1  # CTX.max_attackers
    with pytest.raises(ConfigError, match="num_malicious_nodes"):
        build_params(
            DnCParams,
            {"num_malicious_nodes": 20},
            key="defense",
            owner="dnc",
            facts=RunFacts(num_clients=20),
        )
