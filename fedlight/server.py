"""The ServerApp: fedlight's round loop over a Flower strategy.

The loop samples clients by partition id with a seeded generator (Flower's own
sampler draws node ids with the unseeded ``random`` module), sends the global
weights, lets the strategy (a defence wrapping FedAvg) aggregate the replies in
partition order, evaluates the new global model on the server and hands one
record per round to ``on_round``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedlight.defenses.base import CLIENT_KEY, DefenseStrategy, client_id
from fedlight.evaluation import Evaluator, detection_metrics
from fedlight.seeding import derive_seed

log = logging.getLogger("fedlight")


@dataclass
class ServerPlan:
    """Everything the round loop needs, built by :func:`fedlight.simulate.simulate`."""

    strategy: DefenseStrategy
    initial_arrays: ArrayRecord
    evaluator: Evaluator
    num_rounds: int
    num_clients: int
    clients_per_round: int
    malicious: list[str]
    seed: int = 0
    round_timeout_s: float = 3600.0
    on_round: Callable[[dict[str, Any]], None] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    final_arrays: ArrayRecord | None = None


def discover_nodes(grid: Grid, num_nodes: int, timeout: float) -> dict[int, int]:
    """Map partition id -> node id by asking every node once.

    Node ids are random per run; partition ids are what configs, attacks and
    results speak of. Waits (up to ``timeout``) for all nodes to register: the
    simulation engine starts the ServerApp before it registers them.
    """
    deadline = time.monotonic() + timeout
    while len(node_ids := sorted(grid.get_node_ids())) < num_nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(node_ids)} of {num_nodes} nodes registered")
        time.sleep(0.05)
    messages = [
        Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
        for n in node_ids
    ]
    mapping = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(f"node discovery failed: {reply.error.reason}")
        pid = int(reply.content["info"][CLIENT_KEY])
        mapping[pid] = reply.metadata.src_node_id
    return mapping


def sample_clients(seed: int, server_round: int, num_clients: int, k: int) -> list[int]:
    """The partition ids taking part in a round, reproducible per (seed, round)."""
    if k >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng(derive_seed(seed, "sample", server_round))
    return sorted(int(c) for c in rng.choice(num_clients, size=k, replace=False))


def run_rounds(grid: Grid, plan: ServerPlan) -> None:
    """Run the plan's rounds, appending one record per round to ``plan.rounds``."""
    nodes = discover_nodes(grid, plan.num_clients, plan.round_timeout_s)
    missing = sorted(set(range(plan.num_clients)) - set(nodes))
    if missing:
        raise RuntimeError(f"no node answered for partitions {missing[:10]}")
    arrays = plan.initial_arrays
    for server_round in range(1, plan.num_rounds + 1):
        start = time.perf_counter()
        chosen = sample_clients(
            plan.seed, server_round, plan.num_clients, plan.clients_per_round
        )
        config = ConfigRecord({"server-round": server_round})
        content = RecordDict({"arrays": arrays, "config": config})
        messages = [
            Message(content, dst_node_id=nodes[c], message_type=MessageType.TRAIN)
            for c in chosen
        ]
        replies = list(grid.send_and_receive(messages, timeout=plan.round_timeout_s))
        failures = [r for r in replies if r.has_error()]
        for failure in failures:
            log.warning(
                "round %d: a client failed: %s", server_round, failure.error.reason
            )
        if len(replies) < len(messages):
            log.warning(
                "round %d: %d of %d clients did not answer within %.0f s",
                server_round,
                len(messages) - len(replies),
                len(messages),
                plan.round_timeout_s,
            )
        replies = sorted(
            (r for r in replies if not r.has_error()), key=lambda r: int(client_id(r))
        )
        train_seconds = time.perf_counter() - start
        client_metrics = {
            client_id(r): {k: float(v) for k, v in r.content["metrics"].items()}
            for r in replies
        }
        new_arrays, _ = plan.strategy.aggregate_train(server_round, replies)
        report = plan.strategy.last_report
        if new_arrays is not None:
            arrays = new_arrays
        eval_start = time.perf_counter()
        metrics = plan.evaluator(arrays.to_torch_state_dict())
        eval_seconds = time.perf_counter() - eval_start
        participants = [str(c) for c in chosen]
        scored = report.confidence is not None
        detection = (
            detection_metrics(report.flagged, plan.malicious, participants)
            if scored
            else {"precision": None, "recall": None, "fpr": None}
        )
        record = {
            "round": server_round,
            **metrics,
            "malicious_confidence": report.confidence,
            "flagged": report.flagged if scored else None,
            **detection,
            "participants": participants,
            "failures": [f.error.reason for f in failures],
            "clients": client_metrics,
            "train_seconds": train_seconds,
            "defense_seconds": report.seconds,
            "eval_seconds": eval_seconds,
            "seconds": time.perf_counter() - start,
        }
        plan.rounds.append(record)
        if plan.on_round is not None:
            plan.on_round(record)
    plan.final_arrays = arrays


def make_server_app(plan: ServerPlan) -> ServerApp:
    """A ServerApp whose main runs :func:`run_rounds` on ``plan``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Any) -> None:
        run_rounds(grid, plan)

    return app
