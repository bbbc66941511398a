"""``defense=bulyan``: Bulyan (El Mhamdi, Guerraoui, Rouault, ICML 2018, "The
hidden vulnerability of distributed learning in Byzantium").

Multi-Krum first keeps ``theta = n - 2f`` clients; then, coordinate by
coordinate, the ``beta = theta - 2f`` values closest to their median are
averaged. Bulyan is itself an aggregation rule, so this defence aggregates with
Flower's ``Bulyan`` strategy instead of calling ``inner`` (which only configures
rounds). Flower's Bulyan takes its selection rule as a parameter; the wrapper
passes Flower's ``select_multikrum`` wrapped to record the clients it kept, and
reports the others as flagged (confidence 1, kept ones 0).

Bulyan needs ``n >= 4f + 3``; with fewer replies Flower's strategy skips the
round, so here ``f`` is lowered to the largest value the round allows (recorded
in the report's details) rather than leaving the model unchanged.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Bulyan as FlowerBulyan
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.multikrum import select_multikrum

from fedlight.defenses.base import (
    DefenseContext,
    DefenseReport,
    OwnRuleDefense,
    client_id,
    resolve_num_malicious,
)

log = logging.getLogger("fedlight")


def feasible_num_malicious(num_malicious: int, num_replies: int) -> int:
    """The largest f <= ``num_malicious`` with ``num_replies >= 4f + 3``."""
    return max(0, min(num_malicious, (num_replies - 3) // 4))


class Bulyan(OwnRuleDefense):
    """Multi-Krum selection, then a coordinate-wise trimmed mean around the median.

    ``num_malicious_nodes`` (f) null: the attack's number of malicious clients.
    """

    def __init__(
        self,
        inner: Strategy,
        context: DefenseContext,
        num_malicious_nodes: int | None = None,
    ) -> None:
        super().__init__(inner, context)
        self.num_malicious_nodes = resolve_num_malicious(num_malicious_nodes, context)
        self._selected: list[RecordDict] = []
        self.rule = FlowerBulyan(
            num_malicious_nodes=self.num_malicious_nodes,
            selection_rule=self._record_selection,
        )

    def _record_selection(
        self, contents: list[RecordDict], num_malicious: int, num_to_select: int
    ) -> list[RecordDict]:
        selected = select_multikrum(contents, num_malicious, num_to_select)
        self._selected = selected
        return selected

    def screen(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], DefenseReport]:
        f = feasible_num_malicious(self.num_malicious_nodes, len(replies))
        if f < self.num_malicious_nodes:
            log.warning(
                "round %d: Bulyan needs 4f + 3 replies, has %d: using f=%d, not %d",
                server_round,
                len(replies),
                f,
                self.num_malicious_nodes,
            )
        self.rule.num_malicious_nodes = f
        return replies, DefenseReport(details={"num_malicious_nodes": f})

    def aggregate(
        self, server_round: int, kept: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        ids = [client_id(r) for r in kept]
        contents = [r.content for r in kept]
        self._selected = []
        result = super().aggregate(server_round, kept)
        chosen = {id(c) for c in self._selected}
        kept_ids = [
            cid for cid, c in zip(ids, contents, strict=True) if id(c) in chosen
        ]
        report = self.last_report
        report.flagged = [cid for cid in ids if cid not in kept_ids]
        report.confidence = {cid: 0.0 if cid in kept_ids else 1.0 for cid in ids}
        report.weights = {cid: 1.0 if cid in kept_ids else 0.0 for cid in ids}
        report.details["selected"] = kept_ids
        return result
