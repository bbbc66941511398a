"""``defense=bulyan``: Bulyan (El Mhamdi, Guerraoui, Rouault, ICML 2018, "The
hidden vulnerability of distributed learning in Byzantium").

Krum, applied recursively as the paper's Algorithm (pick the Krum winner,
remove it, apply Krum to the rest), first keeps ``theta = n - 2f`` clients;
then, coordinate by coordinate, the ``beta = theta - 2f`` values closest to
their median are averaged. The selection is :func:`recursive_krum` (Flower's
``Bulyan`` default, ``select_multikrum``, scores everybody once and keeps the
``theta`` lowest: ``selection=multikrum``); the clients it leaves out are
flagged (confidence 1, kept ones 0). The weights are each client's share of the
values averaged (:func:`fedlight.aggregation.closest_shares`).

The second stage is Flower's ``Bulyan`` arithmetic, its own
``aggregate_n_closest_weights`` on the kept clients' arrays
(:func:`bulyan_aggregate`), called directly rather than through
``Bulyan.aggregate_train``: that reads each kept client with
``to_numpy_ndarrays(keep_input=False)``, which runs a full ``gc.collect()`` per
client, 4.4 s of a 20-client round against 0.15 s without it
(``benchmarks/bulyan_cost.py``). :func:`flower_bulyan` keeps the strategy's
whole path as the oracle; the tests compare the two bit for bit.

Bulyan needs ``n >= 4f + 3``; with fewer replies Flower's strategy skips the
round, so here ``f`` is lowered to the largest value the round allows (recorded
in the details) rather than leaving the model unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.serverapp.strategy import Bulyan as FlowerBulyan
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from flwr.serverapp.strategy.multikrum import compute_distances, select_multikrum

from fedlight.aggregation import closest_shares
from fedlight.defenses.base import (
    DEFENSES,
    Defense,
    RoundInput,
    Verdict,
    assumed_attackers,
    check_bound,
)
from fedlight.params import Params, RunFacts, param

log = logging.getLogger("fedlight")


@dataclass
class BulyanParams(Params):
    num_malicious_nodes: int | None = param(
        None,
        low=0,
        doc="f; null: server.max_attackers (lowered per round to fit n >= 4f + 3)",
    )

    selection: str = param(
        "recursive",
        choices=("recursive", "multikrum"),
        doc="Krum applied theta times, each winner removed (paper) | Flower's "
        "one-shot Multi-Krum",
    )

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        check_bound(self.num_malicious_nodes, facts, key, owner)


def recursive_krum_loop(
    contents: list[RecordDict], num_malicious: int, num_to_select: int
) -> list[RecordDict]:
    """The oracle of :func:`recursive_krum`: Flower's Krum (Multi-Krum with
    ``m = 1``) on the clients left, its winner removed, ``num_to_select`` times."""
    left, chosen = list(contents), []
    while left and len(chosen) < num_to_select:
        (winner,) = select_multikrum(left, num_malicious, 1)
        chosen.append(winner)
        left = [c for c in left if c is not winner]
    return chosen


def recursive_krum(
    contents: list[RecordDict], num_malicious: int, num_to_select: int
) -> list[RecordDict]:
    """Bulyan's selection (El Mhamdi et al., Algorithm 1): Krum's winner among
    the clients left, removed, ``num_to_select`` times. The distances between
    two clients do not depend on the others, so one matrix (Flower's
    ``compute_distances``) serves every step; Krum's score on the ``k`` left is
    the sum of the ``k - f - 2`` (at least 1) smallest distances to the others,
    as Flower's ``select_multikrum`` scores them."""
    if not contents:
        return []
    key = list(contents[0].array_records.keys())[0]
    distances = compute_distances([c[key] for c in contents])
    left, chosen = list(range(len(contents))), []
    while left and len(chosen) < num_to_select:
        sub = distances[np.ix_(left, left)]
        closest = max(1, len(left) - num_malicious - 2)
        scores = [np.sum(row[np.argsort(row)[1 : closest + 1]]) for row in sub]
        winner = left[int(np.argsort(scores)[0])]
        chosen.append(contents[winner])
        left.remove(winner)
    return chosen


