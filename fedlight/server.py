"""The ServerApp: fedlight's round loop over a Flower strategy.

The loop samples clients by partition id with a seeded generator (Flower's own
sampler draws node ids with the unseeded ``random`` module), sends the global
weights, asks the defence for its verdict on the replies (in partition order),
applies it (FedAvg with the verdict's weights, or the defence's own model),
evaluates the new global model on the server and hands one
:class:`~fedlight.record.RoundRecord` per round to ``on_round``. A reply's
client is the partition its node announced at discovery, looked up by the node
id Flower delivered it from, never a field the reply carries.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedlight.aggregation import fedavg
from fedlight.attacks.base import MEASUREMENT_KEY
from fedlight.checkpoint import save_checkpoint
from fedlight.defenses.base import (
    WEIGHT_KEY,
    ClientUpdate,
    Defense,
    RoundInput,
    Verdict,
    cast_like,
    to_record,
)
from fedlight.detection import round_detection
from fedlight.evaluation import Evaluator
from fedlight.record import RoundRecord, normalised
from fedlight.sanitize import screen_updates
from fedlight.schedule import scheduled
from fedlight.seeding import derive_seed

log = logging.getLogger("fedlight")

CLIENT_KEY = "partition-id"


@dataclass
class ServerPlan:
    """Everything the round loop needs, built by :func:`fedlight.simulate.simulate`."""

    defense: Defense
    initial_arrays: ArrayRecord
    evaluator: Evaluator
    num_rounds: int
    num_clients: int
    clients_per_round: int
    malicious: list[str]
    seed: int = 0
    # The attackers' schedule (attack.rounds): in other rounds they are honest,
    # and the detection metrics do not count them (detection.attacking).
    attack_rounds: str = "1:"
    round_timeout_s: float = 600.0
    min_replies: float = 0.5
    max_norm_ratio: float | None = 1000.0
    max_norm: float | None = None
    checkpoint_path: Path | None = None
    fingerprint: str = ""
    # The rounds after which this run was resumed from its checkpoint (in order).
    resumed_after: list[int] = field(default_factory=list)
    on_round: Callable[[RoundRecord], None] | None = None
    rounds: list[RoundRecord] = field(default_factory=list)
    final_arrays: ArrayRecord | None = None
    # Seconds between polls for replies (see send_and_receive); a deployment
    # polls a SuperLink over the network and sets a longer one.
    poll_s: float = 0.01
    # An attacker's latest published trigger (Attack.published), for the ASR.
    published: dict[str, torch.Tensor] | None = None


class RoundFailed(RuntimeError):
    """Too few clients answered a round (``simulation.min_replies``)."""


def send_and_receive(
    grid: Grid, messages: list[Message], timeout: float, poll_s: float
) -> list[Message]:
    """``Grid.send_and_receive`` with its poll interval chosen here.

    Flower's grids sleep between polls for replies (0.1 s in memory, 3 s against
    a SuperLink), and every round waits out one such sleep after its last reply
    arrived: 1.5 s over a 15-round simulation, 45 s over a deployed one. Only the
    last replies' wait delays the round, so the interval is ``poll_s`` times the
    replies still out, at most ten times ``poll_s``: a poll costs the driver CPU
    (the in-memory state is scanned under a lock) that the clients need.
    """
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending -= {m.metadata.reply_to_message_id for m in got}
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_s * min(len(pending), 10))
    return replies


def discover_nodes(
    grid: Grid, num_nodes: int, timeout: float, poll_s: float
) -> dict[int, int]:
    """Map partition id -> node id by asking every node once.

    Node ids are random per run; partition ids are what configs, attacks and
    results speak of. Waits (up to ``timeout``) for all nodes to register: the
    simulation engine starts the ServerApp before it registers them. Two nodes
    claiming one partition stop the run (:func:`partition_owners`).
    """
    deadline = time.monotonic() + timeout
    while len(node_ids := sorted(grid.get_node_ids())) < num_nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(node_ids)} of {num_nodes} nodes registered")
        time.sleep(poll_s)
    messages = [
        Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
        for n in node_ids
    ]
    return partition_owners(send_and_receive(grid, messages, timeout, poll_s))


def partition_owners(replies: list[Message]) -> dict[int, int]:
    """Partition id -> node id from the discovery replies; two nodes claiming
    one partition are an error (the later claim would take the other's slot)."""
    mapping: dict[int, int] = {}
    for reply in replies:
        if reply.has_error():
            raise RuntimeError(f"node discovery failed: {reply.error.reason}")
        pid = int(reply.content["info"][CLIENT_KEY])
        node = reply.metadata.src_node_id
        if pid in mapping:
            raise RuntimeError(
                f"node discovery: partition {pid} is claimed by nodes "
                f"{mapping[pid]} and {node}; give each SuperNode its own "
                f"--node-config partition-id"
            )
        mapping[pid] = node
    return mapping


def sample_clients(seed: int, server_round: int, num_clients: int, k: int) -> list[int]:
    """The partition ids taking part in a round, reproducible per (seed, round)."""
    if k >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng(derive_seed(seed, "sample", server_round))
    return sorted(int(c) for c in rng.choice(num_clients, size=k, replace=False))


# Error replies that say the client never got to run: Ray's actor was restarting
# (after another client's actor died) when the message reached it. Sent again.
TRANSIENT_ERRORS = ("ActorUnavailableError",)


def resend(msg: Message) -> Message:
    """A new message with ``msg``'s content for the same node."""
    return Message(
        msg.content,
        dst_node_id=msg.metadata.dst_node_id,
        message_type=msg.metadata.message_type,
    )


def collect_replies(
    grid: Grid,
    messages: list[Message],
    owner: dict[int, int],
    timeout: float,
    poll_s: float,
    retries: int = 1,
    fresh: Callable[[Message], Message] = resend,
) -> tuple[list[Message], dict[str, str]]:
    """Send, wait at most ``timeout``; return good replies and failures by client.

    A failure is an error reply (the ClientApp raised or its actor died) or no
    reply within the timeout. An error that only says the client's actor was
    unavailable (:data:`TRANSIENT_ERRORS`: it was restarting) is sent again, up
    to ``retries`` times within the same ``timeout``, as ``fresh(message)``.
    """
    deadline = time.monotonic() + timeout
    sent = {m.metadata.dst_node_id: m for m in messages}
    failures: dict[str, str] = {}
    good: list[Message] = []
    pending = list(messages)
    for attempt in range(retries + 1):
        left = max(0.0, deadline - time.monotonic())
        replies = send_and_receive(grid, pending, left, poll_s)
        again = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if not reply.has_error():
                good.append(reply)
                continue
            reason = reply.error.reason
            if attempt < retries and any(e in reason for e in TRANSIENT_ERRORS):
                again.append(sent[node])
            failures[str(owner[node])] = reason  # unless the resend succeeds
        answered = {r.metadata.src_node_id for r in replies}
        for msg in pending:
            if msg.metadata.dst_node_id not in answered:
                failures[str(owner[msg.metadata.dst_node_id])] = (
                    f"no reply in {timeout:g} s"
                )
        if not again or time.monotonic() >= deadline:
            break
        for msg in again:
            del failures[str(owner[msg.metadata.dst_node_id])]
        pending = [fresh(msg) for msg in again]
        sent.update({m.metadata.dst_node_id: m for m in pending})
    return sorted(good, key=lambda r: owner[r.metadata.src_node_id]), failures


def take_measurements(
    replies: list[Message], owner: dict[int, int], malicious: list[str]
) -> dict[str, torch.Tensor] | None:
    """Remove every reply's measurement record (an attacker's published trigger)
    before a defence sees the replies; return the first malicious client's.

    Like the attacker ids, it is used for metrics only: a real server would
    never receive it, so no defence may read it.
    """
    found = None
    for reply in replies:
        if MEASUREMENT_KEY not in reply.content:
            continue
        record = reply.content[MEASUREMENT_KEY]
        del reply.content[MEASUREMENT_KEY]
        if found is None and str(owner[reply.metadata.src_node_id]) in malicious:
            found = record.to_torch_state_dict()
    return found


def run_rounds(grid: Grid, plan: ServerPlan) -> None:
    """Run the plan's remaining rounds, one record each in ``plan.rounds``.

    Rounds already in ``plan.rounds`` (a resumed run) are skipped; after every
    round the server state is checkpointed when ``plan.checkpoint_path`` is set.
    """
    plan.defense.warm_up()
    nodes = discover_nodes(grid, plan.num_clients, plan.round_timeout_s, plan.poll_s)
    missing = sorted(set(range(plan.num_clients)) - set(nodes))
    if missing:
        raise RuntimeError(f"no node answered for partitions {missing[:10]}")
    owner = {node: pid for pid, node in nodes.items()}
    arrays = plan.initial_arrays
    for server_round in range(len(plan.rounds) + 1, plan.num_rounds + 1):
        arrays, record = run_round(grid, plan, nodes, owner, arrays, server_round)
        plan.rounds.append(record)
        if plan.checkpoint_path is not None:
            save_checkpoint(
                plan.checkpoint_path,
                {
                    "fingerprint": plan.fingerprint,
                    "round": server_round,
                    "arrays": arrays.to_torch_state_dict(),
                    "rounds": [r.to_dict() for r in plan.rounds],
                    "defense": plan.defense.state_dict(),
                    "resumed_after": list(plan.resumed_after),
                },
            )
        if plan.on_round is not None:
            plan.on_round(record)
    plan.final_arrays = arrays


def run_round(
    grid: Grid,
    plan: ServerPlan,
    nodes: dict[int, int],
    owner: dict[int, int],
    arrays: ArrayRecord,
    server_round: int,
) -> tuple[ArrayRecord, RoundRecord]:
    """One round: train the sampled clients, screen, judge, aggregate, evaluate."""
    start = time.perf_counter()
    chosen = sample_clients(
        plan.seed, server_round, plan.num_clients, plan.clients_per_round
    )
    content = RecordDict(
        {"arrays": arrays, "config": ConfigRecord({"server-round": server_round})}
    )
    messages = [
        Message(content, dst_node_id=nodes[c], message_type=MessageType.TRAIN)
        for c in chosen
    ]
    replies, failures = collect_replies(
        grid, messages, owner, plan.round_timeout_s, plan.poll_s
    )
    for cid, reason in failures.items():
        log.warning("round %d: client %s failed: %s", server_round, cid, reason)
    needed = max(1, math.ceil(plan.min_replies * len(chosen)))
    if len(replies) < needed:
        raise RoundFailed(
            f"round {server_round}: {len(replies)} of {len(chosen)} clients replied, "
            f"simulation.min_replies={plan.min_replies} needs {needed}"
        )
    train_seconds = time.perf_counter() - start
    published = take_measurements(replies, owner, plan.malicious)
    updates = [
        ClientUpdate(
            cid=str(owner[r.metadata.src_node_id]),
            arrays=r.content["arrays"],
            num_examples=float(r.content["metrics"][WEIGHT_KEY]),
            metrics={k: float(v) for k, v in r.content["metrics"].items()},
            reply=r,
            node_id=r.metadata.src_node_id,
        )
        for r in replies
    ]
    reference = {k: v.numpy() for k, v in arrays.items()}
    rejected = screen_updates(
        reference,
        {u.cid: u.arrays for u in updates},
        max_norm_ratio=plan.max_norm_ratio,
        max_norm=plan.max_norm,
    )
    for cid, reason in rejected.items():
        log.warning("round %d: rejected client %s: %s", server_round, cid, reason)
    kept = [u for u in updates if u.cid not in rejected]
    verdict, defense_seconds = None, 0.0
    if kept:
        rnd = RoundInput(server_round, arrays, kept)
        judged = time.perf_counter()
        verdict = plan.defense.verdict(rnd)
        new_arrays = apply_verdict(rnd, verdict, plan.defense.label)
        defense_seconds = time.perf_counter() - judged
        if new_arrays is not None:
            arrays = cast_like(new_arrays, {k: v.dtype for k, v in reference.items()})
    eval_start = time.perf_counter()
    if published:
        plan.published = published  # the newest trigger stays until replaced
    metrics = plan.evaluator(arrays.to_torch_state_dict(), plan.published)
    eval_seconds = time.perf_counter() - eval_start
    participants = [str(c) for c in chosen]
    scores = verdict.scores if verdict else None
    flagged = verdict.flagged if verdict else []
    shares = normalised(verdict.weights) if verdict else None
    detection = round_detection(
        {*flagged, *rejected},
        plan.malicious,
        participants,
        shares,
        attacks=scheduled(plan.attack_rounds, server_round),
        scored=scores is not None or bool(rejected),
    )
    record = RoundRecord(
        round=server_round,
        accuracy=metrics["accuracy"],
        loss=metrics["loss"],
        asr=metrics.get("asr"),
        malicious_confidence=scores,
        flagged=list(flagged) if scores is not None else None,
        rejected=rejected,
        **detection,
        weights=shares,
        participants=participants,
        failures=failures,
        clients={u.cid: u.metrics for u in updates},
        train_seconds=train_seconds,
        defense_seconds=defense_seconds,
        defense_details=plain(verdict.details) if verdict else {},
        eval_seconds=eval_seconds,
        seconds=time.perf_counter() - start,
    )
    return arrays, record


def apply_verdict(rnd: RoundInput, verdict: Verdict, label: str) -> ArrayRecord | None:
    """The new global model a verdict asks for: the defence's own ``model``, or
    FedAvg of the clients' (possibly replaced) arrays with the verdict's
    weights; None (keep the model) when every weight is 0."""
    ids = rnd.ids
    bad = {
        c: w
        for c, w in verdict.weights.items()
        if c not in ids or not math.isfinite(w) or w < 0
    }
    missing = [c for c in ids if c not in verdict.weights]
    if bad or missing:
        raise RuntimeError(
            f"defense {label} returned invalid weights: {bad or 'missing'} "
            f"{missing or ''} (every participant needs a finite weight >= 0)"
        )
    if verdict.model is not None:
        return verdict.model
    weights = [verdict.weights[u.cid] for u in rnd.updates]
    if not any(w > 0 for w in weights):
        return None
    states = [
        {k: a.numpy() for k, a in verdict.replaced.get(u.cid, u.arrays).items()}
        for u in rnd.updates
    ]
    return to_record(fedavg(states, weights))


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists, so a
    defence's details go into ``results.json`` as they are."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def make_server_app(plan: ServerPlan) -> ServerApp:
    """A ServerApp whose main runs :func:`run_rounds` on ``plan``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Any) -> None:
        run_rounds(grid, plan)

    return app
