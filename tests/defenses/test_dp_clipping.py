"""dp_fixed (McMahan et al. 2018) and dp_adaptive (Andrew et al. 2021): Flower's
server-side DP wrappers on constructed updates with known clipped averages."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    FedAvg,
)
from updates import CTX, build, judge, make_round, result

from fedlight.defenses.dp_clipping import DPAdaptiveParams
from fedlight.params import ConfigError, RunFacts, build_params

GLOBAL = {
    "w": np.ones(4, dtype=np.float32),
    "count": np.array(7, dtype=np.int64),
    "steps": np.array([3, 4], dtype=np.int64),  # Flower could not scale this
}


def around(updates: list[list[float]], steps: int = 9) -> list[dict[str, np.ndarray]]:
    """Client models ``GLOBAL + update``; their integer buffers differ from it."""
    return [
        {
            "w": (GLOBAL["w"] + np.array(u, dtype=np.float32)),
            "count": np.array(steps, dtype=np.int64),
            "steps": np.array([steps, steps], dtype=np.int64),
        }
        for u in updates
    ]


# Norms 5, 1 and 10: clipped to 2 they are [1.2, 1.6, 0, 0], [0, 0, 0, 1] and
# [1.2, 1.6, 0, 0].
UPDATES = [[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [6.0, 8.0, 0.0, 0.0]]
CLIPPED_MEAN = 1.0 + np.array([2.4, 3.2, 0.0, 1.0]) / 3


def boosted_round(server_round: int = 1):
    return make_round(around(UPDATES), [2000.0, 100.0, 100.0], GLOBAL, server_round)


def test_without_noise_it_is_the_uniform_average_of_the_clipped_updates():
    verdict, arrays = judge(
        build("dp_fixed", noise_multiplier=0.0, clipping_norm=2.0), boosted_round()
    )
    new = result(arrays)
    np.testing.assert_allclose(new["w"], CLIPPED_MEAN, rtol=1e-6)
    # The 20x boosted count buys nothing: DP-FedAvg averages uniformly.
    assert verdict.weights == pytest.approx({"0": 1 / 3, "1": 1 / 3, "2": 1 / 3})
    assert verdict.details["clipped"] == ["0", "2"]
    assert verdict.details["num_clipped"] == 2
    assert verdict.details["noise_std"] == 0.0
    assert verdict.scores is None and verdict.flagged == []
    # Integer buffers are the global model's, with their dtype.
    assert new["count"].dtype == np.int64 and int(new["count"]) == 7
    np.testing.assert_array_equal(new["steps"], GLOBAL["steps"])
    assert new["w"].dtype == np.float32


def test_weighted_averages_the_clipped_updates_by_the_reported_counts():
    verdict, arrays = judge(
        build("dp_fixed", noise_multiplier=0.0, clipping_norm=2.0, weighted=True),
        boosted_round(),
    )
    shares = np.array([2000.0, 100.0, 100.0]) / 2200
    clipped = np.array([[1.2, 1.6, 0, 0], [0, 0, 0, 1], [1.2, 1.6, 0, 0]])
    np.testing.assert_allclose(result(arrays)["w"], 1.0 + shares @ clipped, rtol=1e-6)
    assert [verdict.weights[c] for c in "012"] == pytest.approx(shares.tolist())


def big_round(num_clients: int, size: int, server_round: int = 1):
    """Small updates (norm about 0.3) of a ``size``-weight model around 0."""
    rng = np.random.default_rng(1)
    models = [
        {"w": (0.001 * rng.standard_normal(size)).astype(np.float32)}
        for _ in range(num_clients)
    ]
    start = {"w": np.zeros(size, dtype=np.float32)}
    return models, make_round(models, None, start, server_round)


def test_the_noise_has_flowers_std_z_times_c_over_n():
    models, rnd = big_round(4, 200_000)
    verdict, arrays = judge(
        build("dp_fixed", noise_multiplier=0.4, clipping_norm=5.0), rnd
    )
    mean = np.mean([m["w"].astype(np.float64) for m in models], axis=0)
    deviation = result(arrays)["w"] - mean
    assert verdict.details["noise_std"] == pytest.approx(0.4 * 5.0 / 4)
    assert verdict.details["num_clipped"] == 0
    assert deviation.std() == pytest.approx(0.5, rel=0.01)
    assert abs(deviation.mean()) < 0.01


def test_the_noise_is_reproducible_per_seed_and_round_and_leaves_numpy_alone():
    def model(server_round: int, seed: int = 0) -> np.ndarray:
        defense = build("dp_fixed", context=dataclasses.replace(CTX, seed=seed))
        return result(judge(defense, boosted_round(server_round))[1])["w"]

    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = model(1)
    assert (np.random.get_state()[1] == before).all()
    np.testing.assert_array_equal(first, model(1))
    assert not np.array_equal(first, model(2))
    assert not np.array_equal(first, model(1, seed=1))


def test_the_servers_replies_are_left_as_they_were():
    rnd = boosted_round()
    records = [u.reply.content["arrays"] for u in rnd.updates]
    judge(build("dp_fixed", clipping_norm=2.0), rnd)
    for u, record, update in zip(rnd.updates, records, UPDATES, strict=True):
        assert u.reply.content["arrays"] is record
        np.testing.assert_array_equal(record["w"].numpy(), GLOBAL["w"] + update)


def test_an_update_equal_to_the_global_model_is_held_out_not_a_crash():
    # Flower's clipping divides by the update norm: 0 would stop the run.
    rnd = make_round(around([[0.0] * 4, [0.0, 0.0, 0.0, 1.0]]), None, GLOBAL)
    verdict, arrays = judge(build("dp_fixed", noise_multiplier=0.0), rnd)
    assert verdict.weights == {"0": 0.0, "1": 1.0}
    assert verdict.details["held_out"] == ["0"]
    np.testing.assert_allclose(result(arrays)["w"], [1.0, 1.0, 1.0, 2.0])


def test_every_update_equal_to_the_global_model_keeps_the_model():
    rnd = make_round(around([[0.0] * 4, [0.0] * 4]), None, GLOBAL)
    verdict, arrays = judge(build("dp_adaptive"), rnd)
    assert arrays is None and verdict.weights == {"0": 0.0, "1": 0.0}


@pytest.mark.parametrize(
    ("updates", "factor"),
    [
        # Every update clipped: b = 0 < 0.5, the norm grows by exp(0.2 * 0.5).
        ([[3.0, 4.0, 0, 0], [6.0, 8.0, 0, 0]], math.exp(0.1)),
        # None clipped: b = 1 > 0.5, it shrinks by exp(-0.2 * 0.5).
        ([[0.3, 0.4, 0, 0], [0.0, 0.0, 0, 0.5]], math.exp(-0.1)),
        # Half: b = 0.5, the target; it stays.
        ([[3.0, 4.0, 0, 0], [0.0, 0.0, 0, 0.5]], 1.0),
    ],
)
def test_the_adaptive_norm_moves_towards_the_target_quantile(updates, factor):
    defense = build("dp_adaptive", noise_multiplier=0.0, initial_clipping_norm=2.0)
    verdict, _ = judge(defense, make_round(around(updates), None, GLOBAL))
    assert verdict.details["clipping_norm"] == 2.0
    assert verdict.details["next_clipping_norm"] == pytest.approx(2.0 * factor)
    assert defense.state_dict() == {"clipping_norm": pytest.approx(2.0 * factor)}


def test_flowers_own_adaptive_rule_moves_the_norm_the_other_way():
    """Why dp_adaptive patches one method: Flower 1.42 shrinks the norm when
    every update is clipped. If this fails, Flower fixed it upstream and
    PaperAdaptiveClipping must go."""
    dp = DifferentialPrivacyServerSideAdaptiveClipping(
        FedAvg(), noise_multiplier=0.0, num_sampled_clients=2, initial_clipping_norm=2.0
    )
    dp.current_arrays = ArrayRecord({"w": Array(GLOBAL["w"])})
    replies = []
    for update in ([3.0, 4.0, 0, 0], [6.0, 8.0, 0, 0]):
        w = (GLOBAL["w"] + np.array(update, dtype=np.float32)).astype(np.float32)
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(w)}),
                "metrics": MetricRecord({"num-examples": 1.0}),
            }
        )
        replies.append(Message(content, dst_node_id=1, message_type="train"))
    dp.aggregate_train(1, replies)
    assert dp.clipping_norm == pytest.approx(2.0 * math.exp(-0.1))


def test_the_adaptive_model_clips_to_the_norm_of_the_round_not_the_next():
    defense = build("dp_adaptive", noise_multiplier=0.0, initial_clipping_norm=2.0)
    verdict, arrays = judge(defense, boosted_round())
    np.testing.assert_allclose(result(arrays)["w"], CLIPPED_MEAN, rtol=1e-6)
    assert verdict.details["num_clipped"] == 2 and verdict.details["noise_std"] == 0.0


def test_the_adaptive_norm_survives_a_checkpoint():
    defense = build("dp_adaptive", initial_clipping_norm=2.0)
    judge(defense, boosted_round(1))
    buffer = io.BytesIO()
    torch.save(defense.state_dict(), buffer)
    buffer.seek(0)
    resumed = build("dp_adaptive", initial_clipping_norm=2.0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.clipping_norm == defense.clipping_norm != 2.0
    going, after = judge(defense, boosted_round(2))
    again, restored = judge(resumed, boosted_round(2))
    assert again.details == going.details
    np.testing.assert_array_equal(result(restored)["w"], result(after)["w"])


def test_the_adaptive_noise_uses_flowers_split_of_the_noise_multiplier():
    # z = 0.5 over 10 clients: sigma_b = 10/20 = 0.5, and the updates get
    # z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2 = 3^-1/2 (Andrew et al., Theorem 1).
    models, rnd = big_round(10, 100_000)
    defense = build("dp_adaptive", noise_multiplier=0.5, initial_clipping_norm=5.0)
    verdict, arrays = judge(defense, rnd)
    details = verdict.details
    z_delta = 3**-0.5
    assert details["update_noise_multiplier"] == pytest.approx(z_delta)
    assert details["clipped_count_stddev"] == 0.5
    # Flower scales the noise by the norm after this round's update.
    std = z_delta * details["next_clipping_norm"] / 10
    assert details["noise_std"] == pytest.approx(std)
    mean = np.mean([m["w"].astype(np.float64) for m in models], axis=0)
    assert (result(arrays)["w"] - mean).std() == pytest.approx(std, rel=0.02)


def test_too_few_replies_for_the_count_noise_fall_back_instead_of_stopping():
    # 3 replies: Flower's sigma_b = 3/20 cannot hold z = 0.5 and would raise.
    defense = build("dp_adaptive", noise_multiplier=0.5)
    verdict, arrays = judge(defense, boosted_round())
    assert verdict.details["clipped_count_stddev"] == 0.5 and arrays is not None


def test_a_noise_multiplier_the_count_noise_cannot_hold_is_refused():
    with pytest.raises(ConfigError, match="noise_multiplier=2.0 is not allowed"):
        build_params(
            DPAdaptiveParams,
            {"noise_multiplier": 2.0},
            key="defense",
            owner="dp_adaptive",
            facts=RunFacts(clients_per_round=20),
        )
    build_params(
        DPAdaptiveParams,
        {"noise_multiplier": 2.0, "clipped_count_stddev": 1.5},
        key="defense",
        owner="dp_adaptive",
    )
