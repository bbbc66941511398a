"""CRFL's training (Xie et al. 2021): FedAvg, clip the global model, add noise."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from updates import build, judge, make_round, result

from fedlight.defenses.crfl import CRFLParams
from fedlight.params import RunFacts, build_params


def two_clients(server_round: int = 1, size: int = 2, global_value: float = 0.0):
    """Two clients whose FedAvg (counts 100, 300) is [3, 4, 0, ...]: norm 5."""
    first = np.zeros(size, dtype=np.float32)
    second = np.zeros(size, dtype=np.float32)
    first[:2], second[:2] = [6.0, 1.0], [2.0, 5.0]
    models = [{"w": w, "count": np.array(7, dtype=np.int64)} for w in (first, second)]
    start = {
        "w": np.full(size, global_value, dtype=np.float32),
        "count": np.array(3, dtype=np.int64),
    }
    return make_round(models, [100.0, 300.0], start, server_round)


def test_a_global_model_above_rho_is_scaled_exactly_to_rho():
    verdict, arrays = judge(build("crfl", clip_norm=2.5, sigma=0.0), two_clients())
    new = result(arrays)
    np.testing.assert_allclose(new["w"], [1.5, 2.0], rtol=1e-6)
    assert np.linalg.norm(new["w"]) == pytest.approx(2.5, rel=1e-6)
    assert new["count"] == 3
    assert verdict.details == {
        "norm": pytest.approx(5.0),
        "clip_norm": 2.5,
        "clipped": True,
        "noise": False,
    }
    assert verdict.weights == pytest.approx({"0": 0.25, "1": 0.75})
    assert verdict.scores is None and verdict.flagged == []


def test_one_norm_over_all_weights_not_per_layer():
    # Layers [3] and [4]: the model's norm is 5; per layer each would be 2.5.
    models = [{"a": np.array([3.0], np.float32), "b": np.array([4.0], np.float32)}]
    _, arrays = judge(build("crfl", clip_norm=2.5, sigma=0.0), make_round(models))
    assert result(arrays) == {"a": pytest.approx([1.5]), "b": pytest.approx([2.0])}


def test_a_model_inside_the_ball_is_plain_fedavg():
    _, arrays = judge(build("crfl", clip_norm=6.0, sigma=0.0), two_clients())
    np.testing.assert_allclose(result(arrays)["w"], [3.0, 4.0])


def noise_of(defense, server_round: int) -> np.ndarray:
    """The model minus the FedAvg [3, 4, 0, ...] on 40,000 weights."""
    out = result(judge(defense, two_clients(server_round, size=40_000))[1])["w"]
    out = out.astype(np.float64)
    out[:2] -= [3.0, 4.0]
    return out


def test_the_noise_has_std_sigma_and_is_seeded_per_round():
    first = noise_of(build("crfl", clip_norm=1e6, sigma=0.05), 1)
    assert first.std() == pytest.approx(0.05, rel=0.02)
    assert abs(first.mean()) < 0.002
    # Same run seed and round: the same model, from a fresh defence too.
    again = noise_of(build("crfl", clip_norm=1e6, sigma=0.05), 1)
    np.testing.assert_array_equal(again, first)
    later = noise_of(build("crfl", clip_norm=1e6, sigma=0.05), 2)
    assert np.abs(later - first).max() > 0.01


def test_the_last_round_gets_no_noise():
    defense = build("crfl", clip_norm=2.5, last_round=3)
    assert defense.verdict(two_clients(2)).details["noise"] is True
    _, arrays = judge(defense, two_clients(3))
    np.testing.assert_allclose(result(arrays)["w"], [1.5, 2.0], rtol=1e-6)
    # null: the run's num_rounds.
    params = build_params(
        CRFLParams, {}, key="defense", owner="crfl", facts=RunFacts(num_rounds=7)
    )
    assert params.last_round == 7


def test_a_null_rho_is_a_multiple_of_the_initial_norm_kept_across_resume():
    # The round-1 global model has norm 2 (four weights of 1): rho = 1.5 * 2.
    defense = build("crfl", sigma=0.0)
    first = defense.verdict(two_clients(1, size=4, global_value=1.0))
    assert first.details["clip_norm"] == pytest.approx(3.0)
    buffer = io.BytesIO()
    torch.save(defense.state_dict(), buffer)
    buffer.seek(0)
    resumed = build("crfl", sigma=0.0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    # Round 2 starts from another model; rho stays the initial one.
    later = resumed.verdict(two_clients(2, size=4, global_value=9.0))
    assert later.details["clip_norm"] == pytest.approx(3.0)
    assert later.details["norm"] == pytest.approx(5.0)
