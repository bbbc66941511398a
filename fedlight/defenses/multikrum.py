"""``defense=multikrum``: Multi-Krum (Blanchard et al., NeurIPS 2017, "Machine
learning with adversaries: Byzantine tolerant gradient descent").

Each client gets a score, the sum of squared distances to its ``n - f - 2``
nearest neighbours; the ``m`` lowest-scoring clients are kept and the inner
strategy (FedAvg) averages them, which is exactly Flower's ``MultiKrum``. The
selection is Flower's own :func:`flwr.serverapp.strategy.multikrum.select_multikrum`;
this wrapper only maps its choice back to clients, so the unselected ones are
reported as flagged (detection metrics) with confidence 1, the kept ones 0.
Distances between weights equal distances between updates (the same global
model is subtracted from both), so weights are compared as Flower does.
"""

from __future__ import annotations

from flwr.app import Message
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.multikrum import select_multikrum

from fedlight.defenses.base import (
    DefenseContext,
    DefenseReport,
    DefenseStrategy,
    client_id,
    resolve_num_malicious,
)


def krum_selection(
    replies: list[Message], num_malicious: int, num_to_select: int
) -> list[Message]:
    """The replies Flower's Multi-Krum keeps, in their original order."""
    contents = select_multikrum(
        [r.content for r in replies],
        num_malicious_nodes=num_malicious,
        num_nodes_to_select=num_to_select,
    )
    chosen = {id(c) for c in contents}
    return [r for r in replies if id(r.content) in chosen]


class MultiKrum(DefenseStrategy):
    """Keep the ``num_nodes_to_select`` most central clients; ``inner`` averages.

    ``num_malicious_nodes`` (f) null: the attack's number of malicious clients
    (``DefenseContext.num_attackers``). ``num_nodes_to_select`` (m) null:
    ``n - f``, Blanchard et al.'s choice, at least 1.
    """

    label = "Multi-Krum"

    def __init__(
        self,
        inner: Strategy,
        context: DefenseContext,
        num_malicious_nodes: int | None = None,
        num_nodes_to_select: int | None = None,
    ) -> None:
        super().__init__(inner, context)
        self.num_malicious_nodes = resolve_num_malicious(num_malicious_nodes, context)
        self.num_nodes_to_select = num_nodes_to_select

    def to_select(self, num_replies: int) -> int:
        """m for a round with ``num_replies`` replies."""
        m = self.num_nodes_to_select
        if m is None:
            m = num_replies - self.num_malicious_nodes
        return min(max(1, m), num_replies)

    def screen(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], DefenseReport]:
        ids = [client_id(r) for r in replies]
        m = self.to_select(len(replies))
        kept = krum_selection(replies, self.num_malicious_nodes, m)
        kept_ids = {client_id(r) for r in kept}
        flagged = [cid for cid in ids if cid not in kept_ids]
        report = DefenseReport(
            confidence={cid: 0.0 if cid in kept_ids else 1.0 for cid in ids},
            flagged=flagged,
            weights={cid: 1.0 if cid in kept_ids else 0.0 for cid in ids},
            details={
                "rule": self.label,
                "num_malicious_nodes": self.num_malicious_nodes,
                "num_nodes_to_select": m,
                "selected": sorted(kept_ids, key=int),
            },
        )
        return kept, report
