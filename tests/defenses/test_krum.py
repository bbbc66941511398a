"""Krum and Multi-Krum: Flower's selection, mapped back to clients."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy import MultiKrum as FlowerMultiKrum
from updates import CTX, clustered, make_replies, result

from fedlight.defenses import Krum, MultiKrum


def test_krum_keeps_one_central_client_and_flags_the_rest():
    # Prepare: five clustered updates and a far one (client 5).
    replies = make_replies(clustered(6, {5: 10.0}))
    strategy = Krum(FedAvg(), CTX)
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    report = strategy.last_report
    # Assert: one of the cluster is the model; the far client is flagged.
    (kept,) = report.details["selected"]
    assert kept != "5" and "5" in report.flagged
    assert len(report.flagged) == 5
    assert report.confidence["5"] == 1.0 and report.confidence[kept] == 0.0
    assert np.all(np.abs(result(arrays)["w"] - 1.0) < 0.1)


def test_multikrum_flags_exactly_the_far_clients():
    replies = make_replies(clustered(8, {2: 5.0, 6: -5.0}))
    strategy = MultiKrum(FedAvg(), CTX, num_malicious_nodes=2)
    arrays, _ = strategy.aggregate_train(1, replies)
    report = strategy.last_report
    assert sorted(report.flagged) == ["2", "6"]  # m = n - f = 6 kept
    assert report.details["num_nodes_to_select"] == 6
    assert np.all(np.abs(result(arrays)["w"] - 1.0) < 0.05)


def test_multikrum_equals_flowers_multikrum():
    models = clustered(7, {0: 3.0})
    ours = MultiKrum(FedAvg(), CTX, num_malicious_nodes=1, num_nodes_to_select=4)
    theirs = FlowerMultiKrum(num_malicious_nodes=1, num_nodes_to_select=4)
    a, _ = ours.aggregate_train(1, make_replies(models))
    b, _ = theirs.aggregate_train(1, make_replies(models))
    for key, value in result(b).items():
        np.testing.assert_allclose(result(a)[key], value, rtol=1e-6)


@pytest.mark.parametrize(("configured", "expected"), [(None, 3), (2, 2)])
def test_num_malicious_defaults_to_the_attack(configured, expected):
    from dataclasses import replace

    ctx = replace(CTX, num_attackers=3)
    assert Krum(FedAvg(), ctx, num_malicious_nodes=configured).num_malicious_nodes == (
        expected
    )


def test_boosted_far_client_cannot_buy_its_way_in():
    replies = make_replies(clustered(6, {0: 10.0}), examples=[2000.0] + [100.0] * 5)
    strategy = MultiKrum(FedAvg(), CTX)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert strategy.last_report.flagged == ["0"]
    assert np.all(np.abs(result(arrays)["b"] - 1.0) < 0.05)
