"""``defense=fedavg_cap``: FedAvg with every reported example count capped at a
multiple of the round's median count: the count cap of ``feddefender_robust``
without its detector, as a baseline.

A client's FedAvg weight is the example count it *reports*; the paper's attacker
reports 20x its true count and so owns most of the average. Capping the count at
``cap`` x the median bounds any client's share at roughly ``cap / n`` without
looking at the models at all. Our ablation of the robust FedDefender found that
the cap alone does much of the work on non-IID splits, so the tables show it on
its own. Nobody is flagged: no scores, no detection metrics. It is not a defence
from the literature; a server that trusts counts only up to a bound is the
weighting rule of FedAvg (McMahan et al., AISTATS 2017) with a sanity limit.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from fedlight.defenses.base import DEFENSES, Defense, RoundInput, Verdict
from fedlight.params import Params, param


@dataclass
class FedAvgCapParams(Params):
    cap_examples: float = param(
        2.0, low=1.0, doc="cap reported counts at this x the round's median count"
    )


def cap_counts(counts: dict[str, float], cap: float | None) -> dict[str, float]:
    """Reported example counts capped at ``cap`` x the median (None: unchanged)."""
    if cap is None or not counts:
        return dict(counts)
    limit = cap * statistics.median(counts.values())
    return {cid: min(n, limit) for cid, n in counts.items()}


@DEFENSES.register(
    "fedavg_cap",
    params=FedAvgCapParams,
    order=5,
    paper="McMahan et al., AISTATS 2017 (FedAvg) with fedlight's count cap",
)
class FedAvgCap(Defense):
    """FedAvg with reported counts capped at a multiple of the median."""

    params: FedAvgCapParams

    def verdict(self, rnd: RoundInput) -> Verdict:
        counts = rnd.counts()
        capped = cap_counts(counts, self.params.cap_examples)
        return Verdict(
            weights=capped,
            details={
                "capped": sorted(
                    (cid for cid in counts if capped[cid] < counts[cid]), key=int
                )
            },
        )