SELECTIONS = {"recursive": recursive_krum, "multikrum": select_multikrum}


def bulyan_aggregate(kept: list[dict[str, np.ndarray]], beta: int) -> ArrayRecord:
    """Bulyan's second stage as Flower's ``Bulyan.aggregate_train`` computes it
    (coordinate-wise median of the kept clients, then the mean of the ``beta``
    values closest to it, by Flower's ``aggregate_n_closest_weights``), on
    arrays already in hand."""
    keys = list(kept[0])
    layers = [[state[k] for k in keys] for state in kept]
    median = [np.median(arr, axis=0) for arr in zip(*layers, strict=True)]
    out = aggregate_n_closest_weights(median, layers, beta)
    return ArrayRecord(
        dict(zip(keys, (Array(np.asarray(a)) for a in out), strict=True))
    )


def flower_bulyan(
    replies: list, num_malicious: int, selection: str = "recursive"
) -> tuple[ArrayRecord | None, list[int]]:
    """The oracle of :func:`bulyan_aggregate` and the selection: Flower's
    ``Bulyan`` strategy on ``replies`` (it empties their arrays), and the
    positions of the replies it kept."""
    selected: list[RecordDict] = []

    def record_selection(
        contents: list[RecordDict], f: int, num_to_select: int
    ) -> list[RecordDict]:
        selected.extend(SELECTIONS[selection](contents, f, num_to_select))
        return selected

    position = {id(r.content): i for i, r in enumerate(replies)}
    rule = FlowerBulyan(
        num_malicious_nodes=num_malicious, selection_rule=record_selection
    )
    model, _ = rule.aggregate_train(1, replies)
    return model, [position[id(c)] for c in selected]


def feasible_num_malicious(num_malicious: int, num_replies: int) -> int:
    """The largest f <= ``num_malicious`` with ``num_replies >= 4f + 3``."""
    return max(0, min(num_malicious, (num_replies - 3) // 4))


@DEFENSES.register(
    "bulyan", params=BulyanParams, order=50, paper="El Mhamdi et al., ICML 2018"
)
class Bulyan(Defense):
    """Multi-Krum selection, then a coordinate-wise trimmed mean around the median."""

    params: BulyanParams

    def verdict(self, rnd: RoundInput) -> Verdict:
        wanted = assumed_attackers(self.params.num_malicious_nodes, self.context)
        n = len(rnd.updates)
        f = feasible_num_malicious(wanted, n)
        if f < wanted:
            log.warning(
                "round %d: Bulyan needs 4f + 3 replies, has %d: using f=%d, not %d",
                rnd.server_round,
                n,
                f,
                wanted,
            )
        contents = [u.reply.content for u in rnd.updates]
        cid_of = {id(c): u.cid for c, u in zip(contents, rnd.updates, strict=True)}
        select = SELECTIONS[self.params.selection]
        beta = n - 4 * f
        # In the selection's order, as Flower aggregates (it breaks ties).
        chosen = [cid_of[id(c)] for c in select(contents, f, n - 2 * f)]
        states = {u.cid: u.numpy for u in rnd.updates}
        model = bulyan_aggregate([states[c] for c in chosen], beta)
        kept = [cid for cid in rnd.ids if cid in chosen]
        shares = dict.fromkeys(rnd.ids, 0.0)
        if kept:
            for cid, s in zip(
                kept, closest_shares([states[c] for c in kept], beta), strict=True
            ):
                shares[cid] = float(s)
        return Verdict(
            weights=shares,
            flagged=[cid for cid in rnd.ids if cid not in kept],
            scores={cid: 0.0 if cid in kept else 1.0 for cid in rnd.ids},
            details={"num_malicious_nodes": f, "selected": kept},
            model=model,
        )
