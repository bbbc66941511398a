"""The FedDefender defence: client updates in, exclusions and FedAvg weights out,
scored in-process or as a Ray task with the same result."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import ray
import torch
from updates import build, judge, make_round, result

from fedlight.defenses import DefenseContext, RoundInput
from fedlight.models import build_model

CTX = DefenseContext("convnet", 10, (1, 32, 32), 0.13, 0.29, seed=3)


def models(num_clients: int, odd_one: int) -> list[dict[str, np.ndarray]]:
    """Clients with slightly perturbed copies of one model; ``odd_one`` differs."""
    torch.manual_seed(0)
    base = build_model("convnet")
    out = []
    for cid in range(num_clients):
        model = copy.deepcopy(base) if cid != odd_one else build_model("convnet")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.001 * torch.randn_like(p))
        out.append({k: v.numpy().copy() for k, v in model.state_dict().items()})
    return out


def round_of(num_clients: int, odd_one: int, server_round: int = 1) -> RoundInput:
    return make_round(models(num_clients, odd_one), server_round=server_round)


def test_odd_client_is_excluded_and_others_keep_their_weight():
    rnd = round_of(6, odd_one=4)
    verdict, arrays = judge(build("feddefender", CTX, remote=False), rnd)
    assert verdict.flagged == ["4"] and verdict.scores["4"] == 1.0
    assert arrays is not None
    # FedAvg's weights: the flagged client 0, the others their full count
    # (confidence 0 leaves count x (1 - confidence) unchanged)
    assert verdict.weights["4"] == 0.0
    assert all(verdict.weights[c] == 100.0 for c in "01235")
    # so the new model is the plain average of the five others
    kept = [rnd.updates[int(c)].numpy for c in "01235"]
    for key, value in result(arrays).items():
        if value.dtype.kind == "f":
            expected = np.mean([s[key] for s in kept], axis=0)
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7)


def test_loop_and_batched_engines_agree_through_the_defense():
    scores = []
    for engine in ("loop", "batched"):
        defense = build("feddefender", CTX, engine=engine, remote=False)
        scores.append(defense.verdict(round_of(5, 0, server_round=2)).scores)
    assert scores[0] == scores[1]


@pytest.mark.slow
def test_ray_task_gives_the_in_process_result(ray_tmp):
    local = build("feddefender", CTX, remote=False).verdict(round_of(5, odd_one=2))
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=ray_tmp)
    try:
        remote = build("feddefender", CTX, remote=True)
        got = remote.verdict(round_of(5, odd_one=2))
    finally:
        ray.shutdown()
    assert got.scores == local.scores
    assert got.flagged == ["2"]
    assert got.weights == local.weights


def test_inputs_differ_per_round_and_repeat_per_seed():
    defense = build("feddefender", CTX)
    assert defense.job_for_round(1, 5).seed != defense.job_for_round(2, 5).seed
    assert defense.job_for_round(1, 5) == build("feddefender", CTX).job_for_round(1, 5)
