"""``defense=multikrum``: Multi-Krum (Blanchard et al., NeurIPS 2017, "Machine
learning with adversaries: Byzantine tolerant gradient descent").

Each client gets a score, the sum of squared distances to its ``n - f - 2``
nearest neighbours; the ``m`` lowest-scoring clients are kept and averaged
equally, as the paper averages the selected gradients (and BackFed and FLPoison
do), so a boosted count buys an attacker that slips into the selection nothing;
``weighted=true`` averages them by their reported counts, which is exactly
Flower's ``MultiKrum``. The selection is Flower's own
:func:`flwr.serverapp.strategy.multikrum.select_multikrum`; the unselected
clients are flagged (confidence 1, kept ones 0). Distances between weights equal
distances between updates (the same global model is subtracted from both), so
weights are compared as Flower does.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.serverapp.strategy.multikrum import select_multikrum

from fedlight.defenses.base import (
    DEFENSES,
    ClientUpdate,
    Defense,
    RoundInput,
    Verdict,
    assumed_attackers,
    check_bound,
    selection_weights,
)
from fedlight.params import Params, RunFacts, fail, param

PAPER = "Blanchard et al., NeurIPS 2017"


@dataclass
class MultiKrumParams(Params):
    num_malicious_nodes: int | None = param(
        None, low=0, doc="f, the attackers assumed; null: server.max_attackers"
    )
    num_nodes_to_select: int | None = param(
        None, low=1, doc="m, the clients kept; null: n - f"
    )
    weighted: bool = param(
        False,
        doc="average the kept clients by reported counts (Flower's MultiKrum; "
        "paper: equally)",
    )

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        check_bound(self.num_malicious_nodes, facts, key, owner)
        m = self.num_nodes_to_select
        if m is not None and m > facts.clients_per_round:
            fail(
                f"{key}.num_nodes_to_select",
                m,
                f"an integer in [1, {facts.clients_per_round}]",
                owner,
            )


def krum_selection(
    updates: list[ClientUpdate], num_malicious: int, num_to_select: int
) -> list[str]:
    """The clients Flower's Multi-Krum keeps, in their original order."""
    contents = [u.reply.content for u in updates]
    chosen = {id(c) for c in select_multikrum(contents, num_malicious, num_to_select)}
    return [u.cid for u, c in zip(updates, contents, strict=True) if id(c) in chosen]


@DEFENSES.register("multikrum", params=MultiKrumParams, order=40, paper=PAPER)
class MultiKrum(Defense):
    """Keep the ``m`` most central clients and average them."""

    params: MultiKrumParams

    @property
    def num_malicious(self) -> int:
        return assumed_attackers(self.params.num_malicious_nodes, self.context)

    def to_select(self, num_replies: int) -> int:
        """m for a round with ``num_replies`` replies: ``n - f`` unless set."""
        m = self.params.num_nodes_to_select
        if m is None:
            m = num_replies - self.num_malicious
        return min(max(1, m), num_replies)

    def verdict(self, rnd: RoundInput) -> Verdict:
        m = self.to_select(len(rnd.updates))
        kept = krum_selection(rnd.updates, self.num_malicious, m)
        counts = rnd.counts()
        if not self.params.weighted:
            counts = dict.fromkeys(counts, 1.0)
        return Verdict(
            weights=selection_weights(counts, set(kept)),
            flagged=[cid for cid in rnd.ids if cid not in kept],
            scores={cid: 0.0 if cid in kept else 1.0 for cid in rnd.ids},
            details={
                "num_malicious_nodes": self.num_malicious,
                "num_nodes_to_select": m,
                "selected": kept,
            },
        )
