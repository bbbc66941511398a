"""The FedDefender strategy: Flower messages in, exclusions and weights out,
scored in-process or as a Ray task with the same result."""

from __future__ import annotations

import copy

import pytest
import ray
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedlight.defenses import DefenseContext, FedDefender
from fedlight.models import build_model


@pytest.fixture(autouse=True)
def task_identity():
    """Messages need a run identity, as inside Flower's simulation engine."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id = 1, 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID


def replies(num_clients: int, odd_one: int) -> list[Message]:
    """Clients with slightly perturbed copies of one model; ``odd_one`` differs."""
    torch.manual_seed(0)
    base = build_model("convnet")
    out = []
    for cid in range(num_clients):
        model = copy.deepcopy(base) if cid != odd_one else build_model("convnet")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.001 * torch.randn_like(p))
        content = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"num-examples": 100, "partition-id": cid}),
            }
        )
        msg = Message(content, dst_node_id=cid + 1, message_type="train")
        out.append(Message(content, reply_to=msg))
    return out


CTX = DefenseContext("convnet", 10, (1, 32, 32), 0.13, 0.29, seed=3)


def test_odd_client_is_excluded_and_others_keep_their_weight():
    strategy = FedDefender(FedAvg(), CTX, remote=False)
    arrays, _ = strategy.aggregate_train(1, replies(6, odd_one=4))
    report = strategy.last_report
    assert report.flagged == ["4"] and report.confidence["4"] == 1.0
    assert arrays is not None
    assert all(report.weights[c] == 1.0 for c in "01235")


def test_loop_and_batched_engines_agree_through_the_strategy():
    scores = []
    for engine in ("loop", "batched"):
        strategy = FedDefender(FedAvg(), CTX, engine=engine, remote=False)
        strategy.aggregate_train(2, replies(5, odd_one=0))
        scores.append(strategy.last_report.confidence)
    assert scores[0] == scores[1]


@pytest.mark.slow
def test_ray_task_gives_the_in_process_result(ray_tmp):
    local = FedDefender(FedAvg(), CTX, remote=False)
    local.aggregate_train(1, replies(5, odd_one=2))
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=ray_tmp)
    try:
        remote = FedDefender(FedAvg(), CTX, remote=True)
        remote.aggregate_train(1, replies(5, odd_one=2))
    finally:
        ray.shutdown()
    assert remote.last_report.confidence == local.last_report.confidence
    assert remote.last_report.flagged == ["2"]


def test_inputs_differ_per_round_and_repeat_per_seed():
    strategy = FedDefender(FedAvg(), CTX)
    assert strategy.job_for_round(1, 5).seed != strategy.job_for_round(2, 5).seed
    assert strategy.job_for_round(1, 5) == FedDefender(FedAvg(), CTX).job_for_round(
        1, 5
    )
