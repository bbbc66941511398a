"""Krum and Multi-Krum: Flower's selection, mapped back to clients."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from flwr.serverapp.strategy import MultiKrum as FlowerMultiKrum
from updates import CTX, build, clustered, judge, make_replies, make_round, result


def test_krum_keeps_one_central_client_and_flags_the_rest():
    # Prepare: five clustered updates and a far one (client 5).
    rnd = make_round(clustered(6, {5: 10.0}))
    # Execute
    verdict, arrays = judge(build("krum"), rnd)
    # Assert: one of the cluster is the model; the far client is flagged.
    (kept,) = verdict.details["selected"]
    assert kept != "5" and "5" in verdict.flagged
    assert len(verdict.flagged) == 5
    assert verdict.scores["5"] == 1.0 and verdict.scores[kept] == 0.0
    assert np.all(np.abs(result(arrays)["w"] - 1.0) < 0.1)
    # the kept client is the whole model, every other client 0
    assert verdict.weights == {c: 1.0 if c == kept else 0.0 for c in rnd.ids}
    for key, value in result(arrays).items():
        np.testing.assert_array_equal(value, rnd.updates[int(kept)].numpy[key])


def test_multikrum_flags_exactly_the_far_clients():
    rnd = make_round(clustered(8, {2: 5.0, 6: -5.0}))
    verdict, arrays = judge(build("multikrum", num_malicious_nodes=2), rnd)
    assert sorted(verdict.flagged) == ["2", "6"]  # m = n - f = 6 kept
    assert verdict.details["num_nodes_to_select"] == 6
    assert np.all(np.abs(result(arrays)["w"] - 1.0) < 0.05)
    assert verdict.weights == {c: 0.0 if c in ("2", "6") else 1.0 for c in rnd.ids}


def test_multikrum_averages_the_kept_clients_equally_as_its_paper():
    # Client 0 sits inside the cluster (so Multi-Krum keeps it) but reports a
    # 20x count: the paper averages the selected updates equally, so its model
    # is one in five of the aggregate, not 20 in 24 (Flower's count weights).
    models = clustered(6, {5: 10.0})
    models[0] = {k: v + 0.2 if k != "count" else v for k, v in models[0].items()}
    examples = [2000.0] + [100.0] * 5
    rnd = make_round(models, examples=examples)
    verdict, arrays = judge(build("multikrum"), rnd)
    assert verdict.flagged == ["5"]
    assert verdict.weights == {"5": 0.0, **{str(c): 1.0 for c in range(5)}}
    for key in ("w", "b"):
        mean = np.mean([models[c][key] for c in range(5)], axis=0)
        np.testing.assert_allclose(result(arrays)[key], mean, rtol=1e-6)
    # weighted=true: Flower's count weights, the boosted client 20 in 24
    verdict, _ = judge(
        build("multikrum", weighted=True), make_round(models, examples=examples)
    )
    assert verdict.weights["0"] == 2000.0 and verdict.weights["1"] == 100.0


def test_weighted_multikrum_equals_flowers_multikrum():
    models = clustered(7, {0: 3.0})
    ours = build(
        "multikrum", num_malicious_nodes=1, num_nodes_to_select=4, weighted=True
    )
    theirs = FlowerMultiKrum(num_malicious_nodes=1, num_nodes_to_select=4)
    verdict, a = judge(ours, make_round(models))
    b, _ = theirs.aggregate_train(1, make_replies(models))
    for key, value in result(b).items():
        np.testing.assert_allclose(result(a)[key], value, rtol=1e-6)
    assert sum(w > 0 for w in verdict.weights.values()) == 4


@pytest.mark.parametrize(("configured", "expected"), [(None, 3), (2, 2)])
def test_num_malicious_defaults_to_the_servers_max_attackers(configured, expected):
    ctx = replace(CTX, max_attackers=3)
    krum = build("krum", ctx, num_malicious_nodes=configured)
    assert krum.num_malicious == expected
    verdict = krum.verdict(make_round(clustered(8, {})))
    assert verdict.details["num_malicious_nodes"] == expected


def test_boosted_far_client_cannot_buy_its_way_in():
    rnd = make_round(clustered(6, {0: 10.0}), examples=[2000.0] + [100.0] * 5)
    verdict, arrays = judge(build("multikrum"), rnd)
    assert verdict.flagged == ["0"]
    assert np.all(np.abs(result(arrays)["b"] - 1.0) < 0.05)
    assert verdict.weights == {"0": 0.0, **{str(c): 1.0 for c in range(1, 6)}}
