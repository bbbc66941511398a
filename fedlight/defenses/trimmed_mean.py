"""``defense=trimmed_mean``: the coordinate-wise trimmed mean (Yin et al., ICML
2018).

For every weight, the ``beta`` fraction of largest and of smallest client values
is dropped and the rest averaged. Flower's ``FedTrimmedAvg`` aggregates in place
of ``inner``. With ``beta`` null the cut is the assumed number of attackers f
per tail (Yin et al. need ``beta >= f / n``), at most what leaves one value.
Like the median it ignores example counts and rejects no whole client: no
scores, no detection metrics.
"""

from __future__ import annotations

from flwr.app import Message
from flwr.serverapp.strategy import FedTrimmedAvg, Strategy

from fedlight.defenses.base import (
    DefenseContext,
    DefenseReport,
    OwnRuleDefense,
    resolve_num_malicious,
)


def beta_for(num_malicious: int, num_replies: int) -> float:
    """The fraction Flower's ``trim_mean`` turns into exactly ``num_malicious``
    values cut per tail (``int(beta * n)``), capped below 1/2."""
    cut = max(0, min(num_malicious, (num_replies - 1) // 2))
    return (cut + 0.5) / num_replies if cut else 0.0


class TrimmedMean(OwnRuleDefense):
    """Coordinate-wise trimmed mean (Flower's ``FedTrimmedAvg``).

    ``beta`` is the fraction cut from each tail, in [0, 0.5); null cuts
    ``num_malicious_nodes`` values per tail (null: the attack's attackers).
    """

    def __init__(
        self,
        inner: Strategy,
        context: DefenseContext,
        beta: float | None = None,
        num_malicious_nodes: int | None = None,
    ) -> None:
        super().__init__(inner, context)
        self.beta = beta
        self.num_malicious_nodes = resolve_num_malicious(num_malicious_nodes, context)
        self.rule = FedTrimmedAvg(beta=0.0 if beta is None else beta)

    def screen(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], DefenseReport]:
        beta = self.beta
        if beta is None:
            beta = beta_for(self.num_malicious_nodes, len(replies))
        self.rule.beta = beta
        cut = int(beta * len(replies))
        return replies, DefenseReport(details={"beta": beta, "cut_per_tail": cut})
