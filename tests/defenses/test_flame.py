"""FLAME (Nguyen et al. 2022) on constructed updates: the odd direction is
excluded, admitted updates are clipped to the median norm of all clients, and
the noise has std lambda x S_t."""

from __future__ import annotations

import numpy as np
import pytest
from updates import build, judge, make_round, result

from fedlight.defenses.flame import admitted_mask, clip_rows, flame_aggregate

# Two tight groups of benign updates 5 degrees apart (4 and 5 clients) and an
# attacker at 90 degrees: HDBSCAN (min cluster size 6 of 10) drops the attacker
# first, then the majority splits into 4 + 5, both below the minimum, so all
# nine stay in the cluster. (A benign client that fell away from the majority
# before that split would be noise too: FLAME's false positives.)
BENIGN = [0.0, 0.1, 0.2, 0.3, 5.0, 5.1, 5.2, 5.3, 5.4]


def _fan(angles: list[float], dim: int = 16) -> list[dict[str, np.ndarray]]:
    """Updates (the global model is 0) in one plane at ``angles`` degrees with
    norms 1, 1.2, 1.4, ...; client 9 at 90 degrees has norm 6."""
    models = []
    for cid, angle in enumerate(angles):
        radius = 6.0 if angle == 90.0 else 1.0 + 0.2 * cid
        w = np.zeros(dim)
        w[:2] = radius * np.cos(np.deg2rad(angle)), radius * np.sin(np.deg2rad(angle))
        models.append({"w": w.astype(np.float32), "n": np.array(3, dtype=np.int64)})
    return models


def test_the_odd_direction_is_excluded_and_the_rest_share_equally():
    rnd = make_round(_fan([*BENIGN, 90.0]), examples=[100.0] * 9 + [2000.0])
    verdict, arrays = judge(build("flame"), rnd)
    assert verdict.flagged == ["9"]
    assert verdict.scores == {str(i): float(i == 9) for i in range(10)}
    assert verdict.weights["9"] == 0.0
    assert [verdict.weights[str(i)] for i in range(9)] == pytest.approx([1 / 9] * 9)
    assert verdict.details["num_clusters"] == 1
    assert verdict.details["admitted"] == 9 and not verdict.details["all_noise"]
    assert arrays is verdict.model and result(arrays)["n"] == 3


def test_the_aggregate_is_the_mean_of_updates_clipped_to_the_median_norm():
    # Norms 1, 2, 3, 4, 10 along different axes: S_t = 3 (the median of all,
    # the excluded 10 included); admitted 0..3 clip to 1, 2, 3, 3.
    updates = np.diag([1.0, 2.0, 3.0, 4.0, 10.0])
    shares = np.array([0.25, 0.25, 0.25, 0.25, 0.0])
    bound = float(np.median(np.linalg.norm(updates, axis=1)))
    assert bound == 3.0
    np.testing.assert_array_equal(
        clip_rows(updates, bound), np.diag([1.0, 2.0, 3.0, 3.0, 3.0])
    )
    np.testing.assert_allclose(
        flame_aggregate(updates, shares, bound), [0.25, 0.5, 0.75, 0.75, 0.0]
    )


def test_without_noise_the_model_is_global_plus_the_clipped_mean():
    models = _fan([*BENIGN, 90.0])
    start = {"w": np.full(16, 0.5, dtype=np.float32), "n": np.array(3)}
    shifted = [{"w": m["w"] + start["w"], "n": m["n"]} for m in models]
    verdict, arrays = judge(
        build("flame", noise_lambda=0.0, cluster_on="updates"),
        make_round(shifted, global_model=start),
    )
    updates = np.stack([m["w"].astype(np.float64) for m in models])
    norms = np.linalg.norm(updates, axis=1)
    bound = np.median(norms)  # over all ten clients, the odd one included
    clipped = updates[:9] * np.minimum(1.0, bound / norms[:9])[:, None]
    expected = 0.5 + clipped.mean(axis=0)
    assert verdict.details["clip_bound"] == pytest.approx(bound)
    assert verdict.details["clipped"] == int((norms[:9] > bound).sum()) > 0
    np.testing.assert_allclose(result(arrays)["w"], expected, rtol=1e-6)


def test_the_noise_has_std_lambda_times_the_clipping_bound():
    rng = np.random.default_rng(1)
    base = rng.standard_normal(40_000)
    models = [
        {"w": (base + 0.1 * rng.standard_normal(40_000)).astype(np.float32)}
        for _ in range(8)
    ]
    rnd = make_round(models, server_round=3)
    defense = build("flame", noise_lambda=0.01)
    verdict, arrays = judge(defense, rnd)
    updates = np.stack([m["w"].astype(np.float64) for m in models])
    bound = float(np.median(np.linalg.norm(updates, axis=1)))
    shares = np.array([verdict.weights[str(i)] for i in range(8)])
    noise = result(arrays)["w"] - flame_aggregate(updates, shares, bound)
    assert verdict.details["noise_sigma"] == pytest.approx(0.01 * bound)
    assert noise.std() == pytest.approx(0.01 * bound, rel=0.02)
    assert abs(noise.mean()) < 0.05 * 0.01 * bound
    # Seeded per round: the same round twice gives the same model, another
    # round other noise.
    again = result(judge(defense, rnd)[1])["w"]
    other = result(judge(defense, make_round(models, server_round=4))[1])["w"]
    np.testing.assert_array_equal(again, result(arrays)["w"])
    assert not np.array_equal(other, again)


def test_a_boosted_count_buys_nothing_unless_weighted():
    models = _fan([0.0, 0.1, 0.2, 0.3, 0.4, *BENIGN[4:]])  # 5 + 5: all admitted
    equal = make_round(models, examples=[100.0] * 10)
    boosted = make_round(models, examples=[2000.0] + [100.0] * 9)
    a = result(judge(build("flame", noise_lambda=0.0), equal)[1])["w"]
    b = result(judge(build("flame", noise_lambda=0.0), boosted)[1])["w"]
    np.testing.assert_array_equal(a, b)
    verdict = build("flame", weighted=True).verdict(boosted)
    assert verdict.weights["0"] == pytest.approx(2000.0 / 2900.0)


def test_all_noise_admits_everybody():
    np.testing.assert_array_equal(admitted_mask(np.array([-1, -1, -1])), [1, 1, 1])
    np.testing.assert_array_equal(admitted_mask(np.array([0, -1, 0, 1])), [1, 0, 1, 0])


def test_the_papers_model_distances_catch_a_scaled_update_that_directions_miss():
    # The global model is 10 along an axis outside the updates' plane; the
    # attacker's update points 2 degrees from the benign ones but is 30 long
    # (model replacement). Between whole models (the paper's W_i) it is far from
    # everyone; between update directions it is one of the crowd.
    g = np.zeros(16, dtype=np.float32)
    g[5] = 10.0
    models = []
    for cid, angle in enumerate([*BENIGN, 2.0]):
        radius = 30.0 if cid == 9 else 1.0 + 0.2 * cid
        w = g.copy()
        w[:2] = radius * np.cos(np.deg2rad(angle)), radius * np.sin(np.deg2rad(angle))
        models.append({"w": w})
    rnd = make_round(models, global_model={"w": g})
    on_models = build("flame", noise_lambda=0.0).verdict(rnd)
    on_updates = build("flame", noise_lambda=0.0, cluster_on="updates").verdict(rnd)
    assert on_models.flagged == ["9"]
    assert on_updates.flagged == []
